"""The adaptive Teacher's reward (Kim et al., ICLR 2025, eq. 5)."""

from __future__ import annotations

import torch
from torch import Tensor


def teacher_log_reward(
    delta: Tensor,
    log_reward: Tensor,
    C: float = 19.0,
    alpha: float = 0.0,
    eps: float = 1e-3,
    half_square: bool = False,
    square_clamp: float | None = None,
) -> Tensor:
    """log R_T(x) with R_T = log(1 + ε + (1 + C·1[δ>0])·δ²) · R(x)^α.

    δ is the Student's signed TB residual (detached): δ > 0 means the Student under-samples x, and those
    x are weighted 1 + C times more. ``half_square`` uses ½δ² (the diffusion variant); ``square_clamp``
    bounds δ² before the weighting (5,000 in Kim et al.'s string code, where the loss is clamped there too).
    """
    delta = delta.detach().to(torch.float64)
    sq = delta**2 * (0.5 if half_square else 1.0)
    if square_clamp is not None:
        sq = sq.clamp(max=square_clamp)
    weight = 1.0 + C * (delta > 0).to(torch.float64)
    return torch.log(torch.log1p(eps + weight * sq)) + alpha * log_reward.to(torch.float64)


def teacher_log_reward_transitions(
    residuals: Tensor,
    valid: Tensor,
    log_reward: Tensor,
    C: float = 19.0,
    alpha: float = 0.0,
    eps: float = 1e-3,
) -> Tensor:
    """log R_T of the DB Teacher: R_T(τ) = Σ_t log(1 + ε + (1 + C·1[δ_t > 0])·δ_t²) · R(x)^α over the
    transitions of τ, with δ_t = −d_t the per-transition residual in the TB sign (δ_t > 0: the Student's
    flow into the transition falls short of what it should pass on, i.e. it under-samples there).

    As the grid code of Kim et al. (2025) (``teacher-db``), the Teacher's reward sums per-transition terms,
    so residuals of opposite signs cannot cancel as they do in the telescoped δ. The official code weights
    d_t > 0 (the over-sampled side), the inverse of the paper's rule; this follows the paper.
    """
    delta = -residuals.detach().to(torch.float64)
    weight = 1.0 + C * (delta > 0).to(torch.float64)
    per_step = torch.log1p(eps + weight * delta**2) * valid.to(torch.float64)
    return per_step.sum(1).log() + alpha * log_reward.to(torch.float64)
