"""Seconds per evaluation on a string task: this release's evaluator against the network passes of earlier ones.

On an enumerable task (QM9, TFBind8) the StringEvaluator tabulates the Student's P_F on every state in one
pass and looks the on-policy samples, their weights and the target's weights up in that table; elsewhere (sEH,
RNA) it keeps the log-probabilities of the sampling passes instead of scoring the samples again. This script
times one evaluation both ways on the same policy (the SSR at the paper's width, trained for ``--rounds``
rounds so that it is not uniform), with the same seed, and prints the seconds and every metric side by side.

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
    """The evaluation of earlier releases: the Student samples, then scores the samples again in a second pass,
    and scores the target (the exact DP, when due, tabulates P_F on its own)."""

    def __call__(self, student, teacher, log_Z, final):
        due = final or self.evaluations % self.exact_every == 0
        exact, self.exact = self.exact, None
        self.env.rollout_with_log_probs = None  # log_z_bounds falls back to sampling, then rescoring
        try:
            row = super().__call__(student, teacher, log_Z, final=False)
        finally:
            self.exact = exact
            del self.env.rollout_with_log_probs
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
    dps = (False, True) if env.enumerate_states() is not None else (False,)
    for _ in range(args.repeats):
        for dp in dps:
            for name, kind in (("earlier (network passes)", NetworkPathEvaluator), ("this release", StringEvaluator)):
                ev = kind(env, cfg)
                ev.exact_every, ev.evaluations = (1, 0) if dp else (10**9, 1)  # the exact DP due, or not
                torch.manual_seed(1)
                t0 = time.perf_counter()
                row = ev(student, None, log_z, final=False)
                dt = time.perf_counter() - t0
                times[name, dp] = min(times.get((name, dp), float("inf")), dt)
                cells = " | ".join("–" if row[k] is None else f"{row[k]:.4g}" for k in keys)
                print(f"| {name}{' + exact DP' if dp else ''} | {dt:.1f} | {cells} |", flush=True)
    for dp in dps:
        ratio = times["earlier (network passes)", dp] / times["this release", dp]
        print(f"speed-up {'with' if dp else 'without'} the exact DP (best of {args.repeats}): {ratio:.2f}x")


if __name__ == "__main__":
    main()
