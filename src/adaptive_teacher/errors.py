"""Errors that name the problem and what to do about it.

The command line prints these as one line (no traceback); the Python API raises them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_OPTION_STYLE: ContextVar[str] = ContextVar("option_style", default="python")


def option(name: str) -> str:
    """How an error names the option ``name`` (a TrainConfig field or task parameter): ``--batch-size`` on
    the command line, ``batch_size`` for Python callers."""
    return "--" + name.replace("_", "-") if _OPTION_STYLE.get() == "cli" else name


@contextlib.contextmanager
def command_line_option_names() -> Iterator[None]:
    """Within this block errors name options as command-line flags (the CLI wraps every command in it)."""
    token = _OPTION_STYLE.set("cli")
    try:
        yield
    finally:
        _OPTION_STYLE.reset(token)


class AdaptiveTeacherError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(AdaptiveTeacherError, ValueError):
    """An option has an impossible value. The message names the option."""


class RewardError(AdaptiveTeacherError, ValueError):
    """A reward is NaN, infinite, zero or negative. The message names the state."""


class TrainingDiverged(AdaptiveTeacherError, RuntimeError):
    """The loss became non-finite; the last checkpoint and the metrics so far are kept."""


class DataError(AdaptiveTeacherError, FileNotFoundError):
    """A data file is missing or malformed. The message names the file and the data path variable."""


class EnvironmentCheckError(AdaptiveTeacherError, RuntimeError):
    """An environment broke its contract (no stop within max_length, a wrong shape). The message names the method."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT/SIGTERM) stopped a run or a comparison; the checkpoints and metrics so far are kept.

    A KeyboardInterrupt, so code that catches interrupts keeps working; ``str(e)`` says how to continue.
    """


class RunsFailed(AdaptiveTeacherError, RuntimeError):
    """Some runs of a comparison failed; the table of those that finished is in ``table``."""

    def __init__(self, message: str, table: str = ""):
        super().__init__(message)
        self.table = table
