"""Errors that name the problem and what to do about it.

The command line prints these as one line (no traceback); the Python API raises them.
"""


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
