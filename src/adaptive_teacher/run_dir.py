"""Run directories: what a run writes, how it is identified, and how it is read back safely.

A run directory holds ``config.json`` (the task spec, the resolved config and its fingerprint),
``metrics.jsonl`` (one line per evaluation), ``summary.json`` (only once the run has finished),
``checkpoint.pt`` and the checkpoint before it, ``checkpoint.prev.pt`` (so one damaged file does not lose
the run). A directory belongs to exactly one configuration: its *fingerprint*, the sha256 of the task spec
and of every config field that can change a result (all but ``progress``, ``threads``, ``device`` and ``log``: a
run moved to another device, or mirrored to another experiment tracker, is the same run). The thread count
and the device do change floating-point rounding, so a seed repeats bit for bit only with the same ones
(config.json records both); with others it is another draw of the same configuration (docs/results-strings.md).

Checkpoints are loaded with ``torch.load(weights_only=True)``: tensors and plain containers only, never
arbitrary pickled objects, so opening somebody else's run directory cannot execute code.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pickle
import signal
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from adaptive_teacher import errors
from adaptive_teacher.errors import ConfigError, DataError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
# Files a run writes; ``--overwrite`` removes exactly these (and nothing else a user keeps there).
RUN_FILES = (
    CONFIG,
    METRICS,
    SUMMARY,
    CHECKPOINT,
    PREVIOUS_CHECKPOINT,
    "checkpoint.tmp",
    "samples.png",
    "metrics.png",
    "modes.png",
    "tracking.json",  # the run's wandb id (tracking.py): a replaced run is a new wandb run
)
# Config fields that never change a result: a run that differs only in these is the same run.
NOT_FINGERPRINTED = ("progress", "threads", "device", "log")
CHECKPOINT_KEYS = ("student", "opt_student", "step", "reward_calls", "history", "rng")


BUDGET_FIELDS = ("reward_calls", "iterations")


def machine() -> str:
    """This machine in one line (CPU model, cores, GPUs if CUDA sees any, Python, torch), as a report names it."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpus = ""
    with contextlib.suppress(RuntimeError, AssertionError):
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            gpus = ", GPU " + " + ".join(names)
    return f"{cpu}, {os.cpu_count()} cores{gpus}, Python {platform.python_version()}, torch {torch.__version__}"


@functools.cache
def code_version() -> dict[str, Any]:
    """The library's version and, when it runs from a git checkout, the commit (``+dirty`` with uncommitted
    changes to src/), or from a ``git archive`` of one, its commit, and the machine: recorded in config.json
    (not in the fingerprint) so a result can be traced to its code and hardware."""
    from adaptive_teacher import __version__

    src = Path(__file__).resolve().parent
    commit = None
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if head.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=5
            )
            commit = head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    if commit is None:
        from adaptive_teacher._archive import COMMIT

        if not COMMIT.startswith("$"):
            commit = f"{COMMIT[:12]} (git archive)"
    return {"version": __version__, "commit": commit, "machine": machine()}


def fingerprint(task: dict[str, Any], config: dict[str, Any], ignore: tuple[str, ...] = ()) -> str:
    """sha256 (hex, 16 digits) of the task spec and the result-relevant config fields, canonical JSON
    (``ignore``: further fields to leave out, e.g. BUDGET_FIELDS for the identity of a run whose budget may
    be extended on resume)."""
    relevant = {k: v for k, v in config.items() if k not in NOT_FINGERPRINTED and k not in ignore}
    text = json.dumps({"task": task, "config": relevant}, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable ``key: old → new`` for the result-relevant fields where two configs differ."""
    keys = sorted((set(a) | set(b)) - set(NOT_FINGERPRINTED))
    norm = json.loads  # tuples and lists compare equal after a JSON round trip
    return [
        f"{k}: {a.get(k)!r} → {b.get(k)!r}"
        for k in keys
        if norm(json.dumps(a.get(k), default=list)) != norm(json.dumps(b.get(k), default=list))
    ]


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds (part of) a run: any of its config, metrics, summary or checkpoints."""
    p = Path(path)
    return p.is_dir() and any((p / f).exists() for f in (CONFIG, METRICS, SUMMARY, CHECKPOINT, PREVIOUS_CHECKPOINT))


def prepare_out_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create (or, with ``overwrite``, clear) a run directory and check that it is writable.

    An existing run is never replaced silently: without ``overwrite`` it is a ConfigError that says how to
    continue it (``--resume``) or replace it (``--overwrite``).
    """
    p, option = Path(path), errors.option("out")
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{option} {p}: exists and is not a directory; choose a directory for the run")
    if is_run_dir(p):
        if not overwrite:
            raise ConfigError(
                f"{option} {p} already holds a run; continue it with 'adaptive-teacher train --resume {p}', "
                f"replace it with {errors.option('overwrite')}, or choose another directory"
            )
        for name in RUN_FILES:
            (p / name).unlink(missing_ok=True)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(f"{option} {p}: cannot write the run there ({reason}); choose another directory") from None
    return p


LOCK = ".lock"  # held (flock) by the process that trains in the directory; released when it exits or dies


@contextlib.contextmanager
def exclusive(run: str | Path, create: bool = True) -> Iterator[None]:
    """Hold the run directory's lock for the block: a second process that would train in the same directory
    (two sweeps sharing a folder, a resume while the run still trains) gets a ConfigError instead of writing
    over it. The lock is the kernel's (flock): it never outlives a killed process. A directory that cannot
    hold the lock (missing with ``create=False``, not a directory, not writable) is left to the caller's own
    checks, which name the problem; a directory created here that stays empty is removed again."""
    import fcntl

    p = Path(run)
    created = create and not p.exists()
    try:
        if create:
            p.mkdir(parents=True, exist_ok=True)
        f = open(p / LOCK, "a+")  # noqa: SIM115 - closed below
    except OSError:
        yield
        return
    try:
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "?"
                raise ConfigError(
                    f"{p} is being trained by another process (pid {holder}); wait for it to finish or stop it, "
                    "then run the command again"
                ) from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            try:
                yield
            finally:
                f.seek(0)
                f.truncate()
                fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        if created and [q.name for q in p.iterdir()] == [LOCK]:  # nothing was written there
            with contextlib.suppress(OSError):
                (p / LOCK).unlink()
                p.rmdir()


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file; a missing or invalid file is a DataError that names it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing; this directory does not hold a complete {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(
            f"{path}: not valid JSON ({e}); the {what} is damaged (restore it or start a new run)"
        ) from None


def read_config(run: str | Path) -> dict[str, Any]:
    """``config.json`` of a run: ``{"task": {...}, "config": {...}, "fingerprint": str}``, checked."""
    path = Path(run) / CONFIG
    saved = read_json(path, "run")
    if (
        not isinstance(saved, dict)
        or not isinstance(saved.get("task"), dict)
        or not isinstance(saved.get("config"), dict)
    ):
        raise DataError(
            f"{path}: expected an object with 'task' and 'config' objects; the run configuration is damaged"
        )
    stored = saved.get("fingerprint")
    actual = fingerprint(saved["task"], saved["config"])
    if stored is not None and stored != actual:
        raise DataError(
            f"{path} was edited after the run started (its fingerprint no longer matches); restore it, or change "
            "the budget with 'train --resume DIR --reward-calls N' / '--iterations N' instead of editing the file"
        )
    saved["fingerprint"] = actual
    return saved


def read_summary(run: str | Path) -> dict[str, Any] | None:
    """``summary.json`` of a finished run, or None when the run has not finished."""
    path = Path(run) / SUMMARY
    if not path.exists():
        return None
    summary = read_json(path, "run summary")
    if not isinstance(summary, dict):
        raise DataError(f"{path}: expected a JSON object; the run summary is damaged")
    return summary


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` (empty when absent); a damaged line is skipped."""
    path = Path(run) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if line.strip():
                rows.append(json.loads(line))
    return rows


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block has finished, then raise it: a save is never cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def save_checkpoint(state: dict[str, Any], run: Path) -> None:
    """Write ``checkpoint.pt`` atomically, keeping the one before it as ``checkpoint.prev.pt``."""
    path, prev, tmp = run / CHECKPOINT, run / PREVIOUS_CHECKPOINT, run / "checkpoint.tmp"
    with deferred_interrupt():
        try:
            torch.save(state, tmp)
            if path.exists():
                os.replace(path, prev)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class UnsafeCheckpoint(DataError):
    """A checkpoint holds pickled Python objects beyond tensors and plain data: it is refused, never executed."""


def _load_one(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols of foreign files
            state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # weights_only met a class or function to import: a crafted or foreign file
            raise UnsafeCheckpoint(
                f"{path}: refused to load: it contains pickled Python objects, not only tensors and plain data "
                "(adaptive-teacher never unpickles code; only checkpoints written by adaptive-teacher load)"
            ) from None
        raise DataError(f"{path}: damaged or not a checkpoint ({_first_line(e)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise DataError(f"{path}: damaged or not a checkpoint ({_first_line(e)})") from None
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        raise DataError(
            f"{path}: not an adaptive-teacher checkpoint (expected a dict with {', '.join(CHECKPOINT_KEYS)})"
        )
    return state


def _first_line(e: BaseException) -> str:
    """The first sentence of an exception's message (torch's are paragraphs), or its type."""
    text = str(e).strip().splitlines()
    return text[0].split(". ")[0].rstrip(".")[:160] if text and text[0] else type(e).__name__


def load_checkpoint(
    run: str | Path, warn=None, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path]:
    """The newest readable checkpoint of a run and its path: ``checkpoint.pt``, or ``checkpoint.prev.pt``
    when the newest is damaged (``warn(message)`` is told). An unsafe file is refused, never skipped. Its
    tensors are loaded onto ``map_location`` (the run's device: a checkpoint written on one device resumes on
    another)."""
    run = Path(run)
    path, prev = run / CHECKPOINT, run / PREVIOUS_CHECKPOINT
    try:
        return _load_one(path, map_location), path
    except UnsafeCheckpoint:
        raise
    except DataError as first:
        if not prev.exists():
            if not path.exists():
                raise DataError(f"{path}: missing; the run has no checkpoint to continue from") from None
            raise
        try:
            state = _load_one(prev, map_location)
        except UnsafeCheckpoint:
            raise
        except DataError as second:
            raise DataError(f"both checkpoints are unreadable: {first}; {second}") from None
        if warn is not None:
            warn(f"{first}; continuing from {prev} (step {state['step']})")
        return state, prev
