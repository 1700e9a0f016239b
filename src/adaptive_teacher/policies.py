"""Policy networks: one MLP trunk with forward logits, optional backward logits and state flow, plus log Z."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def mlp(n_in: int, n_out: int, hidden: int = 256, layers: int = 2) -> nn.Sequential:
    """``layers`` hidden layers of width ``hidden`` with LeakyReLU (the paper's grid policy is 2×256)."""
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.LeakyReLU()]
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


class DiscretePolicy(nn.Module):
    """A GFlowNet for a discrete environment: P_F logits, optional learned P_B logits, optional log F(s).

    ``forward(features)`` returns the concatenated head outputs; ``split`` separates them.
    ``log_Z`` is the trajectory-balance partition-function estimate.
    """

    def __init__(
        self,
        n_features: int,
        n_actions: int,
        n_backward_actions: int,
        hidden: int = 256,
        layers: int = 2,
        learn_pb: bool = False,
        flow_head: bool = False,
    ):
        super().__init__()
        self.n_actions, self.n_backward_actions = n_actions, n_backward_actions
        self.learn_pb, self.flow_head = learn_pb, flow_head
        n_out = n_actions + (n_backward_actions if learn_pb else 0) + (1 if flow_head else 0)
        self.net = mlp(n_features, n_out, hidden, layers)
        self.log_Z = nn.Parameter(torch.zeros(()))

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)

    def split(self, out: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        fwd = out[:, : self.n_actions]
        i = self.n_actions
        bwd = None
        if self.learn_pb:
            bwd = out[:, i : i + self.n_backward_actions]
            i += self.n_backward_actions
        flow = out[:, i] if self.flow_head else None
        return fwd, bwd, flow


def make_policy(env, cfg) -> nn.Module:
    """The policy the environment's task family trains (see families.py)."""
    from adaptive_teacher.families import family_of

    return family_of(env).make_policy(env, cfg)
