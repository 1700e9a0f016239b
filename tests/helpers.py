"""Test helpers: the exact optimal GFlowNet policy (now built by the library, for any enumerable env)."""

from __future__ import annotations

from adaptive_teacher.envs.base import DiscreteEnv
from adaptive_teacher.metrics.exact import TabularPolicy
from adaptive_teacher.metrics.exact import optimal_policy as _optimal_policy


def optimal_policy(env: DiscreteEnv) -> TabularPolicy:
    """P_F(s'|s) = F(s')·P_B(s|s')/F(s), P_F(stop|s) = R(s)/F(s), with F computed backwards from the leaves."""
    return _optimal_policy(env)
