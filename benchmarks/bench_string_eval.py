"""Seconds per evaluation on an enumerable string task (QM9, TFBind8): the network path against the table path.

The StringEvaluator tabulates the Student's P_F on every enumerated state in one pass and looks the on-policy
samples, their weights and the target's weights up in that table. This script times one evaluation both ways
on the same policy (the SSR at the paper's width, trained for ``--rounds`` rounds so that it is not uniform),
with the same seed, and prints the seconds and every metric side by side.

    python benchmarks/bench_string_eval.py [--task qm9] [--rounds 20] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from adaptive_teacher.biochem import make_string_task
from adaptive_teacher.config import resolve_config
from adaptive_teacher.metrics.strings import StringEvaluator
from adaptive_teacher.trainer import Trainer


class NetworkPathEvaluator(StringEvaluator):
    """The evaluation without the table: the Student samples and scores every trajectory itself (the exact DP,
    when due, tabulates P_F on its own)."""

    def __call__(self, student, teacher, log_Z, final):
        due = final or self.evaluations % self.exact_every == 0
        exact, self.exact = self.exact, None
        try:
            row = super().__call__(student, teacher, log_Z, final=False)
        finally:
            self.exact = exact
        if exact is not None and due:
            p = exact.distribution(student)
            row["l1"] = float((p - exact.target).abs().sum())
            row["mode_mass"] = float(p[self._mode_of_terminal].sum())
        return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="qm9")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    env = make_string_task(args.task)
    cfg = resolve_config("tb", "strings", env.task_spec(), reward_calls=32 * args.rounds, progress=False, n_evals=1)
    trainer = Trainer(env, cfg)
    for _ in range(2 * args.rounds):
        trainer.train_one_step()
    student, log_z = trainer.student, trainer.log_Z_estimate()
    print(f"{args.task}, SSR width {cfg.hidden}, {cfg.eval_samples} samples, after {args.rounds} rounds of TB")
    print("| path | s / evaluation | " + " | ".join(StringEvaluator.keys[:8]) + " | l1 | mode_mass |")
    print("|---|---:|" + "---:|" * 10)
    times: dict[tuple[str, bool], float] = {}
    keys = [*StringEvaluator.keys[:8], "l1", "mode_mass"]
    for _ in range(args.repeats):
        for dp in (False, True):
            for name, kind in (("network", NetworkPathEvaluator), ("table", StringEvaluator)):
                ev = kind(env, cfg)
                ev.exact_every, ev.evaluations = (1, 0) if dp else (10**9, 1)  # the exact DP due, or not
                torch.manual_seed(1)
                t0 = time.perf_counter()
                row = ev(student, None, log_z, final=False)
                dt = time.perf_counter() - t0
                times[name, dp] = min(times.get((name, dp), float("inf")), dt)
                cells = " | ".join("–" if row[k] is None else f"{row[k]:.4g}" for k in keys)
                print(f"| {name}{' + exact DP' if dp else ''} | {dt:.1f} | {cells} |", flush=True)
    for dp in (False, True):
        ratio = times["network", dp] / times["table", dp]
        print(f"speed-up {'with' if dp else 'without'} the exact DP (best of {args.repeats}): {ratio:.2f}x")


if __name__ == "__main__":
    main()
