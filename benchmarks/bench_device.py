#!/usr/bin/env python
"""Training speed of every task family on one device (--device cpu|cuda), and an end-to-end check there.

    .venv/bin/python benchmarks/bench_device.py --device cuda --out runs/bench-cuda.md   # on a GPU machine
    .venv/bin/python benchmarks/bench_device.py --device cpu --quick                     # CPU smoke run, ~2 min

Timed (``Trainer.train_one_step`` exactly as ``Trainer.train`` drives it, evaluation excluded, the budget set
far away so no lr milestone acts), after a warm-up, in blocks of whole schedule cycles; the median block gives
the seconds per step:

* the deceptive grid, d=4 with H=16 and H=32, batch 16 and 256, tb and teacher (the MLP 2×256);
* Manywell-32, batch 300, T = 100, tb and teacher (the PIS network, hidden 64);
* the biochemical strings, tfbind8 (SSR width 128) and qm9 (1024: the paper's widths), tb and teacher; one
  round of the discovery protocol is two steps (an online batch of 32 and a replayed one).

Multiply-adds are counted during the timed blocks with forward hooks on every nn.Linear (rows × in × out, ×3
with gradients: a backward pass costs twice its forward) plus the SSR policy's explicit projections (the
products of its folded sampling path are not counted, so the strings' counts are a slight undercount);
GFLOP/s = 2 × multiply-adds / time. The hooks cost a few microseconds per layer call (under 2 % of a step).
``--matmul`` first times plain float32 matrix products of the shapes these networks use, for the rate the
hardware gives them.

The end-to-end check then trains one small run of each family on the device into a run directory (the
evaluations, exact DP, bounds and checkpoints included), continues it on the CPU from its checkpoint with a
larger budget (a checkpoint written on one device resumes on another), and checks that every metric is
finite. A failure is a row marked FAILED and exit status 1.

The table (markdown) goes to stdout and, with ``--out``, to that file. On CUDA, times are taken after
``torch.cuda.synchronize()`` and the peak memory column is ``torch.cuda.max_memory_allocated``; float32
matrix products use torch's default precision (no TF32).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptive_teacher.config import resolve_config
from adaptive_teacher.device import resolve_device
from adaptive_teacher.errors import AdaptiveTeacherError
from adaptive_teacher.ssr import SSRPolicy
from adaptive_teacher.tasks import make_task, task_family, task_spec
from adaptive_teacher.trainer import Trainer

FAR = 10**9  # a budget no benchmark reaches: the lr milestones and the ε decay never act


@dataclass(frozen=True)
class Case:
    """One timed configuration: the task spec, its label, the method and the config options."""

    task: dict[str, Any]
    label: str
    method: str
    options: dict[str, Any]
    unit: str  # what the per-unit column reports: "traj" (ms per trajectory), "iter" (s), "round" (s)


def cases() -> list[Case]:
    out = []
    for height in (16, 32):
        for batch in (16, 256):
            for method in ("tb", "teacher"):
                task = {"name": "deceptive-grid", "dim": 4, "height": height}
                opts = {"batch_size": batch, "reward_calls": FAR}
                out.append(Case(task, f"d=4, H={height}, batch {batch}", method, opts, "traj"))
    for method in ("tb", "teacher"):
        task = {"name": "manywell", "dim": 32, "n_steps": 100}
        out.append(Case(task, "Manywell-32, batch 300, T=100", method, {"iterations": FAR}, "iter"))
    for name in ("tfbind8", "qm9"):
        for method in ("tb", "teacher"):
            out.append(Case({"name": name}, f"{name}, paper's SSR width", method, {"reward_calls": FAR}, "round"))
    return out


# (warm-up steps, steps per block, blocks) per unit, full and --quick; a block is whole schedule cycles
PLAN = {
    False: {"traj": (20, 4, 10), "iter": (4, 4, 5), "round": (6, 6, 4)},
    True: {"traj": (4, 4, 2), "iter": (1, 4, 1), "round": (2, 2, 1)},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer(case: Case, device: torch.device) -> Trainer:
    env = make_task(case.task)
    opts = {"seed": 0, "n_evals": 1, "progress": False, "device": str(device), **case.options}
    return Trainer(env, resolve_config(case.method, task_family(env), task_spec(env), **opts))


def _on_device(trainer: Trainer, device: torch.device) -> None:
    """The run's tensors are where they should be (a cheap spot check of the placement)."""
    where = {trainer.student.log_Z.device.type, trainer.env.initial_states(1).device.type}
    if trainer.buffer is not None:
        where.add(trainer.buffer.priority.device.type)
    if where != {device.type}:
        raise AssertionError(f"tensors on {sorted(where)}, expected {device.type}")


class MacCounter:
    """Multiply-adds of the nn.Linear layers (and SSR projections) of some models while it is active."""

    def __init__(self, models: list[nn.Module]):
        self.macs = 0.0
        self._handles = [
            m.register_forward_hook(self._hook) for model in models for m in model.modules() if isinstance(m, nn.Linear)
        ]
        self._patched: list[SSRPolicy] = []
        for model in models:
            if isinstance(model, SSRPolicy):  # project() multiplies by slices of the scorer's first layer itself
                original = model.project

                def project(e, original=original, model=model):
                    grad = 3 if torch.is_grad_enabled() else 1
                    self.macs += 2 * e.shape[0] * model.embed_dim * model.scorer[0].out_features * grad
                    return original(e)

                model.project = project  # type: ignore[method-assign]
                self._patched.append(model)

    def _hook(self, module: nn.Linear, inputs, output) -> None:
        rows = inputs[0].numel() // inputs[0].shape[-1]
        self.macs += rows * module.in_features * module.out_features * (3 if torch.is_grad_enabled() else 1)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        for model in self._patched:
            del model.project  # back to the class's method


def time_case(case: Case, device: torch.device, quick: bool) -> dict[str, Any]:
    """Seconds per step (median over blocks), per unit, reward calls per second, set-up seconds, peak memory,
    multiply-adds per step and GFLOP/s (over the timed blocks)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    trainer = _trainer(case, device)
    _sync(device)
    setup = time.perf_counter() - t0
    _on_device(trainer, device)
    warmup, block, blocks = PLAN[quick][case.unit]
    for _ in range(warmup):
        trainer.train_one_step()
    counter = MacCounter([m for m in (trainer.student, trainer.teacher, trainer.rnd) if m is not None])
    per_step, calls, seconds = [], 0, 0.0
    for _ in range(blocks):
        before = trainer.reward_calls
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(block):
            trainer.train_one_step()
        _sync(device)
        dt = time.perf_counter() - t0
        per_step.append(dt / block)
        calls += trainer.reward_calls - before
        seconds += dt
        trainer._losses.clear()
        trainer._teacher_losses.clear()
    counter.close()
    s = statistics.median(per_step)
    if case.unit == "traj":
        unit = f"{1000 * s / trainer.cfg.batch_size:.2f} ms / trajectory"
    elif case.unit == "iter":
        unit = f"{s:.3f} s / iteration"
    else:
        unit = f"{2 * s:.3f} s / round"
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        "s_step": s,
        "unit": unit,
        "calls_s": calls / seconds,
        "setup": setup,
        "peak": peak,
        "gmacs": counter.macs / (blocks * block) / 1e9,
        "gflops": 2 * counter.macs / seconds / 1e9,
    }


MATMULS = [  # (m, k, n): the shapes of the networks' products (rows × in -> out)
    (16, 256, 256),  # grid: one rollout step of batch 16
    (256, 256, 256),  # grid: one rollout step of batch 256
    (8000, 256, 256),  # grid: the log-prob pass over batch 256 × ~31 transitions
    (30000, 64, 64),  # diffusion PIS: B·T = 300 × 100 rows
    (4096, 1024, 1024),  # strings: the SSR at width 1024 (the Biochemical strings section's product)
]


def matmul_rates(device: torch.device, quick: bool) -> list[tuple[tuple[int, int, int], float]]:
    """GFLOP/s of plain float32 products a @ b, a [m, k], b [k, n] (median of timed repetitions)."""
    out = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    for m, k, n in MATMULS:
        a = torch.randn(m, k, generator=gen, device="cpu").to(device)
        b = torch.randn(k, n, generator=gen, device="cpu").to(device)
        flop = 2 * m * k * n
        reps = max(1, int((2e8 if quick else 1e9) / flop))
        times = []
        for _ in range(3 if quick else 7):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            _sync(device)
            times.append((time.perf_counter() - t0) / reps)
        out.append(((m, k, n), flop / statistics.median(times) / 1e9))
    return out


# ---- end to end: train on the device, resume on the CPU --------------------------------------------------------
CHECKS: list[tuple[dict[str, Any], str, dict[str, Any], str]] = [
    ({"name": "deceptive-grid", "dim": 4, "height": 8}, "teacher-per", {"reward_calls": 1600, "n_evals": 2}, "l1"),
    ({"name": "deceptive-grid", "dim": 2, "height": 8}, "gafn", {"reward_calls": 800, "n_evals": 2}, "l1"),
    ({"name": "deceptive-grid", "dim": 2, "height": 8}, "tb-ls", {"reward_calls": 800, "n_evals": 2}, "l1"),
    ({"name": "deceptive-grid", "dim": 2, "height": 8}, "teacher-db", {"reward_calls": 800, "n_evals": 2}, "l1"),
    (
        {"name": "gmm25", "n_steps": 20},
        "teacher",
        {"iterations": 20, "batch_size": 64, "n_evals": 2, "eval_samples": 256, "final_eval_samples": 512},
        "eubo",
    ),
    (
        {"name": "manywell", "dim": 32, "n_steps": 20},
        "tb-per-ls",
        {
            "iterations": 20,
            "batch_size": 64,
            "n_evals": 2,
            "eval_samples": 256,
            "final_eval_samples": 512,
            "ls_every": 5,
            "ls_iterations": 10,
        },
        "eubo",
    ),
    ({"name": "tfbind8"}, "teacher", {"reward_calls": 320, "n_evals": 2, "eval_samples": 256}, "l1"),
    ({"name": "tfbind8"}, "gtb", {"reward_calls": 320, "n_evals": 2, "eval_samples": 256}, "l1"),
    ({"name": "tfbind8"}, "tb-ls", {"reward_calls": 320, "n_evals": 2, "eval_samples": 256}, "l1"),
]


def check_case(
    task: dict[str, Any], method: str, options: dict[str, Any], metric: str, device: torch.device, root: Path
) -> dict[str, Any]:
    """Train on ``device`` into a run directory, then resume it on the CPU with twice the budget."""
    env = make_task(task)
    out = root / f"{task['name']}-{method}"
    opts = {"seed": 0, "progress": False, "device": str(device), **options}
    cfg = resolve_config(method, task_family(env), task_spec(env), **opts)
    t0 = time.perf_counter()
    trainer = Trainer(env, cfg, out)
    _on_device(trainer, device)
    first = trainer.train()
    _sync(device)
    train_s = time.perf_counter() - t0
    budget = {k: 2 * v for k, v in options.items() if k in ("reward_calls", "iterations")}
    t0 = time.perf_counter()
    resumed = Trainer.resume(out, device="cpu", **budget)
    _on_device(resumed, torch.device("cpu"))
    second = resumed.train()
    resume_s = time.perf_counter() - t0
    values = [first.get(metric), second.get(metric), first.get("log_Z"), second.get("log_Z")]
    ok = all(isinstance(v, float) and math.isfinite(v) for v in values) and second["step"] > first["step"]
    return {
        "train_s": train_s,
        "resume_s": resume_s,
        "first": first.get(metric),
        "second": second.get(metric),
        "ok": ok,
    }


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def describe(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} ({device})"
    else:
        where = f"CPU ({platform.processor() or platform.machine()}), {threads} thread(s)"
    return f"device: {where}; torch {torch.__version__}; Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--quick", action="store_true", help="fewer steps: a smoke run (about 2 minutes on one CPU core)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--only", default="", help="comma-separated labels to keep (substring match, e.g. 'H=16,qm9')")
    p.add_argument("--no-check", action="store_true", help="skip the end-to-end check")
    p.add_argument("--matmul", action="store_true", help="first time plain float32 matrix products (GFLOP/s)")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table to this file")
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except AdaptiveTeacherError as e:
        print(f"bench_device: error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    lines = [f"# bench_device{' --quick' if args.quick else ''}: {describe(device, args.threads)}", ""]

    def emit(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    print(lines[0] + "\n", flush=True)
    if args.matmul:
        emit("| float32 product [m, k] @ [k, n] | GFLOP/s |")
        emit("|---|---:|")
        for (m, k, n), rate in matmul_rates(device, args.quick):
            emit(f"| {m} × {k} @ {k} × {n} | {rate:.1f} |")
        emit("")
    emit(
        "| task | setting | method | s / step | per unit | reward calls / s | GMAC / step | GFLOP/s | set-up s "
        "| peak MiB |"
    )
    emit("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    keep: Callable[[Case], bool] = lambda c: not args.only or any(k in c.label for k in args.only.split(","))  # noqa: E731
    for case in filter(keep, cases()):
        r = time_case(case, device, args.quick)
        peak = "–" if r["peak"] is None else f"{r['peak']:.0f}"
        emit(
            f"| {case.task['name']} | {case.label} | {case.method} | {r['s_step']:.4f} | {r['unit']} | "
            f"{r['calls_s']:,.0f} | {r['gmacs']:.3f} | {r['gflops']:.1f} | {r['setup']:.1f} | {peak} |"
        )
    failed = 0
    if not args.no_check:
        emit("")
        emit(f"End to end: trained on {device}, then resumed on the CPU from the checkpoint with twice the budget.")
        emit("")
        emit("| task | method | train s | resume s | metric | after training | after resuming | result |")
        emit("|---|---|---:|---:|---|---:|---:|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for task, method, options, metric in CHECKS:
                try:
                    r = check_case(task, method, options, metric, device, Path(tmp))
                    result = "ok" if r["ok"] else "FAILED (non-finite metric)"
                    values = f"{metric} | {_num(r['first'])} | {_num(r['second'])}"
                    cells = f"{r['train_s']:.1f} | {r['resume_s']:.1f} | {values}"
                except Exception as e:  # noqa: BLE001 - a check reports every failure and goes on
                    result, cells = f"FAILED ({type(e).__name__}: {str(e).splitlines()[0][:120]})", "– | – | – | – | –"
                failed += not result.startswith("ok")
                emit(f"| {task['name']} | {method} | {cells} | {result} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"\nwritten to {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
