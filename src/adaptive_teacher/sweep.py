"""Sweeps: tasks × methods × seeds × option settings from a TOML spec, on local processes or on Ray.

A spec (``adaptive-teacher sweep SPEC.toml``; committed examples in ``sweeps/``)::

    name = "grid-d4h16"                      # default: the file's stem
    out = "runs/sweeps/grid-d4h16"           # default: runs/sweeps/<name> (relative to the working directory)
    records = "results/sweeps/grid-d4h16"    # optional: committed records of finished runs (records.py)
    [options]                                # every run: TrainConfig fields, as on the command line
    n_evals = 12
    [[product]]                              # tasks × methods × seeds × every combination of the axes
    tasks = [{ name = "deceptive-grid", dim = 4, height = 16 }]
    methods = ["tb", "teacher"]
    seeds = [0, 1, 2]
    options = { reward_calls = 96000 }       # this block's fixed options
    axes = { C = [1, 19, 100] }              # one setting per value; several axes make a product
    [[runs]]                                 # explicit runs
    task = { name = "tfbind8" }
    method = "teacher"
    seeds = [0]
    label = "short"                          # optional: a name for the setting (its folder)

``--only PATTERN`` runs part of a spec (by folder, e.g. ``--only 'qm9-*/*/seed0'``; the rest is untouched).
A run without ``reward_calls`` or ``iterations`` gets the paper's budget of its task. Each run lives in
``<out>/<task>/<setting>/seed<S>`` (``setting`` = the method, the block's label and the axis values, e.g.
``teacher-C1``) with the layout of every run directory. A finished run of the identical config is reused, an
interrupted one continues from its checkpoint, and a run whose config changed is a *new* run in
``seed<S>-<fingerprint>``: the old one is never overwritten. With ``records`` (used only when ``out`` is the
spec's own), every finished run is also copied to ``<records>/<task>/<setting>/seed<S>`` (config, summary and
metrics, no checkpoint: small enough for git), and a record of the identical config counts as a finished run,
so a fresh clone reuses what was trained elsewhere instead of training it again. A ``[reproduction]`` table is
kept for the reproduction report (``python -m adaptive_teacher.reproduction``) and ignored here.

Executors: ``local`` (default; ``jobs`` worker processes with ``threads`` torch threads each, jobs × threads
≤ cores) and ``ray`` (one Ray task per run asking for ``threads`` CPUs and, for ``device = "cuda"``, one
GPU; optional extra ``ray``). Both call the same training function, so a run gives the same summary on either.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import json
import os
import re
import signal
import sys
import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from adaptive_teacher.compare import (
    STOP_GRACE_S,
    Log,
    _execute,
    _key_metrics,
    _one_line,
    _Run,
    _seconds,
    _signals,
    _start_text,
    plan_run,
    run_config,
    run_in_pool,
    run_in_process,
)
from adaptive_teacher.config import TrainConfig, validate
from adaptive_teacher.errors import AdaptiveTeacherError, ConfigError, DataError, RunInterrupted, RunsFailed
from adaptive_teacher.records import is_record, write_record
from adaptive_teacher.run_dir import fingerprint, write_json

SPEC_KEYS = ("name", "out", "records", "description", "options", "product", "runs", "reproduction")
PRODUCT_KEYS = ("tasks", "methods", "seeds", "options", "axes", "label")
RUNS_KEYS = ("task", "method", "seed", "seeds", "options", "label")
EXECUTORS = ("local", "ray")
# What the last invocation of a sweep planned and how each run ended: sweep-<name>.json in its root (specs
# may share a root, e.g. the ablations reuse grid-d4h16's runs).
SWEEP_FILE = "sweep-{name}.json"


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, not the machine's count)."""
    with contextlib.suppress(AttributeError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# ---- the spec -------------------------------------------------------------------------------------------
@dataclass
class SweepRun:
    """One run of a sweep: its canonical task spec, method, seed, option overrides and setting name."""

    task: dict[str, Any]
    method: str
    seed: int
    options: dict[str, Any]
    setting: str
    out: Path = Path()
    cfg: TrainConfig | None = None

    @property
    def name(self) -> str:
        return f"{task_slug(self.task)} {self.setting} seed {self.seed}"


@dataclass
class Sweep:
    name: str
    out: Path
    runs: list[SweepRun]
    description: str = ""
    reproduction: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    only: tuple[str, ...] = ()  # the --only patterns that selected ``runs`` (none: the whole spec)
    records: Path | None = None  # where finished runs are recorded and found again (records.py); None: nowhere

    def record_dir(self, run_dir: Path) -> Path | None:
        """The record folder of a run directory under ``out`` (None without records)."""
        if self.records is None:
            return None
        return self.records / Path(run_dir).relative_to(self.out)


def select_runs(sweep: Sweep, patterns: list[str] | tuple[str, ...]) -> Sweep:
    """The runs of ``sweep`` whose folder under its root, ``<task>/<setting>/seed<S>``, matches one of the shell
    patterns, a pattern naming a folder selecting everything below it (``qm9-beta20``, ``*/teacher``,
    ``*/*/seed0``). A pattern that selects nothing is a ConfigError that shows what the folders look like."""
    if not patterns:
        return sweep
    folders = [run.out.relative_to(sweep.out).as_posix() for run in sweep.runs]

    def hits(pattern: str) -> list[bool]:
        p = pattern.strip("/")
        return [fnmatch.fnmatchcase(f, p) or fnmatch.fnmatchcase(f, f"{p}/*") for f in folders]

    chosen = [False] * len(folders)
    for pattern in patterns:
        matched = hits(pattern)
        if not any(matched):
            examples = ", ".join(dict.fromkeys(folders[:: max(1, len(folders) // 3)]).keys())
            raise ConfigError(
                f"--only {pattern!r} matches none of the {len(folders)} runs of sweep {sweep.name}; their folders "
                f"look like {examples} (a pattern may name a folder, e.g. --only {folders[0].split('/')[0]})"
            )
        chosen = [a or b for a, b in zip(chosen, matched, strict=True)]
    runs = [run for run, keep in zip(sweep.runs, chosen, strict=True) if keep]
    return replace(sweep, runs=runs, only=tuple(patterns))


def task_slug(task: dict[str, Any]) -> str:
    """A folder name for a task spec: its name and the parameters that are set, e.g. deceptive-grid-dim4-height16."""

    def text(v: Any) -> str:
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    shown = {k: v for k, v in task.items() if k != "name" and v is not None and v is not True}
    return _safe(str(task.get("name")) + "".join(f"-{k}{text(v)}" for k, v in shown.items()))


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


def _value_text(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "_".join(_value_text(x) for x in v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).lower() if isinstance(v, bool) else str(v)


def _check_keys(table: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {type(table).__name__}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(allowed)}")
    return table


def _options(table: Any, where: str) -> dict[str, Any]:
    """A table of TrainConfig overrides (lists become tuples, as the tuple-valued fields expect)."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of options, got {type(table).__name__}")
    known = {f.name for f in fields(TrainConfig)}
    for k in table:
        if k not in known:
            raise ConfigError(f"{where}: unknown option {k!r}; the options are the fields of TrainConfig")
        if k in ("method", "seed"):
            raise ConfigError(f"{where}: give {k} with 'methods'/'seeds' (or 'method'/'seed' of a [[runs]] entry)")
        if k in ("threads", "progress"):
            raise ConfigError(
                f"{where}: {k} is set by the sweep command ({'--threads' if k == 'threads' else 'a bar'})"
            )
    return {k: _typed(k, v) for k, v in table.items()}


def _typed(name: str, value: Any) -> Any:
    """A TOML value as the field's type: lists become tuples, and an integer given for a float field a float
    (so ``C = 1`` and ``C = 1.0`` are the same run and the same folder)."""
    from typing import get_type_hints

    if isinstance(value, list):
        return tuple(_typed(name, v) for v in value)
    hint = get_type_hints(TrainConfig).get(name)
    floats = hint is float or float in getattr(hint, "__args__", ())
    if floats and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _list(value: Any, kind: type, where: str) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, kind) and not isinstance(v, bool) for v in items):
        raise ConfigError(f"{where}: expected a non-empty list of {kind.__name__}s, got {value!r}")
    return items


def load_sweep(
    path: str | Path,
    out: str | Path | None = None,
    check_device: bool = True,
    records: str | Path | bool | None = None,
) -> Sweep:
    """Read and expand a sweep spec (every run's config is resolved and validated before anything runs;
    ``check_device=False`` leaves the device to the machine that runs it, as for Ray). ``records``: a folder,
    False for none, or None for the spec's ``records`` when ``out`` is the spec's own (else none)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"sweep spec {path}: not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"sweep spec {path}: not valid TOML ({e})") from None
    return expand_sweep(raw, name=path.stem, out=out, source=path, check_device=check_device, records=records)


def expand_sweep(
    raw: dict[str, Any],
    name: str = "sweep",
    out: str | Path | None = None,
    source: Path | None = None,
    check_device: bool = True,
    records: str | Path | bool | None = None,
) -> Sweep:
    """The runs of a parsed spec (see the module docstring), each with its resolved config and directory."""
    where = str(source) if source is not None else "sweep spec"
    _check_keys(raw, SPEC_KEYS, where)
    name = str(raw.get("name", name))
    root = Path(out if out is not None else raw.get("out", f"runs/sweeps/{_safe(name)}"))
    if records is None:  # the spec's records belong to the spec's own root
        records = raw.get("records") if out is None else None
        if records is not None and not isinstance(records, str):
            raise ConfigError(f"{where}: 'records' is a folder name (a string), got {records!r}")
    if isinstance(records, str) and not records.strip():
        raise ConfigError(f"{where}: 'records' is empty; give a folder (e.g. results/sweeps/{_safe(name)})")
    records_root = None if records is None or records is False else Path(records)
    if records_root is not None:
        a, b = records_root.resolve(), root.resolve()
        if a == b or a.is_relative_to(b) or b.is_relative_to(a):
            raise ConfigError(
                f"{where}: 'records' ({records_root}) and the runs' root ({root}) must be separate folders, "
                "neither inside the other"
            )
    common = _options(raw.get("options"), f"{where} [options]")
    entries: list[tuple[dict[str, Any], str, int, dict[str, Any], str]] = []
    products = raw.get("product", [])
    explicit = raw.get("runs", [])
    if not isinstance(products, list) or not isinstance(explicit, list):
        raise ConfigError(f"{where}: write [[product]] and [[runs]] as arrays of tables")
    for i, block in enumerate(products):
        at = f"{where} [[product]] #{i + 1}"
        _check_keys(block, PRODUCT_KEYS, at)
        for key in ("tasks", "methods", "seeds"):
            if key not in block:
                raise ConfigError(f"{at}: '{key}' is missing")
        tasks = block["tasks"] if isinstance(block["tasks"], list) else [block["tasks"]]
        if not tasks:
            raise ConfigError(f"{at} tasks: expected a non-empty list of task tables")
        methods = _list(block["methods"], str, f"{at} methods")
        seeds = _list(block["seeds"], int, f"{at} seeds")
        fixed = _options(block.get("options"), f"{at} options")
        axes = block.get("axes", {})
        _options({k: None for k in axes} if isinstance(axes, dict) else axes, f"{at} axes")
        for k, vs in axes.items():
            if not isinstance(vs, list) or not vs:
                raise ConfigError(f"{at} axes.{k}: expected a non-empty list of values, got {vs!r}")
            if k in fixed:
                raise ConfigError(f"{at}: {k} is both an axis and a fixed option; keep one")
        axis_values = [[(k, _typed(k, v)) for v in vs] for k, vs in axes.items()]
        label = str(block.get("label", ""))
        combos = list(itertools.product(*axis_values)) if axis_values else [()]
        for s in seeds:  # seed-major: a sweep stopped early has every setting at its first seeds
            for task, combo in itertools.product(tasks, combos):
                suffix = ([label] if label else []) + [f"{k}{_value_text(v)}" for k, v in combo]
                for m in methods:
                    entries.append((task, m, s, {**common, **fixed, **dict(combo)}, "-".join([m, *suffix])))
    for i, entry in enumerate(explicit):
        at = f"{where} [[runs]] #{i + 1}"
        _check_keys(entry, RUNS_KEYS, at)
        if "task" not in entry or "method" not in entry:
            raise ConfigError(f"{at}: 'task' and 'method' are required")
        if ("seed" in entry) == ("seeds" in entry):
            raise ConfigError(f"{at}: give 'seed' or 'seeds' (one of them)")
        if "seed" in entry and not isinstance(entry["seed"], int):
            raise ConfigError(f"{at} seed: expected an integer (use 'seeds' for a list), got {entry['seed']!r}")
        seeds = _list(entry.get("seeds", entry.get("seed")), int, f"{at} seeds")
        opts = {**common, **_options(entry.get("options"), f"{at} options")}
        setting = "-".join([str(entry["method"]), *([str(entry["label"])] if entry.get("label") else [])])
        for s in seeds:
            entries.append((entry["task"], str(entry["method"]), s, opts, setting))
    if not entries:
        raise ConfigError(f"{where}: no runs; add a [[product]] or a [[runs]] table")
    return Sweep(
        name=name,
        out=root,
        runs=_resolve(entries, root, where, check_device),
        description=str(raw.get("description", "")),
        reproduction=_reproduction(raw.get("reproduction", {}), where),
        source=source,
        records=records_root,
    )


def _reproduction(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} [reproduction]: expected a table (claim, source, metric, paper, expect, ...)")
    if not isinstance(table.get("expect", []), list) or not isinstance(table.get("paper", {}), dict):
        raise ConfigError(f"{where} [reproduction]: 'expect' is a list of comparisons and 'paper' a table")
    return dict(table)


def _resolve(
    entries: list[tuple[dict, str, int, dict, str]], root: Path, where: str, check_device: bool = True
) -> list[SweepRun]:
    """Canonical task specs, budgets, configs and folders; duplicates collapse, clashing folders are an error."""
    from adaptive_teacher.tasks import default_budget, make_task, task_spec

    canonical: dict[str, tuple[dict[str, Any], dict[str, int]]] = {}
    runs: dict[Path, SweepRun] = {}
    settings: dict[tuple[str, str], str] = {}  # (task, setting) -> its config's fingerprint without the seed
    by_fingerprint: set[str] = set()  # the same config under two names runs once, in the first folder
    for task, method, seed, options, setting in entries:
        if not isinstance(task, dict) or "name" not in task:
            raise ConfigError(f"{where}: a task is a table with a 'name' (got {task!r})")
        key = json.dumps(task, sort_keys=True)
        if key not in canonical:
            try:
                env = make_task(task)
            except AdaptiveTeacherError as e:
                raise ConfigError(f"{where}: task {json.dumps(task)}: {e}") from None
            canonical[key] = (task_spec(env), default_budget(env))
        spec, budget = canonical[key]
        opts = dict(options)
        if "reward_calls" not in opts and "iterations" not in opts:
            opts.update(budget)
        reward_calls = opts.pop("reward_calls", None)
        try:
            cfg = run_config(spec, method, seed, reward_calls, 1, opts)
            # The device is checked where the run executes (a Ray worker may have the GPU the driver lacks).
            validate(cfg if check_device else replace(cfg, device="cpu"))
        except ConfigError as e:
            raise ConfigError(f"{where}: {task_slug(spec)} {setting} seed {seed}: {e}") from None
        unseeded = fingerprint(spec, {**cfg.to_dict(), "seed": None})
        if settings.setdefault((task_slug(spec), setting), unseeded) != unseeded:
            raise ConfigError(
                f"{where}: the setting {setting} of {task_slug(spec)} has two configurations (different options for "
                "different seeds); give one of the blocks a 'label' so that each setting is one configuration"
            )
        fp = fingerprint(spec, cfg.to_dict())
        out = root / task_slug(spec) / _safe(setting) / f"seed{seed}"
        run = SweepRun(spec, method, seed, {**opts, "reward_calls": reward_calls}, _safe(setting), out, cfg)
        if out in runs:  # the same run listed twice (one setting is one configuration, checked above)
            continue
        if fp in by_fingerprint:
            continue
        by_fingerprint.add(fp)
        runs[out] = run
    return list(runs.values())


# ---- planning -------------------------------------------------------------------------------------------
def locate(run: SweepRun, record: Path | None = None) -> tuple[Path, str, dict[str, Any] | None, str]:
    """The directory of ``run`` and what to do there: its usual folder, or ``seed<S>-<fingerprint>`` next to
    it when the usual one holds a run of another config (kept, never overwritten). A run that has not
    finished there but has a record of its config under ``record`` (its usual record folder, or a
    ``seed<S>-*`` one next to it) is reused from the record. Returns (dir, action, summary of a finished
    run, note)."""
    found = _locate_in(run, run.out)
    if found[1] == "reuse" or record is None:
        return found
    with contextlib.suppress(ConfigError, DataError):
        path, action, summary, _ = _locate_in(run, record)
        if action == "reuse" and is_record(path):
            return path, action, summary, f"finished earlier; its record in {path} is reused"
    return found


def _locate_in(run: SweepRun, usual: Path) -> tuple[Path, str, dict[str, Any] | None, str]:
    assert run.cfg is not None
    try:
        action, summary = plan_run(run.task, run.cfg, usual)
        return usual, action, summary, ""
    except ConfigError as e:
        if "different configuration" not in str(e):
            raise
        fp = fingerprint(run.task, run.cfg.to_dict())
        changed = re.search(r"different configuration \((.*)\); use another", str(e))
        alt = usual.with_name(f"{usual.name}-{fp[:8]}")
        for sibling in sorted(usual.parent.glob(f"{usual.name}-*")):  # named when some options did not exist
            if sibling != alt and (sibling / "config.json").is_file():
                with contextlib.suppress(ConfigError):
                    plan_run(run.task, run.cfg, sibling)
                    alt = sibling
                    break
        action, summary = plan_run(run.task, run.cfg, alt)
        what = f" ({changed.group(1)})" if changed else ""
        return alt, action, summary, f"the config changed{what}, so this is a new run (the one in {usual} is kept)"


# ---- progress -------------------------------------------------------------------------------------------
def eta_seconds(runs: list[_Run], parallel: int) -> float | None:
    """Seconds until the unfinished runs are done, ``parallel`` at a time: each is expected to take the mean
    training time of the finished runs (this invocation's and earlier ones) of its task and setting, else of
    its task, else of all; None before any run with a known time has finished."""
    done = [
        (r.method, float(r.summary["wall_s"])) for r in runs if isinstance((r.summary or {}).get("wall_s"), int | float)
    ]
    pending = [r for r in runs if r.summary is None and r.error is None]
    if not done or not pending:
        return None
    by_setting: dict[str, list[float]] = {}
    by_task: dict[str, list[float]] = {}
    for method, seconds in done:
        by_setting.setdefault(method, []).append(seconds)
        by_task.setdefault(method.split(" ")[0], []).append(seconds)
    every = [seconds for _, seconds in done]
    expected = 0.0
    for r in pending:
        times = by_setting.get(r.method) or by_task.get(r.method.split(" ")[0]) or every
        expected += sum(times) / len(times)
    return expected / max(1, min(parallel, len(pending)))


class _Progress:
    """One bar of runs done / total with an ETA on a terminal (tqdm), plain lines with the ETA otherwise. The
    ETA comes from the training times of finished runs of the same setting (``eta_seconds``) when ``runs`` are
    given, else from this invocation's throughput."""

    def __init__(
        self,
        total: int,
        done: int,
        log: Log | None,
        bar: bool,
        name: str,
        runs: list[_Run] | None = None,
        parallel: int = 1,
    ):
        self.total, self.done, self.log = total, done, log
        self.runs, self.parallel = runs, parallel
        self.t0, self.finished_here = time.monotonic(), 0
        self.bar = None
        if bar and log is None and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, unit="run", desc=name, dynamic_ncols=True)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif self.log is not None:
            self.log(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def advance(self, text: str, trained: bool = True) -> None:
        """One run ended (``trained``: it trained to its end here, so it counts for the ETA's throughput)."""
        self.done += 1
        self.finished_here += trained
        if self.bar is not None:
            self.bar.update(1)
            self.line(text)
            return
        left = self.total - self.done
        eta = ""
        expected = eta_seconds(self.runs, self.parallel) if self.runs is not None and left else None
        if expected is not None:
            eta = f", ETA {_duration(expected)}"
        elif left and self.finished_here:  # the throughput so far, parallel runs included
            eta = f", ETA {_duration((time.monotonic() - self.t0) / self.finished_here * left)}"
        self.line(f"{text} [{self.done}/{self.total} done{eta}]")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ---- executors ------------------------------------------------------------------------------------------
Finish = Callable[[_Run, tuple[str, Any]], None]


def ray_train(task: dict[str, Any], cfg: TrainConfig, out: str, action: str, threads: int) -> tuple[str, Any]:
    """The body of a Ray task: train one planned run, return ("ok", summary) or ("error", message)."""
    try:
        return ("ok", _execute(task, cfg, out, action, threads))
    except KeyboardInterrupt:  # ray.cancel: the run kept its checkpoint
        return ("interrupted", None)
    except Exception as e:
        if isinstance(e, AdaptiveTeacherError):
            return ("error", _one_line(e))
        # The worker's stderr stays on its node: send where it failed along with the message.
        frame = traceback.extract_tb(e.__traceback__)[-1]
        return ("error", f"{_one_line(e)} (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs the 'ray' package: pip install 'adaptive-teacher[ray]' (or run with --executor local)"
        ) from None
    return ray


def _check_ray_resources(ray: Any, threads: int, gpu: bool) -> None:
    """A task that no node of the cluster can hold would wait forever: refuse it with the numbers."""
    with contextlib.suppress(AttributeError, TypeError):
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
        if not nodes:
            return
        cpus = max(float(n.get("CPU", 0)) for n in nodes)
        if threads > cpus:
            raise ConfigError(
                f"--threads {threads}: every run asks Ray for {threads} CPUs, but the largest node has {cpus:g}; "
                "lower --threads"
            )
        if gpu and not any(float(n.get("GPU", 0)) >= 1 for n in nodes):
            raise ConfigError("runs with device cuda ask Ray for a GPU, but no node of the cluster has one")


def _run_ray(
    todo: list[_Run], total: int, threads: int, address: str | None, progress: _Progress, finish: Finish
) -> None:
    ray = _import_ray()
    from adaptive_teacher.biochem import DATA_ENV_VAR, default_data_dir

    env_vars = {DATA_ENV_VAR: str(Path(default_data_dir()).resolve())}
    env_vars.update({k: v for k, v in os.environ.items() if k.startswith("WANDB_")})  # the trackers as here
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = available_cores()
        ray.init(runtime_env={"env_vars": env_vars}, **kwargs)
    per_task: dict[Any, Any] = {} if started_here else {"runtime_env": {"env_vars": env_vars}}
    remote = ray.remote(ray_train)
    pending: dict[Any, _Run] = {}
    try:
        _check_ray_resources(ray, threads, any(str(r.cfg.device).startswith("cuda") for r in todo if r.cfg))
        for run in todo:
            assert run.cfg is not None
            gpus = 1 if str(run.cfg.device).startswith("cuda") else 0
            ref = remote.options(num_cpus=threads, num_gpus=gpus, max_retries=0, **per_task).remote(
                run.task, run.cfg, str(run.out.resolve()), run.action, threads
            )
            pending[ref] = run
            progress.line(
                f"[{run.index}/{total}] {run.name}: queued on Ray ({_start_text(run)}; {threads} CPU, {gpus} GPU)"
            )
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                run = pending.pop(ref)
                try:
                    message = ray.get(ref)
                except Exception as e:  # the task's worker died, or Ray failed
                    message = ("error", f"the Ray task failed ({_one_line(e)}); its checkpoint is kept in {run.out}")
                finish(run, message)
    except KeyboardInterrupt:
        with _signals({signal.SIGINT: signal.SIG_IGN}):
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            deadline = time.monotonic() + STOP_GRACE_S
            while pending and time.monotonic() < deadline:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
                for ref in ready:
                    run = pending.pop(ref)
                    with contextlib.suppress(Exception):
                        finish(run, ray.get(ref))  # finished, or interrupted with its checkpoint kept
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


# ---- the sweep ------------------------------------------------------------------------------------------
def run_sweep(
    sweep: Sweep,
    jobs: int = 1,
    threads: int | None = None,
    executor: str = "local",
    address: str | None = None,
    *,
    log: Log | None = None,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    """Run every run of ``sweep`` that has not finished; returns one record per run (its directory, status,
    summary). ``log`` gets the progress lines (default: a bar on a terminal, lines on stderr otherwise).
    Raises RunsFailed when runs failed (the others finish regardless) and RunInterrupted on Ctrl-C."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)} (got {executor!r})")
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1 (got {jobs})")
    cores = available_cores()
    if threads is None:  # local: share the cores; Ray: one CPU per task (nodes may be smaller than this one)
        threads = max(1, cores // jobs) if executor == "local" else 1
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1 (got {threads})")
    if executor == "local" and jobs * threads > cores:
        raise ConfigError(
            f"--jobs {jobs} × --threads {threads} = {jobs * threads} torch threads on {cores} cores; lower "
            "--jobs or --threads so that their product is at most the number of cores"
        )
    if executor == "ray":
        _import_ray()
    total = len(sweep.runs)
    runs = [_Run(i + 1, r.setting, r.seed, r.out, cfg=r.cfg, task=r.task) for i, r in enumerate(sweep.runs)]
    for run, spec in zip(runs, sweep.runs, strict=True):
        run.cfg.threads = threads  # type: ignore[union-attr]
        run.method = f"{task_slug(spec.task)} {spec.setting}"
    records: dict[int, dict[str, Any]] = {}
    todo: list[_Run] = []
    lines: list[str] = []
    for run in runs:
        try:
            spec = _spec_of(sweep, run)
            run.out, run.action, summary, note = locate(spec, sweep.record_dir(spec.out))
        except AdaptiveTeacherError as e:
            run.error = _one_line(e)
            lines.append(f"{run.name}: FAILED: {run.error}")
            continue
        if note:
            lines.append(f"{run.name}: {note}")
        if run.action == "reuse":
            run.summary = summary
            lines.append(f"{run.name}: reused ({run.out}, trained {_seconds(summary or {})})")
            if not dry_run:
                lines.extend(_keep_record(sweep, run))
        else:
            todo.append(run)
            if dry_run:
                lines.append(f"{run.name}: would {_DRY_VERB.get(run.action, run.action)} in {run.out}")
    n_reused = sum(r.summary is not None for r in runs)
    n_failed = sum(r.error is not None for r in runs)
    progress = _Progress(
        total,
        n_reused + n_failed,
        log,
        bar=not dry_run,
        name=sweep.name,
        runs=runs if executor == "local" else None,  # a Ray cluster's parallelism is not known here
        parallel=jobs,
    )
    for line in lines:
        progress.line(line)
    progress.line(
        f"sweep {sweep.name}: {total} runs"
        + (f" (--only {' '.join(sweep.only)})" if sweep.only else "")
        + f", {n_reused} finished earlier, {len(todo)} to run"
        + (f", {n_failed} refused" if n_failed else "")
        + ("" if dry_run else f" ({executor}, {jobs if executor == 'local' else 'Ray'} × {threads} threads)")
    )

    def finish(run: _Run, message: tuple[str, Any]) -> None:
        kind, value = message
        if kind == "ok":
            run.summary = value
            metrics = _key_metrics(value)
            progress.advance(f"{run.name}: finished in {_seconds(value)}" + (f" ({metrics})" if metrics else ""))
            for line in _keep_record(sweep, run):
                progress.line(line)
        elif kind == "interrupted":
            run.error = f"interrupted; its checkpoint is kept in {run.out}; run the same sweep command to continue"
            progress.advance(f"{run.name}: {run.error}", trained=False)
        else:
            run.error = value
            progress.advance(f"{run.name}: FAILED: {value}", trained=False)

    if dry_run:  # write nothing
        progress.close()
        refused = [r for r in runs if r.error is not None]
        if refused:
            raise RunsFailed(f"{len(refused)} of {total} runs would be refused (see above)")
        return [_record(run) for run in runs]
    sweep.out.mkdir(parents=True, exist_ok=True)
    try:
        if todo:
            if executor == "ray":
                _run_ray(todo, total, threads, address, progress, finish)
            elif jobs > 1 and len(todo) > 1:
                run_in_pool(todo, total, jobs, progress.line, finish, again="sweep command")
            else:
                run_in_process(todo, total, threads, progress.line, finish)
    except KeyboardInterrupt:
        n_done = sum(r.summary is not None for r in runs)
        raise RunInterrupted(
            f"sweep interrupted: {n_done} of {total} runs finished; the others keep their checkpoints under "
            f"{sweep.out}; run the same sweep command again to continue them (finished runs are reused)"
        ) from None
    finally:
        progress.close()
        for run in runs:
            records[run.index] = _record(run)
        _write_sweep_file(sweep, [records[i] for i in sorted(records)], executor, threads)
    result = [records[i] for i in sorted(records)]
    failed = [r for r in runs if r.summary is None]
    if failed:
        lines = [f"{len(failed)} of {total} runs failed:"]
        lines += [f"  {r.name} ({r.out}): {r.error or 'did not finish'}" for r in failed]
        raise RunsFailed("\n".join(lines))
    return result


_DRY_VERB = {"start": "start", "restart": "start again (no checkpoint)", "resume": "resume from its checkpoint"}


def _keep_record(sweep: Sweep, run: _Run) -> list[str]:
    """Copy a finished run under ``out`` to its record folder, found by configuration as a run folder is (the
    usual one, or ``seed<S>-<fingerprint>`` beside a record of another config); nothing for a run read from
    a record or already recorded. Returns the lines to show; a failure is reported, never fatal."""

    if sweep.records is None or not run.out.resolve().is_relative_to(sweep.out.resolve()):
        return []
    spec = _spec_of(sweep, run)
    try:
        record, action, _, _ = _locate_in(spec, sweep.record_dir(spec.out))  # type: ignore[arg-type]
        if action == "reuse" and is_record(record):
            return []
        if write_record(run.out, record) == "written":
            return [f"{run.name}: recorded in {record}"]
    except (ConfigError, DataError, OSError) as e:
        return [f"{run.name}: not recorded: {_one_line(e)}"]
    return []


def _spec_of(sweep: Sweep, run: _Run) -> SweepRun:
    return sweep.runs[run.index - 1]


def _record(run: _Run) -> dict[str, Any]:
    status = "finished" if run.summary is not None else ("failed" if run.error else "not run")
    return {"run": run.name, "dir": str(run.out), "status": status, "error": run.error, "summary": run.summary}


def _write_sweep_file(sweep: Sweep, records: list[dict[str, Any]], executor: str, threads: int) -> None:
    """OUT/sweep-<name>.json: every run's directory and how it ended. A sweep run with ``--only`` updates the
    entries of its runs and keeps the others from the last record."""
    path = sweep.out / SWEEP_FILE.format(name=_safe(sweep.name))
    runs = [{k: v for k, v in r.items() if k != "summary"} for r in records]
    if sweep.only and path.exists():
        try:
            earlier = json.loads(path.read_text()).get("runs", [])
        except (OSError, ValueError, AttributeError):
            earlier = []
        mine = {r["dir"]: r for r in runs}
        merged = [mine.pop(r["dir"], r) for r in earlier if isinstance(r, dict) and "dir" in r]
        runs = merged + list(mine.values())
    write_json(
        path,
        {
            "name": sweep.name,
            "spec": None if sweep.source is None else str(sweep.source),
            "executor": executor,
            "threads_per_run": threads,
            "only": list(sweep.only),
            "runs": runs,
        },
    )
