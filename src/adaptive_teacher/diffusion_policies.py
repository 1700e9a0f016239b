"""Drift networks of diffusion samplers: u_θ(x, t) (and optionally a per-step log-variance), plus log Z.

The forward SDE is dx = u_θ(x, t)·dt + σ·dW on t ∈ [0, 1] from x_0 = 0 (Zhang & Chen, 2022, PIS;
Sendera et al., 2024). ``DiffusionPolicy.forward(x, t)`` returns ``(drift, log_var)``: the drift [B, dim]
and, with ``learn_var=True``, the log-variance per unit time [B, dim] (otherwise None, meaning σ²).

Two architectures:

``arch="pis"`` (the CPU default; the "PIS architecture" of Zhang & Chen, 2022, as used by Sendera et al.
with ``--pis_architectures``): ``harmonics`` = 64 Fourier time features sin/cos(c_k·t + φ_k) with
c_k = linspace(0.1, 100) and a learned phase φ (initialised N(0, 1)); time MLP 2H → h → h (GELU between);
state embedding a single Linear(dim, h); the two embeddings are *added*, then GELU, 2 × [Linear(h, h),
GELU], Linear(h, 2·dim). h = 64.

``arch="at256"`` (the wider network of Kim et al., 2025's diffusion code; Sendera et al.'s non-PIS
modules at width 256): time features sin/cos(2πk·t), k = 1..256; time MLP 512 → 256 → 256, state MLP
dim → 256 → 256 (GELU after every layer); the embeddings are *concatenated*, then Linear(512, 256), GELU,
Linear(256, 256), GELU, Linear(256, 2·dim).

The time branch (Fourier features + time MLP, and the PIS Langevin scale) depends on t only: ``forward``
evaluates it once per distinct time given (a scalar t, a [T] grid for B·T rows, or a precomputed
``embed_time(t)``) and broadcasts it to the rows, instead of once per row (~46 % of the PIS network's FLOPs
on a B·T batch).

The output layer is zero-initialised (weights and bias), so an untrained sampler is Brownian motion with
variance σ² per unit time, which samples N(0, σ²·I) at t = 1 exactly.

``learn_var=True``: log-var = 4·tanh(raw) + log σ² (Sendera et al.'s ``log_var_range`` = 4), raw being the
second half of the output (zero at initialisation, so log-var = log σ²).

``langevin=True`` (the Langevin parametrisation of Zhang & Chen, 2022, studied by Sendera et al.):
drift = NN(x, t) + s_θ(t)·clip(∇log R(x), ±lgv_clip). ``grad_fn`` returns ∇log R (detached; the target's
gradient is not differentiated through). The scale s_θ is a separate network, zero-weight/0.01-bias
initialised (so s = 0.01 at the start), scalar by default or one per coordinate with
``langevin_per_dim=True``; for ``pis`` it is a 3-layer MLP of the Fourier time features only, for ``at256``
an MLP of the concatenated state and time embeddings (as in those codes). ``lgv_clip`` = 100 and the
final clip of the network output at ±``out_clip`` = 10⁴ are Sendera et al.'s ``--clipping`` values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from adaptive_teacher.errors import ConfigError, option

ARCHS = ("pis", "at256")


def _zero_last(layer: nn.Linear, bias: float = 0.0) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.constant_(layer.bias, bias)


class FourierTime(nn.Module):
    """Time features: [sin(c·t + φ), cos(c·t + φ)] for a fixed frequency vector c and phase φ (on the device of
    ``freqs``)."""

    def __init__(self, freqs: Tensor, learned_phase: bool):
        super().__init__()
        self.register_buffer("freqs", freqs[None, :])
        if learned_phase:
            self.phase = nn.Parameter(torch.randn(1, freqs.numel(), device=freqs.device))
        else:
            self.register_buffer("phase", torch.zeros(1, freqs.numel(), device=freqs.device))
        self.n_out = 2 * freqs.numel()

    def forward(self, t: Tensor) -> Tensor:
        arg = t[:, None] * self.freqs + self.phase
        return torch.cat([arg.sin(), arg.cos()], -1)


class TimeEmbedding(NamedTuple):
    """The time branch of a ``DiffusionPolicy`` evaluated at m times (``DiffusionPolicy.embed_time``)."""

    emb: Tensor  # [m, h]: the time MLP's output
    lgv_scale: Tensor | None  # [m, n_scale]: the PIS Langevin scale s_θ(t); None unless arch="pis", langevin

    def steps(self) -> list[TimeEmbedding]:
        """One single-time TimeEmbedding per row (e.g. one per sampling step)."""
        scales = [None] * self.emb.shape[0] if self.lgv_scale is None else self.lgv_scale.split(1)
        return [TimeEmbedding(e, sc) for e, sc in zip(self.emb.split(1), scales, strict=True)]


class DiffusionPolicy(nn.Module):
    """A diffusion sampler's drift network; ``forward(x, t) -> (drift, log_var | None)``.

    ``t_scale`` is σ², used only for the learned variance's offset (log-var = 4·tanh(raw) + log σ²).
    ``log_Z`` is the trajectory-balance estimate of log Z. Parameters and buffers are created on ``device``
    (None: torch's default device).
    """

    def __init__(
        self,
        dim: int,
        arch: str = "pis",
        hidden: int | None = None,
        harmonics: int | None = None,
        t_scale: float = 1.0,
        learn_var: bool = False,
        log_var_range: float = 4.0,
        langevin: bool = False,
        grad_fn: Callable[[Tensor], Tensor] | None = None,
        langevin_per_dim: bool = False,
        lgv_clip: float = 1e2,
        out_clip: float = 1e4,
        zero_init: bool = True,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError(f"{option('arch')} must be one of {ARCHS}, got {arch!r}")
        if not isinstance(dim, int) or dim <= 0:
            raise ConfigError(f"{option('dim')} must be a positive integer, got {dim!r}")
        if not t_scale > 0:
            raise ConfigError(f"{option('t_scale')} (σ²) must be > 0, got {t_scale!r}")
        if langevin and grad_fn is None:
            raise ConfigError(
                f"{option('langevin')} needs the target's gradient: pass grad_fn (e.g. env.grad_log_reward)"
            )
        self.dim, self.arch = dim, arch
        self.t_scale = float(t_scale)
        self.learn_var, self.log_var_range = learn_var, float(log_var_range)
        self.langevin, self.grad_fn = langevin, grad_fn
        self.lgv_clip, self.out_clip = float(lgv_clip), float(out_clip)
        h = hidden or (64 if arch == "pis" else 256)
        n_h = harmonics or (64 if arch == "pis" else 256)
        self.hidden, self.harmonics = h, n_h
        n_out = 2 * dim
        n_scale = dim if langevin_per_dim else 1
        act = nn.GELU

        def lin(n_in: int, n_out: int) -> nn.Linear:
            return nn.Linear(n_in, n_out, device=device)

        if arch == "pis":
            self.time_features = FourierTime(torch.linspace(0.1, 100.0, n_h, device=device), learned_phase=True)
            self.t_model = nn.Sequential(lin(2 * n_h, h), act(), lin(h, h))
            self.s_model = lin(dim, h)
            self.joint = nn.Sequential(act(), lin(h, h), act(), lin(h, h), act(), lin(h, n_out))
            if langevin:
                self.lgv_model = nn.Sequential(
                    lin(2 * n_h, h), act(), lin(h, h), act(), lin(h, h), act(), lin(h, n_scale)
                )
        else:
            freqs = 2 * math.pi * torch.arange(1, n_h + 1, dtype=torch.float32, device=device)
            self.time_features = FourierTime(freqs, learned_phase=False)
            self.t_model = nn.Sequential(lin(2 * n_h, h), act(), lin(h, h), act())
            self.s_model = nn.Sequential(lin(dim, h), act(), lin(h, h), act())
            self.joint = nn.Sequential(lin(2 * h, h), act(), lin(h, h), act(), lin(h, n_out))
            if langevin:
                self.lgv_model = nn.Sequential(lin(2 * h, h), act(), lin(h, h), act(), lin(h, n_scale))
        if zero_init:
            _zero_last(self.joint[-1])
            if langevin:
                _zero_last(self.lgv_model[-1], 0.01)
        self.log_Z = nn.Parameter(torch.zeros((), device=device))

    def time_encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters of the time encoding (Fourier features and ``t_model``): what Kim et al.'s diffusion
        code clips (max norm 0.1) in the Teacher."""
        return list(self.time_features.parameters()) + list(self.t_model.parameters())

    def network_parameters(self) -> list[nn.Parameter]:
        """Every parameter except ``log_Z`` (which usually gets its own learning rate)."""
        return [p for name, p in self.named_parameters() if name != "log_Z"]

    def embed_time(self, t: Tensor | float) -> TimeEmbedding:
        """The time branch (it depends on t only) at a scalar t or a 1-d tensor of m times."""
        t = torch.as_tensor(t, dtype=self.log_Z.dtype, device=self.log_Z.device)
        if t.dim() == 0:
            t = t.reshape(1)
        if t.dim() != 1:
            raise ValueError(f"t must be a scalar or a 1-d tensor, got shape {tuple(t.shape)}")
        tf = self.time_features(t)
        scale = self.lgv_model(tf) if self.langevin and self.arch == "pis" else None
        return TimeEmbedding(self.t_model(tf), scale)

    def forward(self, x: Tensor, t: Tensor | float | TimeEmbedding) -> tuple[Tensor, Tensor | None]:
        """Drift [N, dim] and log-variance per unit time [N, dim] (None unless ``learn_var``) at (x, t).

        ``t``: a scalar (every row at the same time), a [N] tensor (one time per row), or a [M] grid with
        N = B·M whose rows are ordered (b, k): row i is at time t[i % M] (e.g. all B·T transitions of B
        trajectories on the T-point time grid); or the same as a precomputed ``embed_time(t)``. The time branch
        is evaluated on the given times only and broadcast to the rows.
        """
        n = x.shape[0]
        te = t if isinstance(t, TimeEmbedding) else self.embed_time(t)
        m = te.emb.shape[0]
        if n % m != 0:
            raise ValueError(f"{m} times for {n} rows of x: pass a scalar t, one t per row, or a grid dividing {n}")
        reps = n // m
        s_emb = self.s_model(x)  # [n, h]
        if self.arch == "pis":
            joint_in = (s_emb.view(reps, m, self.hidden) + te.emb).view(n, self.hidden)
        else:
            joint_in = torch.cat([s_emb, _rows(te.emb, reps)], -1)
        out = self.joint(joint_in)
        drift, raw = out[:, : self.dim], out[:, self.dim :]
        if self.langevin:
            with torch.no_grad():
                g = self.grad_fn(x.detach()).to(x.dtype).clamp(-self.lgv_clip, self.lgv_clip)
            scale = _rows(te.lgv_scale, reps) if self.arch == "pis" else self.lgv_model(joint_in)
            drift = drift + scale * g
        drift = drift.clamp(-self.out_clip, self.out_clip)
        if not self.learn_var:
            return drift, None
        log_var = self.log_var_range * torch.tanh(raw) + math.log(self.t_scale)
        return drift, log_var


def _rows(per_time: Tensor, reps: int) -> Tensor:
    """[m, k] values per time -> [reps·m, k] per row (row i gets per_time[i % m])."""
    if reps == 1:
        return per_time
    return per_time.expand(reps, -1) if per_time.shape[0] == 1 else per_time.repeat(reps, 1)
