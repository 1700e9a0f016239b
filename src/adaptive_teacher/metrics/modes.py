"""Modes found (distinct mode states among all rewarded training samples, logged against reward calls) and,
optionally, the top-k distinct samples by reward seen so far (the biochemical tasks' top-100 metrics)."""

from __future__ import annotations

import torch
from torch import Tensor

from adaptive_teacher.envs.base import DiscreteEnv


class ModeTracker:
    """``found``: keys of the distinct modes seen. With ``top_k > 0`` also ``top_states`` / ``top_log_reward``:
    the k distinct states with the highest log R seen (ties keep the earlier one), on the environment's device."""

    def __init__(self, env: DiscreteEnv, top_k: int = 0):
        self.env, self.top_k = env, int(top_k)
        self.found: set[int] = set()
        self.top_states: Tensor | None = None
        self.device = getattr(env, "device", torch.device("cpu"))
        self.top_log_reward = torch.zeros(0, dtype=torch.float64, device=self.device)

    def update(self, x: Tensor, log_reward: Tensor | None = None) -> None:
        hit = self.env.is_mode(x)
        if bool(hit.any()):
            self.found.update(self.env.state_key(x[hit]).tolist())
        if self.top_k > 0 and log_reward is not None:
            self._update_top(x, log_reward.detach().to(torch.float64))

    def _update_top(self, x: Tensor, log_reward: Tensor) -> None:
        states = x if self.top_states is None else torch.cat([self.top_states, x])
        log_r = torch.cat([self.top_log_reward, log_reward])
        keys = self.env.state_key(states)
        uniq, inverse = torch.unique(keys, return_inverse=True)
        dev = keys.device
        first = torch.full((len(uniq),), len(keys), dtype=torch.long, device=dev).scatter_reduce(
            0, inverse, torch.arange(len(keys), device=dev), "amin"
        )
        first = torch.sort(first).values  # in the order they were seen: ties keep the earlier state
        keep = first[torch.argsort(log_r[first], descending=True, stable=True)[: self.top_k]]
        self.top_states, self.top_log_reward = states[keep], log_r[keep]

    def __len__(self) -> int:
        return len(self.found)

    def state_dict(self) -> dict:
        return {"found": sorted(self.found), "top_states": self.top_states, "top_log_reward": self.top_log_reward}

    def load_state_dict(self, d: dict) -> None:
        """The state of ``state_dict``, its tensors moved to the environment's device."""
        dev = self.device
        self.found = set(d["found"])
        top, log_r = d.get("top_states"), d.get("top_log_reward", self.top_log_reward)
        self.top_states = None if top is None else top.to(dev)
        self.top_log_reward = log_r.to(dev)
