"""Command line: ``adaptive-teacher info | train | compare`` — a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from adaptive_teacher.config import PRESETS
from adaptive_teacher.errors import AdaptiveTeacherError, ConfigError
from adaptive_teacher.tasks import (
    DIFFUSION_TASKS,
    TASKS,
    default_budget,
    make_task,
    task_family,
    task_info,
    task_spec,
)


def _task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="deceptive-grid", help=f"one of {', '.join(TASKS)}")
    p.add_argument("--dim", type=int, default=None, help="dimension (grid default 2, manywell 32, gmm25 2)")
    p.add_argument("--height", type=int, default=16, help="grid side H")
    p.add_argument("--n-steps", type=int, default=None, help="diffusion: Euler–Maruyama steps T (default 100)")
    p.add_argument("--t-scale", type=float, default=None, help="diffusion: σ² of the reference process")


def _method_options(p: argparse.ArgumentParser) -> None:
    """Composable options; each overrides the method preset only when given."""
    g = p.add_argument_group("method options (override the preset)")
    flag = {"action": "store_const", "const": True, "default": None}
    g.add_argument("--teacher", help="train an adaptive Teacher next to the Student", **flag)
    g.add_argument(
        "--buffer",
        choices=["none", "reward", "teacher_reward"],
        default=None,
        help="replay buffer priority: reward (PRT) or teacher_reward (PER)",
    )
    g.add_argument("--buffer-size", type=int, default=None, help="default: 10%% of the terminal states")
    g.add_argument("--local-search", help="back-and-forth local search (LS-GFN)", **flag)
    g.add_argument("--ls-iterations", type=int, default=None)
    g.add_argument("--ls-accept", choices=["greedy", "mh"], default=None)
    g.add_argument("--eps", type=float, default=None, help="ε-uniform exploration of the Student")
    g.add_argument("--learn-pb", help="learn the backward policy", **flag)
    g.add_argument("--gafn", help="GAFN: RND intrinsic rewards with augmented flows", **flag)
    g.add_argument("--ri-scale", type=float, default=None)
    g.add_argument("--objective", choices=["tb", "db", "vargrad"], default=None)
    g.add_argument("--C", type=float, default=None, help="Teacher weight of under-sampled x (default 19)")
    g.add_argument("--alpha", type=float, default=None, help="Teacher reward exponent of R (default 0)")
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--teacher-lr", type=float, default=None)
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--hidden", type=int, default=None)
    g.add_argument("--n-evals", type=int, default=None, help="evaluations (metrics lines) per run")
    g.add_argument("--iterations", type=int, default=None, help="budget in iterations instead of reward calls")
    g.add_argument("--arch", choices=["pis", "at256"], default=None, help="diffusion network (default pis)")
    g.add_argument("--learn-var", help="diffusion: learned per-step variance", **flag)
    g.add_argument("--eval-samples", type=int, default=None, help="diffusion: samples per evaluation")
    g.add_argument("--final-eval-samples", type=int, default=None, help="diffusion: samples at the end")
    g.add_argument("--ls-every", type=int, default=None, help="diffusion: MALA every this many iterations")


OPTION_NAMES = (
    "iterations",
    "arch",
    "learn_var",
    "eval_samples",
    "final_eval_samples",
    "ls_every",
    "teacher",
    "buffer",
    "buffer_size",
    "local_search",
    "ls_iterations",
    "ls_accept",
    "eps",
    "learn_pb",
    "gafn",
    "ri_scale",
    "objective",
    "C",
    "alpha",
    "lr",
    "teacher_lr",
    "batch_size",
    "hidden",
    "n_evals",
)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in OPTION_NAMES if getattr(args, k) is not None}


def _budget(args: argparse.Namespace, env) -> dict[str, int]:
    """--reward-calls when given; nothing when --iterations is given; the paper's budget otherwise."""
    if args.reward_calls is not None:
        return {"reward_calls": args.reward_calls}
    if args.iterations is not None:
        return {}
    return default_budget(env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptive-teacher", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print the task's size, number of modes and exact log Z as JSON")
    _task_args(info)

    train = sub.add_parser("train", help="train one method on one task")
    _task_args(train)
    train.add_argument("--method", default="teacher", help=f"one of {', '.join(PRESETS)}")
    train.add_argument("--reward-calls", type=int, default=None, help="budget in reward calls (default: the paper's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default=None, help="run directory (default runs/<task>-<method>-seed<S>)")
    train.add_argument("--resume", default=None, metavar="DIR", help="continue an interrupted run in DIR")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for small nets)")
    _method_options(train)

    cmp = sub.add_parser("compare", help="run methods × seeds, write results.csv, results.md and a plot")
    _task_args(cmp)
    cmp.add_argument("--methods", default="tb,teacher", help="comma-separated method names")
    cmp.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    cmp.add_argument("--reward-calls", type=int, default=None, help="budget in reward calls (default: the paper's)")
    cmp.add_argument("--out", default="runs/compare")
    cmp.add_argument("--jobs", type=int, default=1, help="parallel processes")
    cmp.add_argument("--threads", type=int, default=1, help="torch threads per run")
    _method_options(cmp)
    return parser


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers (got {text!r})") from None


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    task = {"name": args.task, "dim": args.dim, "height": args.height}
    if args.task in DIFFUSION_TASKS:
        task = {"name": args.task, "dim": args.dim, "n_steps": args.n_steps, "t_scale": args.t_scale}
    if args.command == "info":
        print(json.dumps(task_info(make_task(task)), indent=2))
        return 0
    if args.command == "train":
        import torch

        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1 (got {args.threads})")
        torch.set_num_threads(args.threads)  # also for the evaluation before training starts
        from adaptive_teacher.config import resolve_config
        from adaptive_teacher.trainer import Trainer

        if args.resume:
            trainer = Trainer.resume(args.resume)
        else:
            env = make_task(task)
            task = task_spec(env)
            opts = {**_budget(args, env), **_options(args), "threads": args.threads}
            cfg = resolve_config(args.method, task_family(env), seed=args.seed, progress=not args.no_progress, **opts)
            out = args.out or "runs/" + "-".join(f"{v}" for v in task.values()) + f"-{args.method}-seed{args.seed}"
            trainer = Trainer(env, cfg, out)
        summary = trainer.train()
        print(json.dumps(summary, indent=2))
        print(f"Run written to {trainer.out_dir}", file=sys.stderr)
        return 0
    if args.command == "compare":
        from adaptive_teacher.compare import compare

        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not methods:
            raise ConfigError("--methods: give at least one method")
        seeds = _int_list(args.seeds, "--seeds")
        if not seeds:
            raise ConfigError("--seeds: give at least one seed")
        if args.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1 (got {args.jobs})")
        env = make_task(task)  # validate the task before spawning workers
        task = task_spec(env)
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1 (got {args.threads})")
        opts = {**_budget(args, env), **_options(args)}
        reward_calls = opts.pop("reward_calls", None)
        table = compare(task, methods, seeds, reward_calls, args.out, args.jobs, args.threads, **opts)
        print(table)
        plot = "eubo_vs_reward_calls.png" if task["name"] in DIFFUSION_TASKS else "modes_vs_reward_calls.png"
        print(f"Plot: {args.out}/{plot}  Table: {args.out}/results.md  CSV: {args.out}/results.csv")
        return 0
    return 2


def main(argv: list[str] | None = None) -> None:
    try:
        code = run(argv)
    except ConfigError as e:
        print(f"adaptive-teacher: error: {e}", file=sys.stderr)
        code = 2
    except AdaptiveTeacherError as e:
        print(f"adaptive-teacher: error: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("adaptive-teacher: interrupted; resume with --resume <run dir>", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
