"""Binary strings of length n built left to right: the smallest complete example of a DiscreteEnv.

A state is a long tensor [n] of bits with -1 in the positions not yet written; s0 is all -1. Forward
actions 0 and 1 append that bit, action 2 is stop, allowed (and forced) only at full length, so every
trajectory has n + 1 transitions and every state has one parent. The interface's ``forward_action``
sees only the parent, so the backward action names the bit it removes (0 or 1): exactly one is allowed.

Default reward (``reward_fn=None``): R(x) = 1e-3 + exp(−2·d(x)), d = the Hamming distance to the nearest
target among 0101…, 1010…, 0…01…1 and 1…10…0 (the modes, d = 0; 4 of them for n >= 3). With a user
``reward_fn`` no modes are known (``n_modes = None``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from adaptive_teacher.envs.base import DiscreteEnv
from adaptive_teacher.envs.hypergrid import RewardFn
from adaptive_teacher.errors import ConfigError


class BitString(DiscreteEnv):
    """Strings in {0,1}^n; ``reward_fn(x [m, n] long in {0,1}) -> [m]`` (default: four modes, see above)."""

    name = "bitstring"

    def __init__(self, n: int = 8, reward_fn: RewardFn | None = None):
        if not 1 <= int(n) <= 62:
            raise ConfigError(f"n (the string length) must be in 1..62 (got {n})")
        self.n = self.dim = int(n)  # ``dim`` so that task_spec records the length
        self.n_actions, self.n_backward_actions = 3, 2
        self.max_length, self.n_features = self.n + 1, 2 * self.n
        i = torch.arange(self.n, device=self.device)
        half = (i >= self.n // 2).long()
        self.targets = torch.unique(torch.stack([i % 2, 1 - i % 2, half, 1 - half]), dim=0)
        self.reward_fn = reward_fn
        if reward_fn is not None:
            self.reward_name = "reward_fn"  # how reward errors name it
        self.n_modes = len(self.targets) if reward_fn is None else None  # a user reward has no known modes
        self.n_terminal_states = 2**self.n
        self._pow2 = 2 ** torch.arange(self.n + 1, device=self.device)

    def level(self, states: Tensor) -> Tensor:
        """The number of bits written (= forward transitions from s0)."""
        return (states >= 0).sum(-1)

    def initial_states(self, n: int) -> Tensor:
        return torch.full((n, self.n), -1, dtype=torch.long, device=self.device)

    def forward_mask(self, states: Tensor) -> Tensor:
        full = (self.level(states) == self.n)[:, None]
        return torch.cat([~full, ~full, full], 1)

    def backward_mask(self, states: Tensor) -> Tensor:
        k = self.level(states)
        last = states.gather(1, (k - 1).clamp(min=0)[:, None]).squeeze(1)
        return (k > 0)[:, None] & (last[:, None] == torch.arange(2, device=states.device))

    def step(self, states: Tensor, actions: Tensor) -> Tensor:
        return states.scatter(1, self.level(states)[:, None], actions[:, None])

    def backward_step(self, states: Tensor, backward_actions: Tensor) -> Tensor:
        return states.scatter(1, (self.level(states) - 1)[:, None], -1)

    def backward_action(self, states: Tensor, actions: Tensor) -> Tensor:
        return actions  # undoing "append b" is "remove the last bit, a b"

    def forward_action(self, parents: Tensor, backward_actions: Tensor) -> Tensor:
        return backward_actions

    def features(self, states: Tensor) -> Tensor:
        """[m, 2n]: position i contributes (1, 0) for a 0, (0, 1) for a 1, (0, 0) if not yet written."""
        return torch.stack([states == 0, states == 1], -1).flatten(1).float()

    def distance(self, x: Tensor) -> Tensor:
        return (x[:, None, :] != self.targets).sum(-1).min(1).values

    def reward(self, x: Tensor) -> Tensor:
        if self.reward_fn is not None:
            return self.reward_fn(x)
        return 1e-3 + torch.exp(-2.0 * self.distance(x).double())

    def is_mode(self, x: Tensor) -> Tensor:
        return (self.distance(x) == 0) & (self.reward_fn is None)

    def state_key(self, states: Tensor) -> Tensor:
        """2^length + Σ_i x_i·2^i: the leading 1 marks the length."""
        return (states.clamp(min=0) * self._pow2[: self.n]).sum(-1) + self._pow2[self.level(states)]

    def enumerate_states(self) -> Tensor | None:
        """Every prefix: for each length k, the 2^k codes written as bits, then -1."""
        if self.n > 16:
            return None
        dev = self.device
        pos = torch.arange(self.n, device=dev)
        return torch.cat(
            [torch.where(pos < k, (torch.arange(2**k, device=dev)[:, None] >> pos) & 1, -1) for k in range(self.n + 1)]
        )
