"""Modes found: distinct mode states among all rewarded training samples, logged against reward calls."""

from __future__ import annotations

from torch import Tensor

from adaptive_teacher.envs.base import DiscreteEnv


class ModeTracker:
    def __init__(self, env: DiscreteEnv):
        self.env = env
        self.found: set[int] = set()

    def update(self, x: Tensor) -> None:
        hit = self.env.is_mode(x)
        if bool(hit.any()):
            self.found.update(self.env.state_key(x[hit]).tolist())

    def __len__(self) -> int:
        return len(self.found)
