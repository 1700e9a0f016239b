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
    """The evaluation without the table: the Student samples and scores every trajectory itself."""

    def __call__(self, student, teacher, log_Z, final):
        exact, self.exact = self.exact, None
        try:
            row = super().__call__(student, teacher, log_Z, final=False)
        finally:
            self.exact = exact
        if exact is not None and (final or (self.evaluations - 1) % self.exact_every == 0):
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
    times: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, kind in (("network", NetworkPathEvaluator), ("table", StringEvaluator)):
            ev = kind(env, cfg)
            torch.manual_seed(1)
            t0 = time.perf_counter()
            row = ev(student, None, log_z, final=True)
            dt = time.perf_counter() - t0
            times[name] = min(times.get(name, float("inf")), dt)
            keys = [*StringEvaluator.keys[:8], "l1", "mode_mass"]
            cells = " | ".join("–" if row[k] is None else f"{row[k]:.4g}" for k in keys)
            print(f"| {name} | {dt:.1f} | {cells} |", flush=True)
    print(f"\nspeed-up (best of {args.repeats}): {times['network'] / times['table']:.2f}x")


if __name__ == "__main__":
    main()
