"""The hypergrid {0..H-1}^d and the deceptive-grid reward of Kim et al. (ICLR 2025).

Start at the origin; a forward action increments one coordinate or stops. When a coordinate reaches H-1
the only action left is stop (forced), so states with two or more coordinates at H-1 are unreachable.
P_B is uniform over the parents that could have moved here (only the coordinate at H-1 if there is one).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from adaptive_teacher.envs.base import DiscreteEnv
from adaptive_teacher.errors import ConfigError, option

RewardFn = Callable[[Tensor], Tensor]

MAX_ENUMERATED_STATES = 5_000_000


class Hypergrid(DiscreteEnv):
    """A d-dimensional grid of side H with a user-supplied reward ``reward_fn(states [n, d] long) -> [n]``."""

    def __init__(self, dim: int, height: int, reward_fn: RewardFn, name: str = "hypergrid"):
        if int(dim) < 1:
            raise ConfigError(f"{option('dim')} must be >= 1 (got {dim})")
        if int(height) < 2:
            raise ConfigError(f"{option('height')} must be >= 2 (got {height})")
        self.dim, self.height, self.name = int(dim), int(height), name
        self.reward_fn = reward_fn
        self.reward_name = "reward_fn"  # how errors about the reward's output name it
        self.n_actions = self.dim + 1
        self.n_backward_actions = self.dim
        self.max_length = self.dim * (self.height - 1) + 1
        self.n_features = self.dim * self.height
        dev = self.device
        self._strides = self.height ** torch.arange(self.dim, dtype=torch.long, device=dev)
        self._coords = torch.arange(self.dim, device=dev)  # the move actions, one per coordinate
        self._offsets = self._coords * self.height  # where each coordinate's one-hot block starts
        self._stop_only = torch.arange(self.n_actions, device=dev) == self.dim  # a mask row allowing stop alone

    # -- size ---------------------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        """Reachable states: all of {0..H-1}^d but those with two or more coordinates at H-1."""
        h1 = self.height - 1
        return h1**self.dim + self.dim * h1 ** (self.dim - 1)

    @property
    def n_terminal_states(self) -> int:
        return self.n_states

    # -- transitions --------------------------------------------------------------------------------
    def initial_states(self, n: int) -> Tensor:
        return torch.zeros((n, self.dim), dtype=torch.long, device=self.device)

    def forward_mask(self, states: Tensor) -> Tensor:
        # Every move is allowed unless some coordinate is at H-1, which forces stop; stop is always allowed.
        return (states < self.height - 1).all(-1, keepdim=True) | self._stop_only.to(states.device)

    def backward_mask(self, states: Tensor) -> Tensor:
        at_edge = states == self.height - 1
        has_edge = at_edge.any(-1, keepdim=True)
        return torch.where(has_edge, at_edge, states > 0)

    def step(self, states: Tensor, actions: Tensor) -> Tensor:
        out = states.clone()
        out[torch.arange(len(states), device=states.device), actions] += 1
        return out

    def backward_step(self, states: Tensor, backward_actions: Tensor) -> Tensor:
        out = states.clone()
        out[torch.arange(len(states), device=states.device), backward_actions] -= 1
        return out

    def step_or_stay(self, states: Tensor, actions: Tensor) -> Tensor:
        # Stop (= dim) and padding (-1) match no coordinate, so those rows stay.
        return states + (actions[:, None] == self._coords.to(states.device))

    def backward_step_or_stay(self, states: Tensor, backward_actions: Tensor, alive: Tensor) -> tuple[Tensor, Tensor]:
        b = backward_actions.masked_fill(~alive, -1)
        return states - (b[:, None] == self._coords.to(states.device)).to(states.dtype), b

    def backward_action(self, states: Tensor, actions: Tensor) -> Tensor:
        return actions

    def forward_action(self, parents: Tensor, backward_actions: Tensor) -> Tensor:
        return backward_actions

    def features(self, states: Tensor) -> Tensor:
        """One-hot encoding of every coordinate, [n, d·H] (as in the paper's grid code)."""
        idx = states + self._offsets.to(states.device)
        return torch.zeros((states.shape[0], self.n_features), device=states.device).scatter_(1, idx, 1.0)

    def reward(self, x: Tensor) -> Tensor:
        return self.reward_fn(x)

    def state_key(self, states: Tensor) -> Tensor:
        return (states * self._strides.to(states.device)).sum(-1)

    def level(self, states: Tensor) -> Tensor:
        return states.sum(-1)

    # -- enumeration --------------------------------------------------------------------------------
    def enumerate_states(self) -> Tensor | None:
        if self.height**self.dim > MAX_ENUMERATED_STATES:
            return None
        axes = [torch.arange(self.height, device=self.device)] * self.dim
        grid = torch.cartesian_prod(*axes).view(-1, self.dim) if self.dim > 1 else axes[0][:, None]
        return grid[(grid == self.height - 1).sum(-1) <= 1]


def deceptive_grid_reward(height: int) -> RewardFn:
    """R = 1e-5 + 0.1·(1 − Π 1[|x̃_i| > 0.2]) + 2·Π 1[0.6 < |x̃_i| < 0.8], x̃ = 2s/(H−1) − 1.

    As in the official code of Kim et al. (ICLR 2025) (their written equation differs), in float64
    and in exactly this order of operations, which makes the goal set asymmetric ({2, 12, 13} for H=16).
    """

    def reward(states: Tensor) -> Tensor:
        xt = (2.0 * states.to(torch.float64) / (height - 1) - 1.0).abs()
        outside_centre = (xt > 0.2).all(-1).to(torch.float64)
        in_ring = ((xt > 0.6) & (xt < 0.8)).all(-1).to(torch.float64)
        return 1e-5 + 0.1 * (1.0 - outside_centre) + 2.0 * in_ring

    return reward


class DeceptiveGrid(Hypergrid):
    """The deceptive hypergrid task: modes are the states of maximal reward (2 + 1e-5)."""

    def __init__(self, dim: int, height: int):
        super().__init__(dim, height, deceptive_grid_reward(int(height)), name="deceptive-grid")
        coords = torch.arange(self.height, device=self.device)[:, None]
        goal = deceptive_grid_reward(self.height)(coords)  # per-coordinate ring test via d=1
        self.goal_coordinates = [int(c) for c in coords[goal > 1.0, 0]]
        self.max_reward = 2.0 + 1e-5
        self.n_modes = len(self.goal_coordinates) ** self.dim

    def is_mode(self, x: Tensor) -> Tensor:
        return self.reward_fn(x) >= self.max_reward - 1e-9
