"""Environments: batched tensor states, transitions, backward policies and rewards."""

from adaptive_teacher.envs.base import DiscreteEnv, Trajectories
from adaptive_teacher.envs.hypergrid import DeceptiveGrid, Hypergrid, deceptive_grid_reward

__all__ = ["DiscreteEnv", "Trajectories", "Hypergrid", "DeceptiveGrid", "deceptive_grid_reward"]
