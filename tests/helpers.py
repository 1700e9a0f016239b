"""Test helpers: the exact optimal GFlowNet policy (now built by the library, for any enumerable env)."""

from __future__ import annotations

import torch

from adaptive_teacher.envs.base import DiscreteEnv
from adaptive_teacher.metrics.exact import TabularPolicy
from adaptive_teacher.metrics.exact import optimal_policy as _optimal_policy


def optimal_policy(env: DiscreteEnv) -> TabularPolicy:
    """P_F(s'|s) = F(s')·P_B(s|s')/F(s), P_F(stop|s) = R(s)/F(s), with F computed backwards from the leaves."""
    return _optimal_policy(env)


def far_from_uniform_policy(env, hidden: int = 32, seed: int = 0):
    """A random MLP policy with weights ×3: sharply non-uniform action probabilities (for DP-vs-sampling)."""
    from adaptive_teacher.policies import DiscretePolicy

    torch.manual_seed(seed)
    model = DiscretePolicy(env.n_features, env.n_actions, env.n_backward_actions, hidden=hidden)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model
