"""Run several methods × seeds (in parallel processes) and write results.csv, results.md and a plot.

Each run lives in ``out/<method>/seed<S>``. A directory is reused only for the identical configuration
(the fingerprint of the task and of the resolved config): a finished run is read back, an interrupted one
continues from its checkpoint, and a run of another configuration is refused (never silently mixed into
the table). Runs that fail (a NaN loss, a worker killed) are reported after the table of the others.

With ``jobs`` > 1 every run is its own process (spawned, at most ``jobs`` at a time). Ctrl-C stops them
all within seconds: the workers keep their checkpoints, and the same command continues them. A worker
whose parent disappears interrupts itself, so no run keeps going unattended.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from adaptive_teacher.config import TrainConfig, comparable_config, resolve_config, validate
from adaptive_teacher.errors import AdaptiveTeacherError, ConfigError, RunInterrupted, RunsFailed, option
from adaptive_teacher.families import family_of_task
from adaptive_teacher.run_dir import (
    CHECKPOINT,
    CONFIG,
    PREVIOUS_CHECKPOINT,
    config_differences,
    exclusive,
    fingerprint,
    is_run_dir,
    prepare_out_dir,
    read_config,
    read_metrics,
    read_summary,
)

# Columns of every family: (summary key, results.csv name, column title). ``wall_s`` is the time spent in
# training steps (evaluations excluded), hence "train s".
BUDGET_COLUMNS = [
    ("reward_calls", "reward_calls", "reward calls"),
    ("step", "step", "iterations"),
    ("wall_s", "train_s", "train s"),
]
BUDGETS = ("reward_calls", "step")  # the same for every seed, normally: shown once when they agree
ONE_DECIMAL = ("modes_found", "reward_calls", "step", "wall_s")  # counts and seconds
# Seconds a worker has to stop after Ctrl-C before it is terminated; and, once its parent is gone, before
# it exits regardless.
STOP_GRACE_S = 10.0
ORPHAN_GRACE_S = 15.0
PARENT_POLL_S = 0.5

Log = Callable[[str], None]


def _family(task: dict[str, Any]) -> str:
    return family_of_task(task).name


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(e, AdaptiveTeacherError):
        return text or type(e).__name__
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# ---- one run --------------------------------------------------------------------------------------------
@dataclass
class _Run:
    index: int  # 1-based position among the runs, for the progress lines
    method: str
    seed: int
    out: Path
    cfg: TrainConfig | None = None
    task: dict[str, Any] | None = None  # its canonical task spec (a sweep mixes tasks)
    action: str = ""  # "reuse" | "resume" | "start" | "restart"
    summary: dict[str, Any] | None = None
    error: str | None = None
    pid: int | None = None

    @property
    def name(self) -> str:
        return f"{self.method} seed {self.seed}"


def run_config(
    task: dict[str, Any], method: str, seed: int, reward_calls: int | None, threads: int, options: dict[str, Any]
) -> TrainConfig:
    """The config compare trains ``method`` with (the same for a new run and for the reuse check)."""
    budget = {} if reward_calls is None else {"reward_calls": reward_calls}
    return resolve_config(method, _family(task), task, seed=seed, progress=False, threads=threads, **budget, **options)


def plan_run(task: dict[str, Any], cfg: TrainConfig, out: str | Path) -> tuple[str, dict[str, Any] | None]:
    """What to do with run directory ``out`` for this task and config: ``("reuse", summary)`` for a finished
    run of the identical config, ``("resume", None)`` for an unfinished one with a checkpoint,
    ``("restart", None)`` for one that died before its first checkpoint, ``("start", None)`` for an empty
    directory. A directory holding a run of another config is a ConfigError that lists the differences. A run
    written before some config fields existed, or differing only in inert options, is the same run
    (``config.comparable_config``)."""
    out = Path(out)
    want = fingerprint(task, cfg.to_dict())
    if not is_run_dir(out):
        return "start", None
    summary = read_summary(out)
    if summary is not None and summary.get("fingerprint") == want:
        return "reuse", summary
    if not (out / CONFIG).exists():
        raise ConfigError(
            f"{out} holds files of a run but no {CONFIG}, so its configuration is unknown; "
            f"use another {option('out')} directory for this comparison or delete {out}"
        )
    saved = read_config(out)
    if saved["fingerprint"] != want and _same_run(saved, task, cfg):
        if summary is not None and summary.get("fingerprint") == saved["fingerprint"]:
            return "reuse", summary
    elif saved["fingerprint"] != want:
        diffs = config_differences(saved["config"], cfg.to_dict())
        if saved["task"] != task:
            diffs.insert(0, f"task: {json.dumps(saved['task'])} → {json.dumps(task)}")
        what = "; ".join(diffs) if diffs else "its fingerprint differs"
        hint = ""
        budget = ("reward_calls", "iterations")
        if diffs and all(d.split(":", 1)[0] in budget for d in diffs):
            flag = "--iterations" if cfg.iterations is not None else "--reward-calls"
            hint = f" (or extend it first: 'adaptive-teacher train --resume {out} {flag} N')"
        raise ConfigError(
            f"{out} holds a run of a different configuration ({what}); use another {option('out')} directory "
            f"for this comparison or delete {out} to redo the run{hint}"
        )
    if (out / CHECKPOINT).exists() or (out / PREVIOUS_CHECKPOINT).exists():
        return "resume", None
    return "restart", None


def _same_run(saved: dict[str, Any], task: dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether a run's config.json describes the run ``cfg`` would train, though its fingerprint differs: it
    was written before some fields existed, or differs only in options that are inert for it
    (``config.comparable_config``)."""
    if saved["task"] != task:
        return False
    return fingerprint(task, comparable_config(saved["config"])) == fingerprint(task, comparable_config(cfg.to_dict()))


def _execute(task: dict[str, Any], cfg: TrainConfig, out: str, action: str, threads: int) -> dict[str, Any]:
    """Train one planned run (``resume``, ``start`` or ``restart``) and return its summary."""
    import torch

    from adaptive_teacher.tasks import make_task
    from adaptive_teacher.trainer import Trainer

    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)  # also while the task and the trainer are built
    try:
        with exclusive(out):
            # Planned before the lock: another process (a sweep sharing the folder) may have run it since.
            action, summary = plan_run(task, cfg, out)
            if action == "reuse":
                assert summary is not None
                return summary
            if action == "resume":
                trainer = Trainer.resume(out, device=cfg.device)
                trainer.cfg.progress = False  # none is fingerprinted: the run stays the same run
                trainer.cfg.threads = threads
                trainer.cfg.log = cfg.log  # the trackers this command asks for
                return trainer.train()
            if action == "restart":  # the config matches but the run died before its first checkpoint
                prepare_out_dir(out, overwrite=True)
            return Trainer(make_task(task), cfg, out).train()
    finally:
        torch.set_num_threads(threads_before)


def run_in_process(
    todo: list[_Run], total: int, threads: int, log: Log, finish: Callable[[_Run, tuple[str, Any]], None]
) -> None:
    """Train the planned runs one after the other in this process; ``finish(run, message)`` gets each result.
    A failed run is reported and the next one starts; Ctrl-C (a KeyboardInterrupt) stops them all."""
    with _signals({signal.SIGTERM: _sigterm_as_interrupt}):  # `kill PID` stops like Ctrl-C, keeping the checkpoint
        _run_each(todo, total, threads, log, finish)


def _run_each(todo: list[_Run], total: int, threads: int, log: Log, finish: Callable[[_Run, tuple[str, Any]], None]):
    for run in todo:
        assert run.cfg is not None and run.task is not None
        log(f"[{run.index}/{total}] {run.name}: {_start_text(run)}")
        try:
            summary = _execute(run.task, run.cfg, str(run.out), run.action, threads)
        except Exception as e:  # KeyboardInterrupt is no Exception
            if not isinstance(e, AdaptiveTeacherError):
                traceback.print_exc()
            finish(run, ("error", _one_line(e)))
        else:
            finish(run, ("ok", summary))


# ---- worker processes -----------------------------------------------------------------------------------
def _interrupt_once(signum: int, frame: Any) -> None:
    """SIGINT handler of a worker: the first one interrupts the run, later ones (the terminal's and the
    parent's) are ignored so that the run can save and report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _watch_parent(parent_pid: int) -> None:
    """Daemon thread of a worker: once the parent is gone, interrupt the run (it keeps its checkpoint) and,
    should it not stop within ORPHAN_GRACE_S, exit anyway."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(ORPHAN_GRACE_S)
    os._exit(3)


def _worker(conn: Connection, parent_pid: int, task: dict[str, Any], cfg: TrainConfig, out: str, action: str) -> None:
    signal.signal(signal.SIGINT, _interrupt_once)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    try:
        message: tuple[str, Any] = ("ok", _execute(task, cfg, out, action, cfg.threads or 1))
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        message = ("interrupted", None)
    except Exception as e:
        if not isinstance(e, AdaptiveTeacherError):
            traceback.print_exc()
        message = ("error", _one_line(e))
    try:
        conn.send(message)
    except Exception as e:  # an unpicklable summary, or the parent is gone
        with contextlib.suppress(Exception):
            conn.send(("error", f"could not send the result back: {_one_line(e)}"))
    finally:
        conn.close()


@contextlib.contextmanager
def _signals(handlers: dict[int, Any]) -> Iterator[None]:
    """Install signal handlers for the block (only possible, and only done, in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Keep spawn from re-running the caller's ``__main__`` (a script, stdin, ``-m adaptive_teacher.cli``) in
    every worker: the workers need nothing from it, and a script without an ``if __name__ == "__main__"``
    guard would otherwise start its comparison again in each of them."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    missing = object()
    saved = {k: main.__dict__.get(k, missing) for k in ("__file__", "__spec__")}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is missing:
                main.__dict__.pop(k, None)
            else:
                main.__dict__[k] = v


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class _Pool:
    """At most ``jobs`` worker processes (spawned), one per run; each sends back one message on its pipe.
    ``again`` names the command that continues an interrupted run (in the messages)."""

    def __init__(
        self, jobs: int, log: Log, finish: Callable[[_Run, tuple[str, Any]], None], again: str = "compare command"
    ):
        self.jobs, self.log, self.finish, self.again = jobs, log, finish, again
        self.ctx = multiprocessing.get_context("spawn")
        self.running: dict[Connection, tuple[_Run, Any]] = {}
        self.started: list[Any] = []

    def run(self, runs: list[_Run], total: int) -> None:
        pending = list(runs)
        while pending or self.running:
            while pending and len(self.running) < self.jobs:
                self._start(pending.pop(0), total)
            for reader in wait(list(self.running), timeout=1.0):
                self._collect(reader)  # type: ignore[arg-type]

    def _start(self, run: _Run, total: int) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=_worker,
            args=(writer, os.getpid(), run.task, run.cfg, str(run.out), run.action),
            name=f"adaptive-teacher {run.method} seed{run.seed}",
            daemon=True,  # a parent that exits normally also ends its workers
        )
        self.started.append(proc)
        with _main_module_hidden():
            proc.start()
        writer.close()
        run.pid = proc.pid
        self.running[reader] = (run, proc)
        self.log(f"[{run.index}/{total}] {run.name}: {_start_text(run)} (pid {proc.pid})")

    def _collect(self, reader: Connection, join_s: float = 10.0) -> None:
        run, proc = self.running.pop(reader)
        message: tuple[str, Any] | None = None
        with contextlib.suppress(EOFError, OSError):
            message = reader.recv()
        reader.close()
        proc.join(join_s)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        if message is None:
            message = (
                "error",
                f"the worker process (pid {proc.pid}) died without a result ({_exit_text(proc.exitcode)}; killed or "
                f"out of memory?); its last checkpoint and metrics are kept in {run.out}; run the same "
                f"{self.again} again to continue it",
            )
        self.finish(run, message)

    def stop(self) -> None:
        """After Ctrl-C: interrupt every worker, wait up to STOP_GRACE_S, then terminate and kill the rest.
        Further Ctrl-C are ignored meanwhile, so the bounded cleanup is never cut short."""
        finish = self.finish
        self.finish = lambda run, message: finish(run, message) if message[0] == "ok" else None
        started = [p for p in self.started if p.pid is not None]
        with _signals({signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: signal.SIG_IGN}):
            deadline = time.monotonic() + STOP_GRACE_S
            # Workers that got the terminal's SIGINT themselves get a moment to stop before a second one.
            self._drain(time.monotonic() + 1.0)
            for proc in started:
                if proc.is_alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGINT)
            self._drain(deadline)
            for proc in started:
                if proc.is_alive():
                    proc.terminate()
            for proc in started:
                proc.join(2.0)
                if proc.is_alive():
                    proc.kill()
                    proc.join(2.0)
            for reader in list(self.running):
                self.running.pop(reader)
                reader.close()

    def _drain(self, until: float) -> None:
        while self.running and time.monotonic() < until:
            for reader in wait(list(self.running), timeout=max(0.0, min(0.5, until - time.monotonic()))):
                with contextlib.suppress(Exception):
                    self._collect(reader, join_s=max(0.1, until - time.monotonic()))  # type: ignore[arg-type]


def run_in_pool(
    todo: list[_Run],
    total: int,
    jobs: int,
    log: Log,
    finish: Callable[[_Run, tuple[str, Any]], None],
    again: str = "compare command",
) -> None:
    """Train the planned runs in at most ``jobs`` worker processes; Ctrl-C or SIGTERM stops every worker
    (each keeps its checkpoint) before the interrupt goes on."""
    pool = _Pool(jobs, log, finish, again=again)
    try:
        with _signals({signal.SIGTERM: _sigterm_as_interrupt}):
            pool.run(todo, total)
    except KeyboardInterrupt:
        pool.stop()
        raise


# ---- progress lines -------------------------------------------------------------------------------------
def _start_text(run: _Run) -> str:
    if run.action == "resume":
        rows = read_metrics(run.out)
        where = f" (step {rows[-1].get('step')}, {rows[-1].get('reward_calls')} reward calls)" if rows else ""
        return f"resuming {run.out} from its checkpoint{where}"
    if run.action == "restart":
        return f"starting {run.out} again (it stopped before its first checkpoint)"
    return f"starting in {run.out}"


def _num(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _key_metrics(summary: dict[str, Any]) -> str:
    parts = []
    if summary.get("modes_found") is not None:
        n = summary.get("n_modes")
        parts.append(f"modes {summary['modes_found']}" + (f"/{n}" if n is not None else ""))
    for key, label in (("l1", "L1"), ("delta_log_Z_elbo", "Δlog Z (ELBO)"), ("eubo", "EUBO")):
        if summary.get(key) is not None:
            parts.append(f"{label} {_num(summary[key])}")
    return ", ".join(parts)


def _seconds(summary: dict[str, Any]) -> str:
    s = summary.get("wall_s")
    return f"{s:.1f} s" if isinstance(s, int | float) else "? s"


# ---- the table ------------------------------------------------------------------------------------------
def _fmt_mean(v: float, one_decimal: bool = False) -> str:
    if one_decimal:
        return f"{v:.1f}"
    return f"{v:.2e}" if 0 < abs(v) < 0.01 else f"{v:.{1 if abs(v) >= 10 else 3}f}"


def _fmt_std(std: float, mean: float, one_decimal: bool = False) -> str:
    if one_decimal:
        return f"{std:.1f}"
    return f"{std:.1e}" if 0 < abs(mean) < 0.01 else f"{std:.{1 if abs(mean) >= 10 else 3}f}"


def _fmt(values: list[Any], budget: bool = False, one_decimal: bool = False) -> str:
    """Mean ± sample std over seeds; a value alone with one seed (never "± 0" for a single run), and for a
    budget column whose runs all agree. ``one_decimal`` for counts and seconds."""
    vals = [float(v) for v in values if isinstance(v, int | float) and not math.isnan(v)]
    if not vals:
        return "–"
    if len(vals) == 1 or (budget and min(vals) == max(vals)):
        v = vals[0]
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else _fmt_mean(v, one_decimal)
    mean = statistics.fmean(vals)
    return f"{_fmt_mean(mean, one_decimal)} ± {_fmt_std(statistics.stdev(vals), mean, one_decimal)}"


def budget_text(cfg: TrainConfig) -> str:
    return f"{cfg.iterations} iterations" if cfg.iterations is not None else f"{cfg.reward_calls} reward calls"


def _seed_text(seeds: list[int]) -> str:
    listed = ", ".join(map(str, seeds))
    return f"seed {listed} (1 seed)" if len(seeds) == 1 else f"seeds {listed} ({len(seeds)} seeds)"


def format_table(
    task: dict[str, Any],
    methods: list[str],
    seeds: list[int],
    rows: list[dict[str, Any]],
    budget: str,
    n_modes: int | None = None,
    log_Z_true: float | None = None,
) -> str:
    """The markdown table of results.md: one line per method, cells mean ± std over the seeds that
    finished (a value alone with one seed). ``rows`` are the results.csv rows (method, seed, metrics)."""
    columns = [(k, k, t) for k, t in family_of_task(task).columns] + BUDGET_COLUMNS
    header = f"Task {json.dumps(task)}: {budget} per run, {_seed_text(seeds)}. "
    if len(seeds) > 1:
        header += "Each cell is the mean ± std (sample standard deviation) over the seeds; "
    else:
        header += "Each cell is the value of the single run; "
    header += "train s is the time spent training (evaluations excluded). "
    if n_modes is not None:
        header += f"{n_modes} modes in total."
    elif log_Z_true is not None:
        header += f"Exact log Z {log_Z_true:.4f}."
    else:
        header += "The exact log Z is unknown."
    lines = [
        header,
        "",
        "| method | " + " | ".join(title for _, _, title in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        if not sel:
            continue
        label = m if len(sel) == len(seeds) else f"{m} ({len(sel)} of {len(seeds)} seeds)"
        cells = [
            _fmt([r.get(name) for r in sel], budget=key in BUDGETS, one_decimal=key in ONE_DECIMAL)
            for key, name, _ in columns
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _task_label(task: dict[str, Any]) -> str:
    params = " ".join(f"{k}={v}" for k, v in task.items() if k != "name" and v is not None)
    return f"{task.get('name')} {params}".strip()


def _write_results(
    task: dict[str, Any], methods: list[str], seeds: list[int], done: list[_Run], out: Path, cfg: TrainConfig
) -> str:
    family = family_of_task(task)
    keys = [k for k, _ in family.columns]
    rows = []
    for r in done:
        assert r.summary is not None
        row = {"method": r.method, "seed": r.seed}
        row.update({name: r.summary.get(key) for key, name, _ in BUDGET_COLUMNS})
        row.update({k: r.summary.get(k) for k in keys})
        row["run_dir"] = str(r.out)
        rows.append(row)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summaries = [r.summary for r in done if r.summary is not None]
    n_modes = next((s["n_modes"] for s in summaries if s.get("n_modes") is not None), None)
    log_Z_true = next((s["log_Z_true"] for s in summaries if s.get("log_Z_true") is not None), None)
    budget = budget_text(cfg)
    table = format_table(task, methods, seeds, rows, budget, n_modes, log_Z_true)
    (out / "results.md").write_text(table)

    from adaptive_teacher.plots import plot_metric_vs_reward_calls

    finished = {m: [r.seed for r in done if r.method == m] for m in methods}
    context = f"{_task_label(task)}, {budget} per run, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    x = "step" if cfg.iterations is not None else "reward_calls"
    if family.summary_metric == "modes_found":
        from adaptive_teacher.tasks import perfect_sampler_modes

        calls = max((float(s.get("reward_calls") or 0) for s in summaries), default=0.0)
        perfect = perfect_sampler_modes(task, calls) if x == "reward_calls" else None
        plot_metric_vs_reward_calls(
            out,
            methods,
            finished,
            "modes_found",
            out / "modes_vs_reward_calls.png",
            "Modes found" + (f" (of {n_modes})" if n_modes is not None else "") + f"\n{context}",
            x=x,
            low=0.0,
            high=None if n_modes is None else float(n_modes),
            reference=None if n_modes is None else float(n_modes),
            reference_label=f"all {n_modes} modes",
            ylabel="modes found",
            reference_curve=perfect,
        )
    else:
        plot_metric_vs_reward_calls(
            out,
            methods,
            finished,
            "eubo",
            out / "eubo_vs_reward_calls.png",
            f"EUBO (an upper bound on log Z; closer to log Z is better)\n{context}",
            x=x,
            reference=log_Z_true,
            reference_label=None if log_Z_true is None else f"true log Z = {log_Z_true:.3f}",
            ylabel="EUBO (nats)",
        )
    return table


# ---- compare --------------------------------------------------------------------------------------------
def compare(
    task: dict[str, Any],
    methods: list[str],
    seeds: list[int],
    reward_calls: int | None,
    out: str | Path,
    jobs: int = 1,
    threads: int = 1,
    *,
    log: Log | None = None,
    **options: Any,
) -> str:
    """Train every method × seed (``jobs`` processes at a time, ``threads`` torch threads each) and return
    the markdown table; results.csv, results.md and the plot go to ``out``.

    ``log`` gets one progress line per run as it is reused, resumed or started and as it ends (default:
    stderr). Raises RunsFailed (with the table of the runs that finished, which is also written) when a run
    failed, and RunInterrupted on Ctrl-C once every worker has stopped and kept its checkpoint.
    """
    from adaptive_teacher.tasks import make_task, task_spec

    log = log or _stderr
    task = task_spec(make_task(task))  # canonical spec: the one the runs' config.json records
    out = Path(out)
    pairs = [(m, s) for m in methods for s in seeds]
    runs = [_Run(i + 1, m, s, out / m / f"seed{s}", task=task) for i, (m, s) in enumerate(pairs)]
    if not runs:
        raise ConfigError(f"give at least one method and one seed (got methods {methods}, seeds {seeds})")
    for run in runs:  # fail fast on a bad method or option, before anything runs
        run.cfg = run_config(task, run.method, run.seed, reward_calls, threads, options)
        validate(run.cfg)
    out.mkdir(parents=True, exist_ok=True)
    total = len(runs)

    def finish(run: _Run, message: tuple[str, Any]) -> None:
        kind, value = message
        prefix = f"[{run.index}/{total}] {run.name}"
        if kind == "ok":
            run.summary = value
            metrics = _key_metrics(value)
            log(f"{prefix}: finished in {_seconds(value)}" + (f" ({metrics})" if metrics else ""))
            return
        if kind == "interrupted":  # somebody interrupted this worker alone
            run.error = (
                f"interrupted; its checkpoint and metrics are kept in {run.out}; run the same compare command "
                "again to continue it"
            )
            log(f"{prefix}: {run.error}")
            return
        run.error = value
        log(f"{prefix}: FAILED: {value}")

    todo: list[_Run] = []
    try:
        for run in runs:
            assert run.cfg is not None
            try:
                run.action, summary = plan_run(task, run.cfg, run.out)
            except AdaptiveTeacherError as e:
                finish(run, ("error", _one_line(e)))
                continue
            if run.action == "reuse":
                assert summary is not None
                run.summary = summary
                metrics = _key_metrics(summary)
                log(
                    f"[{run.index}/{total}] {run.name}: reused (finished earlier in {run.out}, trained "
                    f"{_seconds(summary)}" + (f"; {metrics})" if metrics else ")")
                )
            else:
                todo.append(run)
        if jobs > 1 and len(todo) > 1:
            run_in_pool(todo, total, jobs, log, finish)
        else:
            run_in_process(todo, total, threads, log, finish)
    except KeyboardInterrupt:
        n_done = sum(r.summary is not None for r in runs)
        raise RunInterrupted(
            f"compare interrupted: {n_done} of {total} runs finished; the checkpoints and metrics of the others "
            f"are kept under {out}; run the same compare command again to continue them (finished runs are "
            "reused)"
        ) from None

    done = [r for r in runs if r.summary is not None]
    failed = [r for r in runs if r.summary is None]
    assert runs[0].cfg is not None
    table = _write_results(task, methods, seeds, done, out, runs[0].cfg) if done else ""
    if failed:
        where = (
            f"the table of the {len(done)} that finished is in {out / 'results.md'}"
            if done
            else "none finished, so no table was written"
        )
        lines = [f"{len(failed)} of {total} runs failed ({where}):"]
        lines += [f"  {r.method} seed {r.seed} ({r.out}): {r.error}" for r in failed]
        raise RunsFailed("\n".join(lines), table)
    return table
