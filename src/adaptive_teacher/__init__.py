"""adaptive-teacher: amortized samplers (GFlowNets) trained with an adaptive Teacher (Kim et al., ICLR 2025)."""

from adaptive_teacher.api import Sampler, TrainResult, load, train
from adaptive_teacher.config import PRESETS, TrainConfig, resolve_config
from adaptive_teacher.densities import Density
from adaptive_teacher.envs import DeceptiveGrid, DiffusionEnv, DiscreteEnv, Hypergrid, Trajectories
from adaptive_teacher.envs.bitstring import BitString
from adaptive_teacher.envs.check import check_env
from adaptive_teacher.envs.strings import PrependAppendStrings
from adaptive_teacher.errors import (
    AdaptiveTeacherError,
    ConfigError,
    DataError,
    RewardError,
    RunInterrupted,
    RunsFailed,
    TrainingDiverged,
)
from adaptive_teacher.sequence import SequenceEnv
from adaptive_teacher.ssr import SSRPolicy
from adaptive_teacher.trainer import Trainer

__all__ = [
    "train",
    "load",
    "Sampler",
    "TrainResult",
    "Trainer",
    "TrainConfig",
    "resolve_config",
    "PRESETS",
    "DiscreteEnv",
    "DiffusionEnv",
    "Density",
    "Hypergrid",
    "DeceptiveGrid",
    "BitString",
    "PrependAppendStrings",
    "SequenceEnv",
    "SSRPolicy",
    "check_env",
    "Trajectories",
    "AdaptiveTeacherError",
    "ConfigError",
    "DataError",
    "RewardError",
    "RunInterrupted",
    "RunsFailed",
    "TrainingDiverged",
]
__version__ = "0.1.0"
