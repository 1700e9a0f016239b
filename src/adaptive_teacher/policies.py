"""Discrete policies: what the samplers ask of one (``Policy``, ``PolicyOutputs``) and the MLP policy.

A policy computes its outputs from a batch of states, ``policy.outputs(env, states)``, with whatever the
environment offers: ``env.features(states)``, ``env.forward_mask`` / ``env.backward_mask`` and
``env.children(states)`` (the child under every move). The MLP is features → logits; an SSR-style policy
(Shen et al., 2023) encodes the state and each child and scores each (state, child) pair:
logit(s → s') = score(enc(s), enc(s')).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from adaptive_teacher.envs.base import DiscreteEnv


class PolicyOutputs(NamedTuple):
    """A discrete policy's outputs on n states; logits are unmasked (the samplers mask and normalise them).

    ``forward``: [n, n_actions] P_F logits (stop last); ``backward``: [n, n_backward_actions] P_B logits, or
    None when P_B is not learned (uniform P_B); ``log_flow``: [n] log F(s) (detailed balance), or None.
    """

    forward: Tensor
    backward: Tensor | None
    log_flow: Tensor | None


class Policy(Protocol):
    """What the discrete samplers, log-probabilities and exact evaluation need of a policy.

    ``learn_pb``: ``outputs(...).backward`` is not None; ``flow_head``: ``outputs(...).log_flow`` is not None;
    ``log_Z``: the trajectory-balance estimate of log Z (a scalar parameter).
    """

    learn_pb: bool
    flow_head: bool
    log_Z: Tensor

    def outputs(self, env: DiscreteEnv, states: Tensor) -> PolicyOutputs: ...


def mlp(
    n_in: int, n_out: int, hidden: int = 256, layers: int = 2, device: torch.device | str | None = None
) -> nn.Sequential:
    """``layers`` hidden layers of width ``hidden`` with LeakyReLU (the paper's grid policy is 2×256), its
    parameters created on ``device`` (None: torch's default device)."""
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden, device=device), nn.LeakyReLU()]
        width = hidden
    mods.append(nn.Linear(width, n_out, device=device))
    return nn.Sequential(*mods)


class DiscretePolicy(nn.Module):
    """A GFlowNet for a discrete environment: P_F logits, optional learned P_B logits, optional log F(s).

    One MLP on ``env.features(states)`` whose output is [P_F logits | P_B logits | log F]; ``outputs(env,
    states)`` splits it. ``forward(features)`` (the concatenated heads) and ``split`` are kept for callers
    that hold features. ``log_Z`` is the trajectory-balance partition-function estimate. The parameters are
    created on ``device`` (None: torch's default device; the trainer passes the run's).
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
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.n_actions, self.n_backward_actions = n_actions, n_backward_actions
        self.learn_pb, self.flow_head = learn_pb, flow_head
        n_out = n_actions + (n_backward_actions if learn_pb else 0) + (1 if flow_head else 0)
        self.net = mlp(n_features, n_out, hidden, layers, device)
        self.log_Z = nn.Parameter(torch.zeros((), device=device))

    def outputs(self, env: DiscreteEnv, states: Tensor) -> PolicyOutputs:
        """``split(net(env.features(states)))`` as PolicyOutputs (the samplers call this once per step)."""
        out = self.net(env.features(states))
        if not (self.learn_pb or self.flow_head):
            return PolicyOutputs(out, None, None)  # the whole output is the P_F logits
        return PolicyOutputs(*self.split(out))

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
