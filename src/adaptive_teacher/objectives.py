"""Training objectives. Every objective also returns the signed per-trajectory residual δ the Teacher uses.

δ = log R(x) + Σ log P_B − log Z − Σ log P_F  (δ > 0: the sampler *under*-samples x).
With detailed balance, log Z is the learned initial-state flow log F(s0), so δ has the same meaning.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adaptive_teacher.envs.base import StepLogProbs


def trajectory_balance(lp: StepLogProbs, log_Z: Tensor, log_reward: Tensor) -> tuple[Tensor, Tensor]:
    """TB (Malkin et al., 2022): loss = mean δ². Returns (loss, δ)."""
    delta = log_reward + lp.log_pb.sum(1) - log_Z - lp.log_pf.sum(1)
    return (delta**2).mean(), delta


def detailed_balance_residuals(lp: StepLogProbs, log_reward: Tensor) -> Tensor:
    """Per-transition DB residuals d_t = log F(s) + log P_F(s'|s) − log F(s') − log P_B(s|s'), [B, L], 0 on
    padding; the stop transition s→x uses log F(x-as-terminal) = log R(x). (d_t > 0: the forward side is too
    large, i.e. the opposite sign of the TB residual δ.)"""
    assert lp.log_flow is not None, "detailed balance needs a policy with a flow head"
    batch, length = lp.log_pf.shape
    next_flow = lp.log_flow.new_zeros((batch, length))
    next_flow[:, :-1] = lp.log_flow[:, 1:]
    stop_step = (lp.valid.sum(1) - 1)[:, None]
    steps = torch.arange(length, device=lp.valid.device)[None, :]
    next_flow = next_flow.where(steps != stop_step, log_reward[:, None].to(next_flow.dtype))
    return (lp.log_flow + lp.log_pf - next_flow - lp.log_pb) * lp.valid


def detailed_balance(lp: StepLogProbs, log_reward: Tensor, return_residuals: bool = False):
    """DB (Bengio et al., 2023): per transition s→s', log F(s) + log P_F(s'|s) − log F(s') − log P_B(s|s');
    the stop transition s→x uses log F(x-as-terminal) = log R(x). Loss = mean over trajectories of the
    sum of squared per-transition residuals. Returns (loss, δ) with δ the telescoped residual (TB with
    log Z = log F(s0)), and the per-transition residuals [B, L] too with ``return_residuals``."""
    resid = detailed_balance_residuals(lp, log_reward)
    assert lp.log_flow is not None
    loss = (resid**2).sum(1).mean()
    delta = log_reward + lp.log_pb.sum(1) - lp.log_flow[:, 0] - lp.log_pf.sum(1)
    return (loss, delta, resid) if return_residuals else (loss, delta)


def vargrad(lp: StepLogProbs, log_reward: Tensor) -> tuple[Tensor, Tensor]:
    """VarGrad (Richter et al., 2020; Zhang et al., 2023): with w = log R + Σ log P_B − Σ log P_F, the batch
    estimate log Ẑ = mean w replaces the learned log Z; loss = mean (w − mean w)². Returns (loss, δ = w − log Ẑ)."""
    w = log_reward + lp.log_pb.sum(1) - lp.log_pf.sum(1)
    delta = w - w.mean()
    return (delta**2).mean(), delta


def gafn_trajectory_balance(
    lp: StepLogProbs,
    log_Z: Tensor,
    log_reward: Tensor,
    intrinsic: Tensor,
    forced_stop: Tensor,
    tiny: float = 1e-8,
) -> tuple[Tensor, Tensor]:
    """GAFN's augmented TB (Pan et al., 2023, as in the grid code of Kim et al., 2025). Returns (loss, δ).

    ``intrinsic`` [B, L+1] is r(s_t) for every state of each trajectory (detached), ``lp.log_flow`` the
    learned log F(s_t) of each transition's source. For a trajectory s_0 → … → s_k = x → stop:

        δ = log(R(x) + r(x) + 1e-8) + Σ_{t=1..k} log(P_B(s_{t−1}|s_t) + r(s_t)/F(s_t)) − log Z − Σ log P_F,

    loss = mean δ². The stop edge has P_B = 1 and no intrinsic term; where the stop was forced (the only
    action left at x: the official grid ends such trajectories without a stop action) the move into x
    keeps its plain P_B.
    """
    assert lp.log_flow is not None, "GAFN needs a policy with a flow head"
    length = lp.log_pf.shape[1]
    n_moves = lp.valid.sum(1) - 1  # transitions before the stop
    steps = torch.arange(length, device=lp.valid.device)[None, :]
    is_move = steps < n_moves[:, None]
    # The child of move t is s_{t+1}, the source of transition t+1 (x is the source of the stop).
    child_flow = torch.cat([lp.log_flow[:, 1:], lp.log_flow.new_zeros((lp.log_flow.shape[0], 1))], 1)
    child_r = intrinsic[:, 1 : length + 1].to(lp.log_pb.dtype)
    augmented = is_move & ~(forced_stop[:, None] & (steps == n_moves[:, None] - 1))
    edge = torch.logaddexp(lp.log_pb, child_r.clamp(min=0).log() - child_flow)
    log_pb = torch.where(augmented, edge, lp.log_pb)
    rows = torch.arange(len(n_moves), device=n_moves.device)
    r_x = intrinsic[rows, n_moves].to(torch.float64)
    log_terms = torch.stack([log_reward.to(torch.float64), r_x.log(), torch.full_like(r_x, math.log(tiny))])
    target = torch.logsumexp(log_terms, 0).to(lp.log_pf.dtype)  # log(R(x) + r(x) + 1e-8)
    delta = target + log_pb.sum(1) - log_Z - lp.log_pf.sum(1)
    return (delta**2).mean(), delta
