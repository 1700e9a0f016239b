"""Behaviour check for refactors: every method preset, seeded, on d=2,H=16 and a short 25GMM run.

Writes the final metrics of each run (full float precision) as JSON, or compares them with a stored file:

    python benchmarks/behaviour_check.py --write benchmarks/behaviour_reference.json   # before a refactor
    python benchmarks/behaviour_check.py --check benchmarks/behaviour_reference.json   # after: must be identical

A behaviour-preserving change reproduces every number bit for bit (same seeds, same random draws, same
floating-point operations); any difference is printed with the method and metric. Takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from adaptive_teacher.config import methods_for, resolve_config
from adaptive_teacher.densities import GMM25
from adaptive_teacher.envs import DeceptiveGrid, DiffusionEnv
from adaptive_teacher.trainer import Trainer

GRID = {"reward_calls": 960, "batch_size": 16, "hidden": 32, "n_evals": 3, "progress": False}
DIFFUSION = {
    "iterations": 12,
    "batch_size": 32,
    "hidden": 16,
    "n_evals": 2,
    "eval_samples": 128,
    "final_eval_samples": 256,
    "ls_every": 4,
    "ls_iterations": 6,
    "progress": False,
}
DROP = ("wall_s",)  # timing differs between runs by nature


def _clean(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in DROP}


def run_all() -> dict[str, list[dict]]:
    torch.set_num_threads(1)
    results: dict[str, list[dict]] = {}
    for method in methods_for("discrete"):
        trainer = Trainer(DeceptiveGrid(2, 16), resolve_config(method, seed=1, **GRID))
        trainer.train()
        results[f"grid/{method}"] = [_clean(r) for r in trainer.history]
        print(f"grid/{method}: modes {trainer.history[-1]['modes_found']}, l1 {trainer.history[-1]['l1']}")
    for method in methods_for("diffusion"):
        trainer = Trainer(DiffusionEnv(GMM25(), n_steps=10), resolve_config(method, "diffusion", seed=1, **DIFFUSION))
        trainer.train()
        results[f"gmm25/{method}"] = [_clean(r) for r in trainer.history]
        print(f"gmm25/{method}: elbo {trainer.history[-1]['elbo']}, eubo {trainer.history[-1]['eubo']}")
    return results


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def compare(reference: dict, current: dict) -> list[str]:
    problems = []
    for run in sorted(set(reference) | set(current)):
        if run not in current or run not in reference:
            problems.append(f"{run}: only in {'the reference' if run in reference else 'this run'}")
            continue
        ref_rows, cur_rows = reference[run], current[run]
        if len(ref_rows) != len(cur_rows):
            problems.append(f"{run}: {len(ref_rows)} evaluations in the reference, {len(cur_rows)} now")
            continue
        for i, (r, c) in enumerate(zip(ref_rows, cur_rows, strict=True)):
            for key in sorted(set(r) | set(c)):
                if not _same(r.get(key), c.get(key)):
                    problems.append(f"{run} evaluation {i} {key}: {r.get(key)!r} → {c.get(key)!r}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, help="write the metrics of every preset to this JSON file")
    group.add_argument("--check", type=Path, help="compare with this JSON file; exit 1 on any difference")
    args = parser.parse_args()
    current = json.loads(json.dumps(run_all()))  # the same JSON round trip as the stored file
    if args.write:
        args.write.write_text(json.dumps(current, indent=1) + "\n")
        print(f"wrote {args.write} ({len(current)} runs)")
        return 0
    problems = compare(json.loads(args.check.read_text()), current)
    for p in problems:
        print(p)
    print(f"{len(current)} runs: {'identical' if not problems else f'{len(problems)} differences'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
