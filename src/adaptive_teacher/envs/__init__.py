"""Environments: batched tensor states, transitions, backward policies and rewards."""

from adaptive_teacher.envs.base import DiscreteEnv, Trajectories
from adaptive_teacher.envs.bitstring import BitString
from adaptive_teacher.envs.check import check_env
from adaptive_teacher.envs.diffusion import DiffusionEnv
from adaptive_teacher.envs.hypergrid import DeceptiveGrid, Hypergrid, deceptive_grid_reward
from adaptive_teacher.envs.strings import PrependAppendStrings

TaskEnv = DiscreteEnv | DiffusionEnv  # what the trainer accepts

__all__ = [
    "DiscreteEnv",
    "DiffusionEnv",
    "TaskEnv",
    "Trajectories",
    "Hypergrid",
    "DeceptiveGrid",
    "deceptive_grid_reward",
    "BitString",
    "PrependAppendStrings",
    "check_env",
]
