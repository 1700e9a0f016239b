"""Replay buffer of terminal states with prioritised sampling (PRT / PER).

``sampling="rank"``: the item of rank r (0 = highest priority) among N has weight 1 / (0.01·N + r)
(Tripp et al., 2020, as used by Kim et al.'s grid and diffusion code). ``sampling="top_decile"``: half the
draws uniformly from the items at or above the 90th percentile of priority, half from those at or below it
(Shen et al., 2023, "PRT", as used by Kim et al.'s string code). States are de-duplicated by key: a state
seen again gets its newest priority. When full, the oldest insertions are evicted first (FIFO); with
``refresh_age=False`` a state seen again keeps its first insertion time (the string code's ordered dict).
Everything is stored on ``device`` (the run's); ``load_state_dict`` moves a checkpoint's tensors there.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ReplayBuffer:
    def __init__(
        self,
        capacity: int,
        state_shape: tuple[int, ...],
        state_dtype: torch.dtype = torch.long,
        sampling: str = "rank",
        refresh_age: bool = True,
        device: torch.device | str = "cpu",
    ):
        if capacity < 1:
            raise ValueError("buffer capacity must be >= 1")
        if sampling not in ("rank", "top_decile"):
            raise ValueError(f"buffer sampling must be 'rank' or 'top_decile' (got {sampling!r})")
        self.capacity = int(capacity)
        self.sampling, self.refresh_age = sampling, bool(refresh_age)
        self.device = dev = torch.device(device)
        self.states = torch.zeros((0, *state_shape), dtype=state_dtype, device=dev)
        self.keys = torch.zeros(0, dtype=torch.long, device=dev)
        self.priority = torch.zeros(0, dtype=torch.float64, device=dev)
        self.log_reward = torch.zeros(0, dtype=torch.float64, device=dev)
        self.inserted = torch.zeros(0, dtype=torch.long, device=dev)
        self._clock = 0

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def add(self, states: Tensor, keys: Tensor, priority: Tensor, log_reward: Tensor) -> None:
        """Insert a batch; duplicates (within the batch or already stored) keep the newest priority."""
        # Within the batch keep the last occurrence of each key.
        dev = self.device
        order = torch.arange(len(keys), device=dev)
        uniq, inv = torch.unique(keys, return_inverse=True)
        last = torch.full((len(uniq),), -1, dtype=torch.long, device=dev).scatter_reduce(0, inv, order, "amax")
        states, keys = states[last], keys[last]
        priority, log_reward = priority[last].to(torch.float64), log_reward[last].to(torch.float64)
        stamp = self._clock + torch.arange(len(keys), device=dev)
        self._clock += len(keys)

        present = torch.isin(keys, self.keys)
        if bool(present.any()):
            sorted_keys, perm = torch.sort(self.keys)
            pos = perm[torch.searchsorted(sorted_keys, keys[present])]
            self.priority[pos] = priority[present]
            if self.refresh_age:
                self.inserted[pos] = stamp[present]
        fresh = ~present
        self.states = torch.cat([self.states, states[fresh]])
        self.keys = torch.cat([self.keys, keys[fresh]])
        self.priority = torch.cat([self.priority, priority[fresh]])
        self.log_reward = torch.cat([self.log_reward, log_reward[fresh]])
        self.inserted = torch.cat([self.inserted, stamp[fresh]])
        overflow = len(self) - self.capacity
        if overflow > 0:
            keep = torch.sort(torch.argsort(self.inserted, stable=True)[overflow:]).values
            for name in ("states", "keys", "priority", "log_reward", "inserted"):
                setattr(self, name, getattr(self, name)[keep])

    def update_priority(self, keys: Tensor, priority: Tensor) -> None:
        sorted_keys, perm = torch.sort(self.keys)
        pos = torch.searchsorted(sorted_keys, keys).clamp(max=len(self) - 1)
        hit = sorted_keys[pos] == keys
        self.priority[perm[pos[hit]]] = priority[hit].to(torch.float64)

    def sampling_weights(self) -> Tensor:
        n = len(self)
        rank = torch.empty(n, dtype=torch.float64, device=self.device)
        order = torch.argsort(self.priority, descending=True, stable=True)
        rank[order] = torch.arange(n, dtype=torch.float64, device=self.device)
        return 1.0 / (0.01 * n + rank)

    def sample(self, n: int) -> tuple[Tensor, Tensor]:
        """n states (with replacement) and their stored log-rewards."""
        if self.sampling == "top_decile":
            idx = self._top_decile_indices(n)
        else:
            idx = torch.multinomial(self.sampling_weights(), n, replacement=True)
        return self.states[idx], self.log_reward[idx]

    def _top_decile_indices(self, n: int) -> Tensor:
        """n // 2 uniform draws among the items with priority >= the 90th percentile (linear interpolation,
        as numpy's default), the rest among those <= it."""
        threshold = torch.quantile(self.priority, 0.9)
        top = (self.priority >= threshold).nonzero().squeeze(1)
        rest = (self.priority <= threshold).nonzero().squeeze(1)
        n_top = n // 2
        pick_top = top[torch.randint(len(top), (n_top,), device=self.device)]
        pick_rest = rest[torch.randint(len(rest), (n - n_top,), device=self.device)]
        return torch.cat([pick_top, pick_rest])

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("states", "keys", "priority", "log_reward", "inserted", "_clock")}

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v.to(self.device) if isinstance(v, Tensor) else v)
