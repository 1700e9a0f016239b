"""Metropolis-adjusted Langevin (MALA) local search over a batch of chains (Sendera et al., 2024, §3.3).

Proposal (Roberts & Tweedie, 1996), with step size η:
    x' = x + η·∇log R(x) + sqrt(2η)·z,   z ~ N(0, I),
so q(x' | x) = N(x'; x + η·∇log R(x), 2η·I), accepted with probability
    min(1, R(x')·q(x | x') / (R(x)·q(x' | x))),
log q(x' | x) = −|x' − x − η·∇log R(x)|² / (4η) + const.

The (shared) step size is adapted toward ``target_accept`` (0.574, the optimal MALA acceptance rate of
Roberts & Rosenthal, 1998, and Sendera et al.'s ``--target_acceptance_rate``), by one of two rules:

* ``adaptation="every_step"`` (the local search of Sendera et al.'s and Kim et al.'s diffusion code): after
  every step η ← 1.01·η if the batch acceptance rate exceeds the target, else 0.99·η, burn-in or not;
* ``adaptation="burn_in"``: a Robbins–Monro update on log η, log η += (acceptance rate − target), during
  burn-in only; afterwards η is frozen, so the post-burn-in chain is an exact MH chain with R/Z invariant
  (what a sampler needs; the tests use it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def mala(
    log_reward_fn: Callable[[Tensor], Tensor],
    grad_fn: Callable[[Tensor], Tensor],
    x0: Tensor,
    n_steps: int = 200,
    burn_in: int = 100,
    step_size: float = 0.001,
    target_accept: float = 0.574,
    adapt: bool = True,
    keep: str = "accepted",
    adaptation: str = "burn_in",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, float, float]:
    """Run ``n_steps`` MALA steps on the chains ``x0`` [n, dim]; returns (samples, final η, acceptance rate).

    ``keep="accepted"`` (default; Sendera et al.'s local search, which feeds a replay buffer): the
    proposals accepted after burn-in, [m, dim] with m ≤ n·(n_steps − burn_in) (new, distinct points; note
    that as a *set* they follow R(x)·a(x), a(x) the acceptance probability from x, not exactly R).
    ``keep="chain"``: every chain state after each post-burn-in step, [n·(n_steps − burn_in), dim], an
    exact (correlated) sample of R/Z once the chains have mixed.
    The acceptance rate is that of the post-burn-in steps (of all steps if ``burn_in >= n_steps``).
    ``step_size`` (η₀ = 0.001, the default ``--ld_step`` of Sendera et al.'s and Kim et al.'s code) is adapted
    by the ``adaptation`` rule (module docstring) when ``adapt``.
    """
    if keep not in ("accepted", "chain"):
        raise ValueError(f"keep must be 'accepted' or 'chain', got {keep!r}")
    if adaptation not in ("burn_in", "every_step"):
        raise ValueError(f"adaptation must be 'burn_in' or 'every_step', got {adaptation!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    x = x0.detach().clone()
    log_r = log_reward_fn(x).to(torch.float64)
    grad = grad_fn(x).detach()
    log_eta = math.log(step_size)
    kept: list[Tensor] = []
    n_acc = n_prop = 0
    n_acc_all = n_prop_all = 0
    for i in range(n_steps):
        eta = math.exp(log_eta)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        prop = x + eta * grad + math.sqrt(2 * eta) * noise
        log_r_prop = log_reward_fn(prop).to(torch.float64)
        grad_prop = grad_fn(prop).detach()
        x64, p64 = x.to(torch.float64), prop.to(torch.float64)
        log_q_fwd = -((p64 - x64 - eta * grad.to(torch.float64)) ** 2).sum(-1) / (4 * eta)
        log_q_bwd = -((x64 - p64 - eta * grad_prop.to(torch.float64)) ** 2).sum(-1) / (4 * eta)
        log_alpha = log_r_prop - log_r + log_q_bwd - log_q_fwd
        u = torch.rand(x.shape[0], generator=generator, dtype=torch.float64, device=x.device)
        accept = u.log() < log_alpha  # NaN log_alpha (e.g. a non-finite proposal) rejects
        x = torch.where(accept[:, None], prop, x)
        log_r = torch.where(accept, log_r_prop, log_r)
        grad = torch.where(accept[:, None], grad_prop, grad)
        rate = float(accept.double().mean())
        n_acc_all += int(accept.sum())
        n_prop_all += accept.numel()
        if adapt and adaptation == "every_step":
            log_eta += math.log(1.01) if rate > target_accept else math.log(0.99)
        if i < burn_in:
            if adapt and adaptation == "burn_in":
                log_eta += rate - target_accept
            continue
        n_acc += int(accept.sum())
        n_prop += accept.numel()
        kept.append(prop[accept] if keep == "accepted" else x.clone())
    samples = torch.cat(kept) if kept else x.new_zeros((0, x.shape[1]))
    acc_rate = n_acc / n_prop if n_prop else (n_acc_all / n_prop_all if n_prop_all else 0.0)
    return samples, math.exp(log_eta), acc_rate
