"""Training objectives. Every objective also returns the signed per-trajectory residual δ the Teacher uses.

δ = log R(x) + Σ log P_B − log Z − Σ log P_F  (δ > 0: the sampler *under*-samples x).
With detailed balance, log Z is the learned initial-state flow log F(s0), so δ has the same meaning.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adaptive_teacher.envs.base import StepLogProbs


def trajectory_balance(lp: StepLogProbs, log_Z: Tensor, log_reward: Tensor) -> tuple[Tensor, Tensor]:
    """TB (Malkin et al., 2022): loss = mean δ². Returns (loss, δ)."""
    delta = log_reward + lp.log_pb.sum(1) - log_Z - lp.log_pf.sum(1)
    return (delta**2).mean(), delta


def detailed_balance(lp: StepLogProbs, log_reward: Tensor) -> tuple[Tensor, Tensor]:
    """DB (Bengio et al., 2023): per transition s→s', log F(s) + log P_F(s'|s) − log F(s') − log P_B(s|s');
    the stop transition s→x uses log F(x-as-terminal) = log R(x). Loss = mean over trajectories of the
    sum of squared per-transition residuals. Returns (loss, δ) with δ the telescoped residual (TB with
    log Z = log F(s0))."""
    assert lp.log_flow is not None, "detailed balance needs a policy with a flow head"
    batch, length = lp.log_pf.shape
    next_flow = lp.log_flow.new_zeros((batch, length))
    next_flow[:, :-1] = lp.log_flow[:, 1:]
    stop_step = (lp.valid.sum(1) - 1)[:, None]
    steps = torch.arange(length, device=lp.valid.device)[None, :]
    next_flow = next_flow.where(steps != stop_step, log_reward[:, None].to(next_flow.dtype))
    resid = (lp.log_flow + lp.log_pf - next_flow - lp.log_pb) * lp.valid
    loss = (resid**2).sum(1).mean()
    delta = log_reward + lp.log_pb.sum(1) - lp.log_flow[:, 0] - lp.log_pf.sum(1)
    return loss, delta


def vargrad(lp: StepLogProbs, log_reward: Tensor) -> tuple[Tensor, Tensor]:
    """VarGrad (Richter et al., 2020; Zhang et al., 2023): with w = log R + Σ log P_B − Σ log P_F, the batch
    estimate log Ẑ = mean w replaces the learned log Z; loss = mean (w − mean w)². Returns (loss, δ = w − log Ẑ)."""
    w = log_reward + lp.log_pb.sum(1) - lp.log_pf.sum(1)
    delta = w - w.mean()
    return (delta**2).mean(), delta
