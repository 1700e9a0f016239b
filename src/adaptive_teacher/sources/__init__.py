"""Behaviour sources and what shapes their rewards: Teacher reward, replay buffer, local search, RND."""

from adaptive_teacher.sources import batches, schedule, transitions
from adaptive_teacher.sources.buffer import ReplayBuffer
from adaptive_teacher.sources.local_search import back_and_forth
from adaptive_teacher.sources.rnd import RandomNetworkDistillation
from adaptive_teacher.sources.teacher import teacher_log_reward

__all__ = [
    "batches",
    "schedule",
    "transitions",
    "ReplayBuffer",
    "back_and_forth",
    "RandomNetworkDistillation",
    "teacher_log_reward",
]
