"""Experiment tracking: mirror a run's metrics to TensorBoard and/or Weights & Biases (``log="tensorboard,wandb"``).

The run directory stays the record (``metrics.jsonl`` has every row); a tracker is a copy of it for the tools
people already watch. Each evaluation row is mirrored right after it is written to ``metrics.jsonl`` and its
checkpoint saved; values that are not finite numbers (None, lists, strings, NaN) are left out.

- ``tensorboard``: event files in ``DIR/tensorboard`` with every metric against the training step (tag = the
  metrics.jsonl key), and in ``DIR/tensorboard/by_reward_calls`` every metric against reward calls (tags
  ``by_reward_calls/<key>``; a writer of its own, since TensorBoard's purge of a resumed run's orphaned events
  applies to every tag of a file). A resumed run purges the events after its checkpoint's step.
- ``wandb``: ``wandb.init(dir=DIR)`` (so ``DIR/wandb/``), offline unless ``WANDB_MODE`` says otherwise, project
  ``$WANDB_PROJECT`` (default ``adaptive-teacher``), named ``<task>-<parameters>-<method>-seed<S>``, config = the
  run's TrainConfig plus its task and fingerprint; metrics logged at ``step=row["step"]`` (``reward_calls`` is
  among them, for the x-axis). The run id, the fingerprint plus a random suffix, is kept in
  ``DIR/tracking.json``: ``--resume`` continues the same wandb run (``resume="allow"``), ``--overwrite`` starts a
  new one.

A tracker enabled only when a run is resumed first receives the run's earlier rows. The packages are imported
only inside the trackers' constructors: with ``log="none"`` neither is ever imported. A missing package or a
tracker that cannot start is a TrackingError before training starts; a tracker that fails mid-run is dropped
with one warning, and the run goes on.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from adaptive_teacher.errors import ConfigError, option

if TYPE_CHECKING:
    from adaptive_teacher.config import TrainConfig

TRACKERS = ("tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
BY_REWARD_CALLS = "by_reward_calls"
TRACKING_FILE = "tracking.json"  # the wandb run id of this run directory
EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # pip extra of each tracker
WANDB_MODES = ("online", "offline", "disabled", "shared", "run", "dryrun")  # what wandb.init(mode=) takes


class TrackingError(ConfigError):
    """A tracker asked for with ``log`` cannot start (its package is missing, or it refused to start)."""


class Tracker(Protocol):
    """Receives each metrics row of a run."""

    name: str

    def log(self, row: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def parse_log(value: str) -> tuple[str, ...]:
    """The trackers named by a ``log`` value: "none" → (), "tensorboard,wandb" → both; anything else is a
    ConfigError naming the bad value and the allowed ones."""
    allowed = f"none, or a comma-separated list of {', '.join(TRACKERS)} (e.g. {','.join(TRACKERS)})"
    if not isinstance(value, str):
        raise ConfigError(f"{option('log')} must be a string: {allowed} (got {value!r})")
    names = [n.strip() for n in value.split(",")]
    if names == ["none"]:
        return ()
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        what = "an empty name" if bad[0] == "" else repr(bad[0])
        raise ConfigError(f"{option('log')} {value!r}: {what} is not a tracker; use {allowed}")
    return tuple(dict.fromkeys(names))


def scalars(row: dict[str, Any]) -> dict[str, int | float]:
    """The finite numeric values of a metrics row (booleans, None, lists, strings and NaN left out)."""
    return {k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def run_name(task: dict[str, Any], cfg: TrainConfig) -> str:
    """``<task>-<parameters>-<method>-seed<S>``, e.g. ``deceptive-grid-dim2-height8-teacher-seed0``."""

    def text(v: Any) -> str:
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    params = "".join(f"-{k}{text(v)}" for k, v in task.items() if k != "name" and v is not None and v is not True)
    return f"{task.get('name', 'task')}{params}-{cfg.method}-seed{cfg.seed}"


def _missing(name: str) -> TrackingError:
    return TrackingError(
        f"{option('log')} {name} needs the '{name}' package: pip install 'adaptive-teacher[{EXTRAS[name]}]' "
        f"(or drop {name} from {option('log')})"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text and text[0] else type(e).__name__


def _warn(message: str) -> None:
    print(f"adaptive-teacher: warning: {message}", file=sys.stderr)


class TensorBoardTracker:
    """Scalars by step in ``out_dir/tensorboard``, by reward calls in ``out_dir/tensorboard/by_reward_calls``."""

    name = "tensorboard"

    def __init__(self, out_dir: Path, history: Sequence[dict[str, Any]] = ()):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard") from None
        log_dir = Path(out_dir) / TENSORBOARD_DIR
        calls_dir = log_dir / BY_REWARD_CALLS
        old = [f for d in (log_dir, calls_dir) for f in d.glob("events.out.tfevents.*") if f.is_file()]
        continuing = bool(history) and bool(old)
        if not history:  # a new run: events left by a run this directory held before are not this run's
            for f in old:
                f.unlink(missing_ok=True)
        # A resumed run purges what was logged from its checkpoint on and logs its checkpoint's row again (rows
        # are mirrored after their checkpoint is saved, so usually nothing is purged but that row itself).
        last = history[-1] if continuing else {}
        try:
            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=last.get("step"))
            self.by_calls = SummaryWriter(log_dir=str(calls_dir), purge_step=last.get("reward_calls"))
        except Exception as e:  # noqa: BLE001 - any failure to start is one clear error
            raise TrackingError(f"{option('log')} tensorboard: cannot write {log_dir} ({_first_line(e)})") from None
        for row in history[-1:] if continuing else history:
            self.log(row, int(row["step"]))

    def log(self, row: dict[str, Any], step: int) -> None:
        values = scalars(row)
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)
        calls = values.get("reward_calls")
        if calls is not None:
            for key, value in values.items():
                if key != "reward_calls":
                    self.by_calls.add_scalar(f"{BY_REWARD_CALLS}/{key}", value, global_step=int(calls))
            self.by_calls.flush()
        self.writer.flush()  # evaluations are rare: visible in TensorBoard at once

    def close(self) -> None:
        self.writer.close()
        self.by_calls.close()


def _stored_id(out_dir: Path) -> str | None:
    try:
        saved = json.loads((out_dir / TRACKING_FILE).read_text())
    except (OSError, ValueError):
        return None
    run_id = saved.get("wandb_id") if isinstance(saved, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None


class WandbTracker:
    """A wandb run in ``out_dir/wandb``, offline unless ``WANDB_MODE`` is set; its id is kept in tracking.json."""

    name = "wandb"

    def __init__(
        self,
        out_dir: Path,
        cfg: TrainConfig,
        task: dict[str, Any],
        fingerprint: str,
        history: Sequence[dict[str, Any]] = (),
    ):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb") from None
        out_dir = Path(out_dir)
        stored = _stored_id(out_dir) if history else None  # a new run (history empty) gets a new wandb run
        run_id = stored or f"{fingerprint}-{secrets.token_hex(4)}"
        mode = os.environ.get("WANDB_MODE", "offline")
        if mode not in WANDB_MODES:
            raise TrackingError(
                f"{option('log')} wandb: WANDB_MODE={mode!r} is not a wandb mode; set online, offline or disabled "
                "(unset: offline)"
            )
        try:
            self.run = wandb.init(
                dir=str(out_dir),
                mode=mode,
                project=os.environ.get("WANDB_PROJECT", "adaptive-teacher"),
                name=run_name(task, cfg),
                id=run_id,
                resume="allow",
                config={**cfg.to_dict(), "task": task, "fingerprint": fingerprint},
            )
        except Exception as e:  # noqa: BLE001 - wandb raises many kinds (UsageError, CommError, ...)
            raise TrackingError(
                f"{option('log')} wandb: wandb could not start in mode {mode!r} ({_first_line(e)}); "
                "log in with 'wandb login', or unset WANDB_MODE to log offline"
            ) from None
        if stored is None:
            tmp = out_dir / (TRACKING_FILE + ".tmp")
            tmp.write_text(json.dumps({"wandb_id": run_id}) + "\n")
            os.replace(tmp, out_dir / TRACKING_FILE)
        self.id = run_id
        for row in () if stored else history:  # a tracker new to a resumed run gets its earlier rows
            self.log(row, int(row["step"]))

    def log(self, row: dict[str, Any], step: int) -> None:
        self.run.log(scalars(row), step=step)

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """Several trackers as one: a tracker that fails is warned about once and dropped; the others go on."""

    name = "trackers"

    def __init__(self, trackers: Sequence[Tracker] = ()):
        self.trackers = list(trackers)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log(self, row: dict[str, Any], step: int) -> None:
        for tracker in list(self.trackers):
            try:
                tracker.log(row, step)
            except Exception as e:  # noqa: BLE001 - tracking is a copy; the run and metrics.jsonl go on
                self.trackers.remove(tracker)
                _warn(
                    f"{tracker.name} tracking failed at step {step} ({_first_line(e)}); the run continues "
                    "without it (metrics.jsonl has every row)"
                )
                try:
                    tracker.close()
                except Exception:  # noqa: BLE001 - it has failed already
                    pass

    def close(self) -> None:
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            try:
                tracker.close()
            except Exception as e:  # noqa: BLE001 - the run itself is written
                _warn(f"{tracker.name} tracking could not be closed ({_first_line(e)})")


def make_trackers(
    names: Sequence[str] | str,
    out_dir: str | Path,
    cfg: TrainConfig,
    task: dict[str, Any],
    fingerprint: str,
    history: Sequence[dict[str, Any]] = (),
) -> Trackers:
    """Start the trackers ``names`` (a ``log`` value or its parsed names) for the run in ``out_dir``.

    ``history``: the rows the run has recorded already (a resumed run): a tracker continues its earlier record
    of them, or, new to the run, receives them all. A tracker that cannot start is a TrackingError, after
    closing those already started."""
    if isinstance(names, str):
        names = parse_log(names)
    started: list[Tracker] = []
    try:
        for name in names:
            if name == "tensorboard":
                started.append(TensorBoardTracker(Path(out_dir), history))
            elif name == "wandb":
                started.append(WandbTracker(Path(out_dir), cfg, task, fingerprint, history))
            else:
                parse_log(name)  # raises the ConfigError naming the allowed trackers
    except BaseException:
        Trackers(started).close()
        raise
    return Trackers(started)
