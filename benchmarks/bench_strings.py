"""Seconds per round on the biochemical string tasks, where the time of a round goes, and the FLOP floor.

A round of Kim et al.'s discovery protocol is one online batch of 32 (sampled and rewarded) and one replayed
batch of 32, both trained on by the Student (and the Teacher). This script trains each (task, method) for
``--rounds`` rounds after a warm-up, at the paper's SSR width, and reports per round: wall seconds, the
share spent sampling (rollouts), in the reward oracle, and in the training passes (log-probabilities,
backward, optimiser), the multiply-adds the SSR networks did (counted from the rows that went through each
layer; a backward pass counted as 2x its forward), and the achieved GFLOP/s. It compares with the anchor the
issue measured for the official code on this machine (36 s per round for QM9 TB, 24 s for RNA TB).

    python benchmarks/bench_strings.py [--rounds 10] [--tasks qm9,seh,tfbind8,rna1] [--methods tb,teacher]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch import nn

from adaptive_teacher.biochem import make_string_task
from adaptive_teacher.config import resolve_config
from adaptive_teacher.ssr import SSRPolicy
from adaptive_teacher.trainer import Trainer

OFFICIAL_S_PER_ROUND = {("qm9", "tb"): 36.0, ("rna1", "tb"): 24.0}  # the measurements, this machine


class Clock:
    """Accumulated wall time of wrapped functions, by label (nested calls count in the outer label only)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._depth = 0

    def wrap(self, obj, name: str, label: str) -> None:
        original = getattr(obj, name)

        def timed(*args, **kwargs):
            if self._depth:
                return original(*args, **kwargs)
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t0
                self._depth -= 1

        setattr(obj, name, timed)


class MacCounter:
    """Multiply-adds of every nn.Linear of the given models (rows × in × out), forward; ×3 with grad."""

    def __init__(self, models: list[nn.Module]):
        self.macs = 0.0
        for model in models:
            for module in model.modules():
                if isinstance(module, nn.Linear):
                    module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Linear, inputs, output) -> None:
        rows = inputs[0].numel() // inputs[0].shape[-1]
        self.macs += rows * module.in_features * module.out_features * (3 if torch.is_grad_enabled() else 1)


def _projection_macs(models: list[SSRPolicy], counter: MacCounter) -> None:
    """SSRPolicy.project multiplies by slices of the scorer's first layer outside its forward: count those."""
    for model in models:
        original = model.project

        def project(e, original=original, model=model):
            counter.macs += (
                2 * e.shape[0] * model.embed_dim * model.scorer[0].out_features * (3 if torch.is_grad_enabled() else 1)
            )
            return original(e)

        model.project = project


def bench(task: str, method: str, rounds: int, warmup: int) -> dict:
    env = make_string_task(task)
    cfg = resolve_config(method, "strings", env.task_spec(), reward_calls=10**9, progress=False, n_evals=1)
    trainer = Trainer(env, cfg)
    models = [m for m in (trainer.student, trainer.teacher) if m is not None]
    steps_per_round = 2
    for _ in range(warmup * steps_per_round):
        trainer.train_one_step()
    clock = Clock()
    clock.wrap(env, "rollout", "sampling")
    clock.wrap(env, "backward_rollout", "sampling")
    clock.wrap(env, "log_reward", "oracle")
    clock.wrap(trainer, "train_step", "training")
    counter = MacCounter(models)
    _projection_macs([m for m in models if isinstance(m, SSRPolicy)], counter)
    t0 = time.perf_counter()
    for _ in range(rounds * steps_per_round):
        trainer.train_one_step()
    wall = (time.perf_counter() - t0) / rounds
    per = {k: v / rounds for k, v in clock.seconds.items()}
    macs = counter.macs / rounds
    return {
        "task": task,
        "method": method,
        "hidden": cfg.hidden,
        "s_per_round": wall,
        "sampling": per.get("sampling", 0.0),
        "oracle": per.get("oracle", 0.0),
        "training": per.get("training", 0.0),
        "gmacs": macs / 1e9,
        "gflops": 2 * macs / 1e9 / wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--tasks", default="qm9,seh,tfbind8,rna1")
    p.add_argument("--methods", default="tb,teacher")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{args.rounds} rounds after {args.warmup} warm-up, {args.threads} thread(s)\n")
    print(
        "| task | method | SSR width | s / round | sampling | oracle | training passes | GMAC / round | GFLOP/s "
        "| official s / round | speed-up |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for task in args.tasks.split(","):
        for method in args.methods.split(","):
            r = bench(task, method, args.rounds, args.warmup)
            official = OFFICIAL_S_PER_ROUND.get((task, method))
            ratio = f"{official / r['s_per_round']:.0f}x" if official else ""
            print(
                f"| {task} | {method} | {r['hidden']} | {r['s_per_round']:.3f} | {r['sampling']:.3f} | "
                f"{r['oracle']:.3f} | {r['training']:.3f} | {r['gmacs']:.2f} | {r['gflops']:.1f} | "
                f"{official or ''} | {ratio} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
