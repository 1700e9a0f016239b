"""The diffusion-sampler environment: an Euler–Maruyama discretised SDE from x_0 = 0 to the sample x_1.

Time grid t_k = k·dt, dt = 1/T, k = 0..T (T = ``n_steps``). A trajectory is x_0 = 0, x_{dt}, …, x_1 = x.

Forward policy (learned; Sendera et al., 2024, eq. 5 with the Euler–Maruyama discretisation):
    P_F(x_{t+dt} | x_t) = N(x_t + dt·u_θ(x_t, t), v_θ(x_t, t)·dt·I),
with v_θ = σ² (or the policy's learned per-coordinate variance), σ² = ``t_scale``.

Backward policy (fixed; the discretised Brownian bridge pinned at x_0 = 0):
    P_B(x_{t−dt} | x_t) = N(((t−dt)/t)·x_t, ((t−dt)/t)·σ²·dt·I)   for t > dt,
and the last backward step to x_0 = 0 is a point mass (contributes log P_B = 0).

With a zero drift and v = σ² the forward process is Brownian motion, x_1 ~ N(0, σ²·I), and P_B is exactly
its time reversal, so Σ log P_F − Σ log P_B = log N(x_1; 0, σ²·I) for every trajectory (tested).

States are float32 [B, T+1, dim] with states[:, 0] = 0 and states[:, T] = x; actions are an unused
LongTensor of zeros [B, T]; every trajectory has length T. Log-rewards are float64 log-densities; a
non-finite log-density or gradient raises RewardError (``densities.check_finite``). ``env.to(device)``
moves the environment and its density's tensors (device.py); states are created on ``env.device``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor, nn

from adaptive_teacher.densities import Density, check_finite
from adaptive_teacher.device import OnDevice
from adaptive_teacher.envs.base import StepLogProbs, Trajectories, check_batch_output
from adaptive_teacher.errors import ConfigError, option

LOG_2PI = math.log(2 * math.pi)


def _gaussian_log_prob(x: Tensor, mean: Tensor, var: Tensor | float) -> Tensor:
    """Σ over the last axis of log N(x; mean, var): ``var`` a float (isotropic: the normalising constant is
    added once per row, not per element) or a tensor that broadcasts."""
    if isinstance(var, float):
        return ((x - mean) ** 2).sum(-1) * (-0.5 / var) - 0.5 * x.shape[-1] * (math.log(var) + LOG_2PI)
    return -0.5 * (((x - mean) ** 2) / var + var.log() + LOG_2PI).sum(-1)


class DiffusionEnv(OnDevice):
    """A continuous-time sampler of ``density`` discretised into ``n_steps`` Euler–Maruyama steps."""

    family = "diffusion"
    state_dtype = torch.float32
    n_modes: int | None = None

    def __init__(self, density: Density, n_steps: int = 100, t_scale: float | None = None):
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ConfigError(
                f"{option('n_steps')} (the number of diffusion steps) must be an integer >= 1, got {n_steps!r}"
            )
        sigma2 = density.t_scale if t_scale is None else t_scale
        if not (isinstance(sigma2, int | float) and math.isfinite(sigma2) and sigma2 > 0):
            raise ConfigError(
                f"{option('t_scale')} (σ², the reference variance per unit time) must be > 0, got {sigma2!r}"
            )
        self.density = density
        self.name = density.name
        self.dim = density.dim
        self.n_steps = n_steps
        self.max_length = n_steps
        self.t_scale = float(sigma2)
        self.dt = 1.0 / n_steps

    # ---- rewards ----------------------------------------------------------------------------------
    def log_reward(self, x: Tensor) -> Tensor:
        """log R(x), float64 [n] on x's device; a non-finite value raises RewardError with the count of bad samples."""
        where = f"{type(self.density).__name__}.log_reward"
        log_r = check_batch_output(self.density.log_reward(x), len(x), where).to(device=x.device, dtype=torch.float64)
        return check_finite(log_r, "log-density", x)

    def grad_log_reward(self, x: Tensor) -> Tensor:
        """∇ log R(x) in the dtype of ``x``; a non-finite entry raises RewardError (e.g. for ``grad_fn``)."""
        where = f"{type(self.density).__name__}.grad_log_reward"
        grad = check_batch_output(self.density.grad_log_reward(x), len(x), where, (self.dim,)).to(x.device)
        return check_finite(grad, "gradient of the log-density", x)

    def with_rewards(self, traj: Trajectories) -> Trajectories:
        return replace(traj, log_reward=self.log_reward(traj.states[:, -1]))

    def log_partition(self) -> float | None:
        """The density's exact log Z (None when unknown)."""
        return self.density.log_Z

    # ---- discrete-interface compatibility -----------------------------------------------------------
    def initial_states(self, n: int) -> Tensor:
        return torch.zeros(n, self.dim, dtype=self.state_dtype, device=self.device)

    def enumerate_states(self) -> None:
        return None

    def is_mode(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def state_key(self, x: Tensor) -> Tensor:
        """An int64 hash of each row's float32 bit pattern: identical samples share a key.

        −0.0 is folded into +0.0 first. Each coordinate's 32 bits are mixed into a 64-bit state with
        xor-then-multiply by an odd 64-bit constant (FNV-1a style, wrapping int64 arithmetic), then a final
        xor-shift/multiply avalanche; distinct samples collide with probability ~n²/2⁶⁴.
        """
        bits = (x.to(torch.float32) + 0.0).contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
        h = torch.full((x.shape[0],), -3750763034362895579, dtype=torch.int64, device=x.device)  # FNV offset
        prime = 1099511628211  # the 64-bit FNV prime
        for d in range(bits.shape[1]):
            h = (h ^ bits[:, d]) * prime
        h = h ^ ((h >> 29) & 0x7FFFFFFFF)
        h = h * -4658895280553007687  # 0xBF58476D1CE4E5B9 as int64 (splitmix64 multiplier)
        return h ^ ((h >> 32) & 0xFFFFFFFF)

    # ---- the time grid and step distributions ----------------------------------------------------------
    def times(self, device=None) -> Tensor:
        """t_k = k/T for k = 0..T (float32 [T+1])."""
        return torch.arange(self.n_steps + 1, device=device, dtype=torch.float32) / self.n_steps

    def _forward_params(self, model: nn.Module, x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor | float]:
        """Mean and variance of P_F(· | x at time t): (x + dt·u, v·dt), the variance a float σ²·dt when the
        policy's is fixed, else a per-coordinate tensor."""
        drift, log_var = model(x, t)
        var = self.t_scale * self.dt if log_var is None else log_var.exp() * self.dt
        return torch.add(x, drift, alpha=self.dt), var

    def _bridge_params(self, x: Tensor, k: int) -> tuple[Tensor, float]:
        """Mean and variance of P_B(x_{k−1} | x_k = x) for step index k ≥ 2: ((k−1)/k)·x, ((k−1)/k)·σ²·dt."""
        ratio = (k - 1) / k
        return ratio * x, ratio * self.t_scale * self.dt

    # ---- sampling ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(
        self,
        model: nn.Module,
        n: int | None = None,
        start: Tensor | Trajectories | None = None,
        eps: float = 0.0,
        start_step: int = 0,
        return_log_probs: bool = False,
    ) -> Trajectories | tuple[Trajectories, StepLogProbs]:
        """Sample trajectories forward with ``model``.

        ``start``: None (``n`` trajectories from x_0 = 0), a [n, dim] tensor of initial states (must be 0:
        the backward bridge is pinned there), or a Trajectories batch whose first ``start_step``
        transitions are kept and the rest re-sampled (the "back-and-forth" local search: e.g.
        ``rollout(model, start=env.backward_rollout(x), start_step=T − K)``).

        ``eps`` > 0 explores: each step is drawn with standard deviation sqrt(v·dt + eps²), an extra
        per-step std added in quadrature (as in Kim et al., 2025's diffusion code); the log-probabilities
        (``log_probs`` or ``return_log_probs``) are still those of the policy's own variance v·dt.

        With ``return_log_probs`` the per-step log P_F / log P_B accumulated during sampling come back too
        (float32; equal to :meth:`log_probs` up to float rounding).
        """
        T = self.n_steps
        if isinstance(start, Trajectories):
            if not 0 <= start_step <= T:
                raise ValueError(f"start_step must be in [0, {T}], got {start_step}")
            states = start.states.clone().to(self.state_dtype)
        else:
            if start_step != 0:
                raise ValueError("start_step > 0 needs a Trajectories prefix as start")
            if start is None:
                if n is None:
                    raise ValueError("rollout needs n or start")
                x0 = self.initial_states(n)
            else:
                x0 = start.to(self.state_dtype)
                if bool((x0 != 0).any()):
                    raise ValueError("diffusion trajectories start at x_0 = 0 (the backward bridge is pinned there)")
            states = x0.new_zeros((x0.shape[0], T + 1, self.dim))
            states[:, 0] = x0
        batch = states.shape[0]
        device = states.device
        log_pf = states.new_zeros((batch, T))
        log_pb = states.new_zeros((batch, T))
        x = states[:, start_step]
        # The time input of each step: a policy with ``embed_time`` (DiffusionPolicy) gets its time branch
        # evaluated once per rollout on the whole grid; any other model gets the scalar t_k.
        embed = getattr(model, "embed_time", None)
        step_t = [k * self.dt for k in range(T)] if embed is None else embed(self.times(device)[:T]).steps()
        for k in range(start_step, T):
            mean, var = self._forward_params(model, x, step_t[k])
            if isinstance(var, float):
                nxt = torch.add(mean, torch.randn_like(x), alpha=math.sqrt(var + eps**2))
            else:
                nxt = mean + (var + eps**2 if eps > 0 else var).sqrt() * torch.randn_like(x)
            states[:, k + 1] = nxt
            if return_log_probs:
                log_pf[:, k] = _gaussian_log_prob(nxt, mean, var)
                if k >= 1:
                    b_mean, b_var = self._bridge_params(nxt, k + 1)
                    log_pb[:, k] = _gaussian_log_prob(x, b_mean, b_var)
            x = nxt
        traj = Trajectories(
            states,
            torch.zeros(batch, T, dtype=torch.long, device=device),
            torch.full((batch,), T, dtype=torch.long, device=device),
        )
        if not return_log_probs:
            return traj
        if start_step > 0:  # the kept prefix: recompute its log-probs in one pass
            prefix = self.log_probs(model, traj)
            log_pf[:, :start_step] = prefix.log_pf[:, :start_step]
            log_pb[:, :start_step] = prefix.log_pb[:, :start_step]
        valid = torch.ones(batch, T, dtype=torch.bool, device=device)
        return traj, StepLogProbs(log_pf, log_pb, None, valid)

    @torch.no_grad()
    def backward_rollout(self, x: Tensor, model: nn.Module | None = None) -> Trajectories:
        """Trajectories ending in each x, sampled with the Brownian-bridge P_B (``model`` is unused: P_B is
        fixed). x_{k−1} ~ N(((k−1)/k)·x_k, ((k−1)/k)·σ²·dt·I) for k = T..2, then x_0 = 0."""
        T = self.n_steps
        x = x.to(self.state_dtype)
        batch = x.shape[0]
        states = x.new_zeros((batch, T + 1, self.dim))
        states[:, T] = x
        cur = x
        for k in range(T, 1, -1):
            mean, var = self._bridge_params(cur, k)
            cur = torch.add(mean, torch.randn_like(cur), alpha=math.sqrt(var))
            states[:, k - 1] = cur
        return Trajectories(
            states,
            torch.zeros(batch, T, dtype=torch.long, device=x.device),
            torch.full((batch,), T, dtype=torch.long, device=x.device),
        )

    # ---- the loss's log-probabilities ----------------------------------------------------------------
    def log_probs(self, model: nn.Module, traj: Trajectories, dtype: torch.dtype = torch.float32) -> StepLogProbs:
        """Per-step log P_F and log P_B of ``traj`` in ONE batched network pass over its B·T (x_k, t_k).

        ``dtype`` float32 (training): the Gaussian algebra runs in float32, with the normalising constants
        (per step when the variance is fixed) computed in float64 and added once per step. ``dtype`` float64
        (the log Z bounds): everything after the network pass runs in float64. Other dtypes: float32, cast.

        A policy with ``embed_time`` (``DiffusionPolicy``) gets t as the [T] grid (row b·T + k is at t_k) and
        evaluates its time branch once per step; any other model gets one time per row.
        """
        states = traj.states.to(self.state_dtype)
        batch, T1, dim = states.shape
        T = T1 - 1
        if T != self.n_steps:
            raise ValueError(f"trajectories have {T} steps, the environment {self.n_steps}")
        device = states.device
        work = torch.float64 if dtype == torch.float64 else torch.float32
        src = states[:, :T].reshape(batch * T, dim)
        grid = self.times(device)[:T]
        drift, log_var = model(src, grid if hasattr(model, "embed_time") else grid.repeat(batch))
        s = states.to(work)
        src, dst = s[:, :T].reshape(batch * T, dim), s[:, 1:].reshape(batch * T, dim)
        mean = torch.add(src, drift.to(work), alpha=self.dt)
        sq = (dst - mean) ** 2
        if log_var is None:
            var = self.t_scale * self.dt
            log_pf = sq.sum(-1) * (-0.5 / var) - 0.5 * dim * (math.log(var) + LOG_2PI)
        else:
            log_var = log_var.to(work)
            log_pf = -0.5 * ((sq * torch.exp(-log_var)).sum(-1) / self.dt + log_var.sum(-1))
            log_pf = log_pf - 0.5 * dim * (math.log(self.dt) + LOG_2PI)
        # Backward: the step k → k−1 for k = 2..T, N(((k−1)/k)·x_k, ((k−1)/k)·σ²·dt); the step to x_0 = 0
        # contributes 0. Ratios, variances and constants are computed in float64, then cast.
        log_pb = torch.zeros(batch, T, dtype=work, device=device)
        if T > 1:
            k = torch.arange(2, T + 1, dtype=torch.float64, device=device)
            ratio = (k - 1) / k
            b_var = ratio * (self.t_scale * self.dt)
            const = -0.5 * dim * (b_var.log() + LOG_2PI)
            parent, child = s[:, 1:T], s[:, 2:]
            sq_b = torch.addcmul(parent, ratio.to(work)[None, :, None], child, value=-1.0).square().sum(-1)
            log_pb[:, 1:] = sq_b * (-0.5 / b_var).to(work) + const.to(work)
        valid = torch.ones(batch, T, dtype=torch.bool, device=device)
        return StepLogProbs(log_pf.view(batch, T).to(dtype), log_pb.to(dtype), None, valid)
