"""Command line: ``adaptive-teacher info | train | compare`` — a thin layer over the Python API.

The method options are generated from the fields of TrainConfig (each is defined once, with its help text).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import Field
from typing import Any, get_type_hints

from adaptive_teacher.config import (
    FAMILY_DEFAULTS,
    TrainConfig,
    methods_for,
    option_fields,
    resolve_config,
    validate,
)
from adaptive_teacher.errors import (
    AdaptiveTeacherError,
    ConfigError,
    RunInterrupted,
    RunsFailed,
    command_line_option_names,
)
from adaptive_teacher.families import get_family
from adaptive_teacher.tasks import (
    DIFFUSION_TASKS,
    STRING_TASKS,
    TASKS,
    default_budget,
    make_task,
    task_family,
    task_info,
    task_spec,
)

# Options that only pick what to run (train/compare options besides the config fields), with their defaults.
TASK_DEFAULTS = {"task": "deceptive-grid", "height": 16}
RESUMABLE = ("reward_calls", "iterations", "threads", "device", "log")  # what --resume may change (none fingerprinted)


def _task_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task")
    g.add_argument("--task", default=None, help=f"one of {', '.join(TASKS)} (default: deceptive-grid)")
    g.add_argument("--dim", type=int, default=None, help="dimension (default: grid 2, manywell 32, gmm25 2)")
    g.add_argument("--height", type=int, default=None, help="grid side H (default: 16)")
    g.add_argument("--n-steps", type=int, default=None, help="diffusion: Euler–Maruyama steps T (default: 100)")
    g.add_argument(
        "--t-scale", type=float, default=None, help="diffusion: σ² of the reference process (default: the target's)"
    )
    g.add_argument(
        "--beta",
        type=float,
        default=None,
        help="strings: reward exponent β (default: Kim et al.'s qm9 20, seh 6, tfbind8 20, rna 40; LS-GFN and "
        "Shen et al. use 5, 6, 3, 8)",
    )


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _default_text(f: Field) -> str:
    """'default: X' with the diffusion family's value where it differs."""
    base = "not set" if f.default is None else f.default
    diffusion = FAMILY_DEFAULTS["diffusion"].get(f.name, base)
    if f.metadata.get("family") == "diffusion" or (f.metadata.get("family") is None and diffusion != base):
        if f.metadata.get("family") == "diffusion":
            return f"default: {diffusion}"
        return f"default: {base}; diffusion {diffusion}"
    return f"default: {base}"


def _config_options(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; a flag overrides the method preset only when given."""
    g = p.add_argument_group("method options (each overrides the method preset only when given)")
    hints = get_type_hints(TrainConfig)
    for f in option_fields():
        flag = "--" + f.name.replace("_", "-")
        family = f.metadata.get("family")
        scope = f"{family}: " if family else ""
        text = f.metadata["help"]
        help_text = f"{scope}{text}" + ("" if "default" in text else f" ({_default_text(f)})")
        help_text = help_text.replace("%", "%%")
        kind = hints[f.name]
        args = getattr(kind, "__args__", ())
        base = kind if not args or getattr(kind, "__origin__", None) is tuple else next(a for a in args if a)
        if getattr(kind, "__origin__", None) is tuple:
            g.add_argument(flag, dest=f.name, type=_float_list, default=None, metavar="F,F", help=help_text)
        elif base is bool:
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            g.add_argument(
                flag, dest=f.name, type=base, default=None, choices=f.metadata.get("choices"), help=help_text
            )


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The config options given on the command line (everything not given is None)."""
    return {f.name: getattr(args, f.name) for f in option_fields() if getattr(args, f.name) is not None}


def _budget(args: argparse.Namespace, env) -> dict[str, int]:
    """--reward-calls or --iterations when given; the paper's budget otherwise."""
    if args.reward_calls is not None or args.iterations is not None:
        return {}
    return default_budget(env)


def _method_help() -> str:
    return (
        f"method preset; grid tasks: {', '.join(methods_for('discrete'))}; "
        f"diffusion tasks: {', '.join(methods_for('diffusion'))}; "
        f"string tasks: {', '.join(methods_for('strings'))} (default: teacher)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptive-teacher", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print the task's size, number of modes and exact log Z as JSON")
    _task_args(info)

    train = sub.add_parser("train", help="train one method on one task")
    _task_args(train)
    run = train.add_argument_group("run")
    run.add_argument("--method", default=None, help=_method_help())
    run.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    run.add_argument(
        "--out",
        default=None,
        help="run directory (default: runs/<task>-<parameters>-<method>-seed<S>, e.g. "
        "runs/deceptive-grid-dim2-height16-teacher-seed0)",
    )
    run.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="continue the run in DIR from its last checkpoint; with --reward-calls/--iterations: a new budget "
        "(default: start a new run)",
    )
    run.add_argument("--overwrite", action="store_true", help="replace a run that already exists in --out")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _config_options(train)

    cmp = sub.add_parser("compare", help="run methods × seeds, write results.csv, results.md and a plot")
    _task_args(cmp)
    runs = cmp.add_argument_group("runs")
    runs.add_argument("--methods", default="tb,teacher", help="comma-separated method names (default: tb,teacher)")
    runs.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    runs.add_argument(
        "--out",
        default="runs/compare",
        help="directory of the comparison; runs go to OUT/<method>/seed<S> (default: runs/compare)",
    )
    runs.add_argument("--jobs", type=int, default=1, help="runs in parallel, one process each (default: 1)")
    _config_options(cmp)

    swp = sub.add_parser(
        "sweep",
        help="run the tasks × methods × seeds × settings of a TOML spec (locally or on Ray), skipping done runs",
    )
    swp.add_argument("spec", metavar="SPEC.toml", help="the sweep spec (format: the sweep module's docstring; sweeps/)")
    swp.add_argument("--out", default=None, help="root of the sweep's runs (default: the spec's 'out')")
    swp.add_argument(
        "--jobs", type=int, default=1, help="local executor: runs in parallel, one process each (default: 1)"
    )
    swp.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (default: cores // jobs; jobs × threads ≤ cores)",
    )
    swp.add_argument(
        "--executor", default="local", choices=("local", "ray"), help="where runs execute (default: local)"
    )
    swp.add_argument("--address", default=None, help="ray: the cluster to join, e.g. 'auto' (default: a local Ray)")
    swp.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only the runs whose folder <task>/<setting>/seed<S> matches (shell pattern; a folder selects "
        "everything below it, e.g. qm9-beta20 or '*/*/seed0'); repeatable (default: every run of the spec)",
    )
    swp.add_argument("--dry-run", action="store_true", help="list what would run, reuse or resume; train nothing")
    recs = swp.add_mutually_exclusive_group()
    recs.add_argument(
        "--records",
        default=None,
        metavar="DIR",
        help="copy every finished run's config, summary and metrics to DIR/<task>/<setting>/seed<S> and reuse "
        "the records found there (default: the spec's 'records' when --out is not given)",
    )
    recs.add_argument(
        "--no-records",
        action="store_true",
        help="neither write nor reuse records (default: off, so the spec's 'records' are used when it has them)",
    )
    swp.add_argument(
        "--log",
        default=None,
        help="mirror each run's metrics: tensorboard, wandb or tensorboard,wandb (default: the spec's)",
    )
    swp.add_argument(
        "--device",
        default=None,
        help="train every run on this device, cpu or cuda (cuda:N); not part of a run's identity, so finished "
        "runs and records are still reused and interrupted ones resume (default: the spec's)",
    )
    swp.add_argument("--no-report", action="store_true", help="do not write OUT/report at the end")

    from adaptive_teacher import report

    rep = sub.add_parser("report", help="all runs under a folder in one table (CSV, markdown) and the paper's curves")
    report.add_arguments(rep)
    return parser


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers (got {text!r})") from None


def _task(args: argparse.Namespace) -> dict[str, Any]:
    name = args.task or TASK_DEFAULTS["task"]
    if name not in STRING_TASKS and args.beta is not None:
        raise ConfigError(f"--beta applies to the string tasks ({', '.join(STRING_TASKS)}) only; {name} is not one")
    if name in STRING_TASKS:
        for flag, value in (("--dim", args.dim), ("--height", args.height), ("--n-steps", args.n_steps)):
            if value is not None:
                raise ConfigError(f"{flag} does not apply to the string task {name}")
        if args.t_scale is not None:
            raise ConfigError(f"--t-scale does not apply to the string task {name}")
        return {"name": name, "beta": args.beta}
    if name in DIFFUSION_TASKS:
        if args.height is not None:
            raise ConfigError(f"--height applies to grid tasks only; {name} is a diffusion task")
        fixed = get_family("diffusion").protocol_tasks.get(getattr(args, "protocol", None) or "default", {})
        t_scale = args.t_scale if args.t_scale is not None else fixed.get("t_scale")
        return {"name": name, "dim": args.dim, "n_steps": args.n_steps, "t_scale": t_scale}
    for flag, value in (("--n-steps", args.n_steps), ("--t-scale", args.t_scale)):
        if value is not None:
            raise ConfigError(f"{flag} applies to diffusion tasks only; {name} is a grid task")
    return {"name": name, "dim": args.dim, "height": args.height or TASK_DEFAULTS["height"]}


def _default_out(task: dict[str, Any], method: str, seed: int) -> str:
    def text(v: Any) -> str:
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    shown = {k: v for k, v in task.items() if k != "name" and v is not None and v is not True}
    params = "".join(f"-{k}{text(v)}" for k, v in shown.items())
    return f"runs/{task['name']}{params}-{method}-seed{seed}"


def _train(args: argparse.Namespace) -> int:
    import torch

    from adaptive_teacher.run_dir import exclusive
    from adaptive_teacher.trainer import Trainer

    threads = args.threads if args.threads is not None else 1
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1 (got {threads})")
    torch.set_num_threads(threads)  # also for the evaluation before training starts
    if args.resume:
        given = [k for k in _options(args) if k not in RESUMABLE]
        given += [
            k
            for k in ("task", "dim", "height", "n_steps", "t_scale", "beta", "method", "seed", "out")
            if _given(args, k)
        ]
        given += ["overwrite"] if args.overwrite else []
        ignored = ["--" + k.replace("_", "-") for k in given]
        if ignored:
            raise ConfigError(
                f"--resume continues {args.resume} with its saved configuration; {', '.join(ignored)} would be "
                "ignored: drop them (only --reward-calls, --iterations, --threads, --device, --log and "
                "--no-progress apply), or start a new run"
            )
        with exclusive(args.resume, create=False):  # a second process training in the same directory is refused
            trainer = Trainer.resume(
                args.resume, reward_calls=args.reward_calls, iterations=args.iterations, device=args.device
            )
            trainer.cfg.progress = not args.no_progress
            trainer.cfg.threads = threads
            if args.log is not None:
                trainer.cfg.log = args.log
            summary = trainer.train()
    else:
        env = make_task(_task(args))
        task = task_spec(env)
        method = args.method or "teacher"
        seed = args.seed if args.seed is not None else 0
        opts = {**_budget(args, env), **_options(args), "threads": threads}
        cfg = resolve_config(method, task_family(env), task, seed=seed, progress=not args.no_progress, **opts)
        out = args.out or _default_out(task, method, seed)
        with exclusive(out):
            trainer = Trainer(env, cfg, out, overwrite=args.overwrite)
            summary = trainer.train()
    print(json.dumps(summary, indent=2))
    print(f"Run written to {trainer.out_dir}", file=sys.stderr)
    return 0


def _given(args: argparse.Namespace, name: str) -> bool:
    return getattr(args, name, None) is not None


def _compare(args: argparse.Namespace) -> int:
    from adaptive_teacher.compare import compare

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ConfigError("--methods: give at least one method")
    seeds = _int_list(args.seeds, "--seeds")
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1 (got {args.jobs})")
    threads = args.threads if args.threads is not None else 1
    env = make_task(_task(args))  # validate the task before spawning workers
    task = task_spec(env)
    opts = {**_budget(args, env), **_options(args), "threads": threads}
    for m in methods:  # fail fast: every run's config must be valid before any starts
        for s in seeds:
            validate(resolve_config(m, task_family(env), task, seed=s, **opts))
    opts.pop("threads")
    reward_calls = opts.pop("reward_calls", None)
    try:
        table = compare(task, methods, seeds, reward_calls, args.out, args.jobs, threads, **opts)
    except RunsFailed as e:
        if e.table:
            print(e.table)
        raise
    print(table)
    plot = "eubo_vs_reward_calls.png" if task["name"] in DIFFUSION_TASKS else "modes_vs_reward_calls.png"
    print(f"Plot: {args.out}/{plot}  Table: {args.out}/results.md  CSV: {args.out}/results.csv")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from adaptive_teacher.sweep import load_sweep, run_sweep, select_runs

    records = False if args.no_records else args.records
    sweep = select_runs(
        load_sweep(
            args.spec,
            out=args.out,
            check_device=args.executor != "ray" and args.device is None,  # --device is checked below
            records=records,
        ),
        args.only,
    )
    if args.log is not None or args.device is not None:
        from dataclasses import replace

        for run in sweep.runs:
            assert run.cfg is not None
            run.cfg.log = args.log if args.log is not None else run.cfg.log
            run.cfg.device = args.device if args.device is not None else run.cfg.device
            # on Ray the device is checked where the run executes, as load_sweep does
            validate(run.cfg if args.executor != "ray" else replace(run.cfg, device="cpu"))
    try:
        records = run_sweep(sweep, args.jobs, args.threads, args.executor, args.address, dry_run=args.dry_run)
    finally:
        if not args.dry_run and not args.no_report:
            _sweep_report(sweep.out)
    if not args.dry_run:
        print(f"{sum(r['status'] == 'finished' for r in records)} of {len(records)} runs finished under {sweep.out}")
    return 0


def _sweep_report(root) -> None:
    """The report of the sweep's root (also after failures and Ctrl-C: of what finished); never fatal."""
    from adaptive_teacher.report import write_report

    try:
        out = write_report(root, warn=lambda message: None)
    except (AdaptiveTeacherError, OSError) as e:
        print(f"adaptive-teacher: no report written: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"adaptive-teacher: report skipped; write it with 'adaptive-teacher report {root}'", file=sys.stderr)
    else:
        print(f"Report: {out / 'report.md'}", file=sys.stderr)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with command_line_option_names():
        if args.command == "info":
            print(json.dumps(task_info(make_task(_task(args)))))
            return 0
        if args.command == "train":
            return _train(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "report":
            from adaptive_teacher.report import command

            return command(args)
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
    except RunInterrupted as e:
        print(f"adaptive-teacher: {e}", file=sys.stderr)
        code = 130
    except KeyboardInterrupt:
        print("adaptive-teacher: interrupted before training started; nothing to resume", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
