"""Bounds and estimates of log Z for any sampler whose log-probabilities the environment computes (diffusion
samplers and discrete environments alike), and the 2-Wasserstein distance.

For a trajectory τ = (s_0, …, x) (for diffusion x_0 = 0, …, x_1 = x) the log importance weight is

    w(τ) = log R(x) + Σ log P_B(τ | x) − Σ log P_F(τ)        (all sums in float64).

* ELBO    = E_{τ ~ P_F}[w] ≤ log Z                                       (Jensen)
* log Ẑ_IS = log mean_i exp(w_i) over the same τ (unbiased in Z, so E[log Ẑ_IS] ≤ log Z, but tighter)
* EUBO    = E_{x ~ R/Z, τ ~ P_B(·|x)}[w] ≥ log Z                         (Jensen on the reverse KL)

Sendera et al. (2024) report Δ log Z for the ELBO and the importance-weighted estimate; Kim et al.
(2025) the same. Here ``delta_log_Z_elbo = log Z − ELBO`` and ``delta_log_Z_is = log Z − log Ẑ_IS`` are signed
(≥ 0 in expectation; take ``abs`` for the "absolute error" reporting convention).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _log_weights(env, model: nn.Module, traj, lp=None) -> Tensor:
    """w = log R(x) + Σ log P_B − Σ log P_F per trajectory, from ``lp`` when the sampler recorded it."""
    lp = env.log_probs(model, traj, dtype=torch.float64) if lp is None else lp
    log_r = env.log_reward(traj.terminal)
    return log_r + lp.log_pb.to(torch.float64).sum(1) - lp.log_pf.to(torch.float64).sum(1)


@torch.no_grad()
def log_z_bounds(
    env, model: nn.Module, n: int, target_samples: Tensor | None = None, batch: int = 1000
) -> dict[str, float | int | Tensor | None]:
    """ELBO, log Ẑ_IS and (given exact ``target_samples``) EUBO of the sampler ``model`` on ``env``.

    ``n`` on-policy trajectories are drawn in batches of ``batch`` (no exploration); each target sample
    gets one backward-bridge trajectory. Returns ``elbo``, ``log_Z_is``, ``eubo`` (None without targets),
    ``log_Z`` (exact, None when unknown), ``delta_log_Z_elbo``, ``delta_log_Z_is`` (None when log Z is
    unknown), ``n`` and ``samples`` (the n sampled x, the terminal states, [n, ...], e.g. for plots or W2).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    was_training = model.training
    model.eval()
    try:
        ws, xs = [], []
        done = 0
        while done < n:
            b = min(batch, n - done)
            recorded = getattr(env, "rollout_with_log_probs", None)  # discrete: the sampling passes' own
            if recorded is not None:
                traj, lp = recorded(model, b)
            else:
                traj, lp = env.rollout(model, b), None
            ws.append(_log_weights(env, model, traj, lp))
            xs.append(traj.terminal)
            done += b
        w = torch.cat(ws)
        elbo = float(w.mean())
        log_z_is = float(torch.logsumexp(w, 0) - math.log(w.numel()))
        eubo = None
        if target_samples is not None:
            pb_model = model if getattr(model, "learn_pb", False) else None  # a learned P_B samples the bridge
            us = [
                _log_weights(env, model, env.backward_rollout(target_samples[i : i + batch], pb_model))
                for i in range(0, target_samples.shape[0], batch)
            ]
            eubo = float(torch.cat(us).mean())
    finally:
        model.train(was_training)
    log_z = env.log_partition()
    return {
        "elbo": elbo,
        "log_Z_is": log_z_is,
        "eubo": eubo,
        "log_Z": log_z,
        "delta_log_Z_elbo": None if log_z is None else log_z - elbo,
        "delta_log_Z_is": None if log_z is None else log_z - log_z_is,
        "n": int(w.numel()),
        "samples": torch.cat(xs),
    }


def wasserstein2(x: Tensor, y: Tensor, num_iter_max: int = 1_000_000) -> float:
    """Exact 2-Wasserstein distance between the empirical measures of ``x`` [n, d] and ``y`` [m, d]:
    sqrt(min_π Σ π_ij·|x_i − y_j|²) over couplings of the uniform weights, solved with POT's network
    simplex (``ot.emd2``). Needs the optional dependency POT (``pip install pot``)."""
    try:
        import ot
    except ImportError as e:
        raise ImportError(
            "the 2-Wasserstein metric needs the optional package POT: install it with `pip install pot`"
        ) from e
    a = x.detach().to(torch.float64).cpu()
    b = y.detach().to(torch.float64).cpu()
    cost = ((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T).clamp(min=0)
    wa = torch.full((a.shape[0],), 1.0 / a.shape[0], dtype=torch.float64, device="cpu")
    wb = torch.full((b.shape[0],), 1.0 / b.shape[0], dtype=torch.float64, device="cpu")
    value = ot.emd2(wa.numpy(), wb.numpy(), cost.numpy(), numItermax=num_iter_max)
    return math.sqrt(max(float(value), 0.0))
