"""Target densities of the continuous task family (diffusion samplers) with exact log Z and exact samplers.

Every density exposes ``dim``, ``name``, ``log_Z`` (exact log of the normalising constant of the
*unnormalised* density ``exp(log_reward)``), ``log_reward(x)`` (float64 [n], vectorised),
``grad_log_reward(x)`` (analytic, same dtype as ``x``), ``sample(n, generator=None)`` (exact i.i.d. draws,
float32) and a default ``t_scale`` σ², the variance per unit time of the Brownian reference process of
the diffusion sampler (Sendera et al., 2024, "Improved off-policy training of diffusion samplers";
the values are those of their published run commands: ``--t_scale 5.`` for 25GMM, ``--t_scale 1.``
for Manywell).

Devices: a density is an ``OnDevice`` object (``density.to(device)`` moves its tensors; DiffusionEnv.to does
it); ``sample`` draws on its generator's device (a seeded CPU generator gives the same exact samples whatever
the run's device), or on the density's own without a generator.

Nothing here checks for non-finite values: :func:`check_finite` is the helper the environment calls on
every log-density and gradient it hands to a learner, so a bad value raises
:class:`~adaptive_teacher.errors.RewardError` with the number of offending samples.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from functools import lru_cache

import torch
from torch import Tensor

from adaptive_teacher.device import CPU, OnDevice
from adaptive_teacher.errors import ConfigError, RewardError, option

LOG_2PI = math.log(2 * math.pi)


def check_finite(values: Tensor, what: str = "log-density", x: Tensor | None = None) -> Tensor:
    """Return ``values`` unchanged, or raise RewardError naming how many samples are non-finite.

    ``values`` is [n] (log-densities) or [n, ...] (gradients); a sample counts once however many of its
    entries are bad. ``x`` (the samples) lets the message show the first offending one.
    """
    bad = ~torch.isfinite(values)
    if values.dim() > 1:
        bad = bad.flatten(1).any(1)
    n_bad = int(bad.sum())
    if n_bad:
        i = int(bad.nonzero()[0, 0])
        where = f" (first at x = {x[i].tolist()})" if x is not None else ""
        raise RewardError(
            f"{n_bad} of {bad.numel()} samples have a non-finite {what}{where}: the target density must be "
            "finite (and differentiable) wherever the sampler can go"
        )
    return values


def _check_dim(dim: int, even: bool = False) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise ConfigError(f"{option('dim')} must be a positive integer, got {dim!r}")
    if even and dim % 2:
        raise ConfigError(f"{option('dim')} must be even for manywell (the coordinates come in pairs), got {dim}")
    return dim


def _draw_device(density: Density, generator: torch.Generator | None) -> torch.device:
    """Where ``sample`` draws: on the generator's device, else on the density's."""
    return generator.device if generator is not None else density.device


class Density(OnDevice, ABC):
    """An unnormalised target density on R^dim: subclass it with ``dim`` and ``log_reward`` (−energy).

    Everything else is optional. ``grad_log_reward`` defaults to autograd through ``log_reward``;
    ``log_Z`` (the exact log normalising constant) defaults to None, ``sample`` (exact i.i.d. draws from
    R/Z) to none. Without them training works as usual and the evaluation reports the ELBO and the
    importance-weighted log Ẑ only: Δlog Z needs ``log_Z``; EUBO and W2 need ``sample``. ``t_scale`` (σ² of
    the sampler's reference Brownian motion) defaults to 1.0.
    """

    dim: int
    log_Z: float | None = None
    t_scale: float = 1.0

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    @abstractmethod
    def log_reward(self, x: Tensor) -> Tensor:
        """log R(x) = −E(x), [n] (float64 preferred)."""

    def grad_log_reward(self, x: Tensor) -> Tensor:
        """∇_x log R(x), [n, dim] in the dtype of ``x`` (default: autograd through ``log_reward``)."""
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_reward(leaf).sum(), leaf)
        return grad.to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact i.i.d. samples from R/Z, float32 [n, dim] on the generator's device (the density's without
        one); only for targets with an exact sampler."""
        raise NotImplementedError(f"{type(self).__name__} has no exact sampler")

    @property
    def has_sampler(self) -> bool:
        """Whether ``sample`` is implemented (exact samples give the EUBO and W2)."""
        return type(self).sample is not Density.sample


class Gaussian(Density):
    """log R(x) = −|x − mean|² / (2·var): an isotropic Gaussian with log Z = (d/2)·log(2π·var).

    Not a benchmark: the diffusion sampler whose drift is zero samples it *exactly* when
    ``var`` equals the sampler's σ² and ``mean`` is 0, which makes it the exactly-known test case.
    """

    name = "gaussian"

    def __init__(self, dim: int = 2, var: float = 1.0, mean: float = 0.0, t_scale: float | None = None):
        self.dim = _check_dim(dim)
        if not var > 0:
            raise ConfigError(f"the Gaussian variance must be > 0, got {var!r}")
        self.var, self.mean = float(var), float(mean)
        self.log_Z = 0.5 * self.dim * math.log(2 * math.pi * self.var)
        self.t_scale = float(var) if t_scale is None else float(t_scale)

    def log_reward(self, x: Tensor) -> Tensor:
        x = x.to(torch.float64)
        return -((x - self.mean) ** 2).sum(-1) / (2 * self.var)

    def grad_log_reward(self, x: Tensor) -> Tensor:
        return (self.mean - x) / self.var

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64, device=_draw_device(self, generator))
        return (self.mean + math.sqrt(self.var) * z).float()


class GMM25(Density):
    """25GMM (used by Sendera et al., 2024 and Kim et al., 2025): an equal-weight mixture of 25 Gaussians
    with means on {−10, −5, 0, 5, 10}² and covariance 0.3·I, *normalised*, so log Z = 0:

        log R(x) = logsumexp_k [log N(x; μ_k, 0.3·I)] − log 25.

    Default σ² (``t_scale``) = 5.0, Sendera et al.'s value for this target.
    """

    name = "25gmm"
    VAR = 0.3
    GRID = (-10.0, -5.0, 0.0, 5.0, 10.0)
    t_scale = 5.0
    log_Z = 0.0

    def __init__(self, dim: int = 2):
        if dim != 2:
            raise ConfigError(f"{option('dim')} must be 2 for 25gmm (the mixture is two-dimensional), got {dim!r}")
        self.dim = 2
        g = torch.tensor(self.GRID, dtype=torch.float64, device=self.device)
        self.means = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)  # [25, 2]
        self.n_components = self.means.shape[0]

    def _component_log_probs(self, x: Tensor) -> Tensor:
        """[n, 25] log N(x; μ_k, 0.3·I) in float64."""
        x = x.to(torch.float64)
        sq = ((x[:, None, :] - self.means.to(x.device)[None]) ** 2).sum(-1)
        return -sq / (2 * self.VAR) - 0.5 * self.dim * (LOG_2PI + math.log(self.VAR))

    def log_reward(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self._component_log_probs(x), 1) - math.log(self.n_components)

    def grad_log_reward(self, x: Tensor) -> Tensor:
        """∇ log R(x) = Σ_k w_k(x)·(μ_k − x)/0.3 with w_k(x) the posterior component responsibilities."""
        w = torch.softmax(self._component_log_probs(x), 1)  # [n, 25]
        x64 = x.to(torch.float64)
        g = (w @ self.means.to(x.device) - x64) / self.VAR
        return g.to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        dev = _draw_device(self, generator)
        k = torch.randint(self.n_components, (n,), generator=generator, device=dev)
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64, device=dev)
        return (self.means.to(dev)[k] + math.sqrt(self.VAR) * z).float()


# ---- Manywell -------------------------------------------------------------------------------------


def _doublewell_log_density(x1: Tensor) -> Tensor:
    """The unnormalised 1-D marginal log f(x1) = −x1⁴ + 6·x1² + 0.5·x1."""
    return -(x1**4) + 6 * x1**2 + 0.5 * x1


@lru_cache(maxsize=1)
def _doublewell_envelope() -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...], float]:
    """A Gaussian-mixture envelope q for rejection sampling from f ∝ exp(−x⁴ + 6x² + 0.5x).

    Built once by quadrature on a fine grid (float64). Two "well" components carry 95% of the mass, split
    as f's mass on each side of 0 (0.156 / 0.844), with f's mean there (≈ −1.666 / +1.714) and 1.05× its
    standard deviation there (≈ 0.226 / 0.214); a third, broad "bridge" component N(0, 1) with weight 0.05
    covers the saddle between the wells, where f is much flatter than a Gaussian (without it the bound M
    is 10⁴ times worse). log M = max_x [log f(x) − log q(x)] is taken on a 10⁻⁴ grid over [−4, 4] plus a
    10⁻³ margin (outside that range log f − log q < −130: f decays like exp(−x⁴), q like exp(−x²/2)).
    Returns (weights, means, stds, log_M); the acceptance rate Z_x1 / M is ≈ 0.82.
    """
    x = torch.linspace(-4.0, 4.0, 80_001, dtype=torch.float64, device=CPU)
    logf = _doublewell_log_density(x)
    p = torch.softmax(logf, 0)
    bridge = 0.05
    weights, means, stds = [], [], []
    for side in (x < 0, x >= 0):
        w = p[side].sum()
        m = (p[side] * x[side]).sum() / w
        s = ((p[side] * (x[side] - m) ** 2).sum() / w).sqrt()
        weights.append((1 - bridge) * float(w))
        means.append(float(m))
        stds.append(1.05 * float(s))
    weights.append(bridge)
    means.append(0.0)
    stds.append(1.0)
    logq = _mixture_log_prob(x, weights, means, stds)
    log_m = float((logf - logq).max()) + 1e-3
    return tuple(weights), tuple(means), tuple(stds), log_m


def _mixture_log_prob(x: Tensor, weights, means, stds) -> Tensor:
    w = torch.tensor(weights, dtype=torch.float64, device=x.device)
    m = torch.tensor(means, dtype=torch.float64, device=x.device)
    s = torch.tensor(stds, dtype=torch.float64, device=x.device)
    comp = -0.5 * ((x[:, None] - m) / s) ** 2 - s.log() - 0.5 * LOG_2PI + w.log()
    return torch.logsumexp(comp, 1)


def sample_doublewell_x1(
    n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Exact samples (float64 [n]) from f(x1) ∝ exp(−x1⁴ + 6x1² + 0.5x1) by rejection sampling, on ``device``
    (default: the generator's, else the CPU).

    Propose from the envelope q of :func:`_doublewell_envelope`, accept with probability
    f(x)/(M·q(x)) ≤ 1. Batches of proposals are drawn until ``n`` are accepted.
    """
    dev = torch.device(device) if device is not None else (generator.device if generator is not None else CPU)
    weights, means, stds, log_m = _doublewell_envelope()
    w = torch.tensor(weights, dtype=torch.float64, device=dev)
    m = torch.tensor(means, dtype=torch.float64, device=dev)
    s = torch.tensor(stds, dtype=torch.float64, device=dev)
    out: list[Tensor] = []
    have = 0
    while have < n:
        k = int(1.3 * (n - have)) + 16
        comp = torch.multinomial(w, k, replacement=True, generator=generator)
        prop = m[comp] + s[comp] * torch.randn(k, generator=generator, dtype=torch.float64, device=dev)
        log_ratio = _doublewell_log_density(prop) - _mixture_log_prob(prop, weights, means, stds) - log_m
        u = torch.rand(k, generator=generator, dtype=torch.float64, device=dev)
        acc = prop[u.log() < log_ratio]
        out.append(acc)
        have += acc.numel()
    return torch.cat(out)[:n]


class Manywell(Density):
    """Manywell (Midgley et al., 2023; as benchmarked by Sendera et al., 2024 and Kim et al., 2025).

    The coordinates come in ``dim/2`` pairs (x1, x2) = (x[2i], x[2i+1]), each an independent double well:

        log R(x) = Σ_pairs  −x1⁴ + 6·x1² + 0.5·x1 − 0.5·x2².

    log Z = (dim/2)·(log Z_x1 + ½·log 2π) with Z_x1 = ∫ exp(−x⁴ + 6x² + 0.5x) dx = 11784.50927
    (the constant of Sendera et al.'s code; quadrature reproduces it to 1e-9 relative, see the tests),
    so log Z = 164.69567532 for dim = 32 (the value Kim et al. subtract for Δ log Z).
    Exact samples: x1 by rejection sampling (:func:`sample_doublewell_x1`), x2 ~ N(0, 1).
    Default σ² (``t_scale``) = 1.0, Sendera et al.'s value for this target.
    """

    name = "manywell"
    Z_X1 = 11784.50927
    t_scale = 1.0

    def __init__(self, dim: int = 32):
        self.dim = _check_dim(dim, even=True)
        self.n_wells = self.dim // 2
        self.log_Z = self.n_wells * (math.log(self.Z_X1) + 0.5 * LOG_2PI)

    def log_reward(self, x: Tensor) -> Tensor:
        x = x.to(torch.float64)
        x1, x2 = x[:, 0::2], x[:, 1::2]
        return (_doublewell_log_density(x1) - 0.5 * x2**2).sum(1)

    def grad_log_reward(self, x: Tensor) -> Tensor:
        """∂/∂x1 = −4x1³ + 12x1 + 0.5, ∂/∂x2 = −x2."""
        x64 = x.to(torch.float64)
        g = torch.empty_like(x64)
        x1 = x64[:, 0::2]
        g[:, 0::2] = -4 * x1**3 + 12 * x1 + 0.5
        g[:, 1::2] = -x64[:, 1::2]
        return g.to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        dev = _draw_device(self, generator)
        x = torch.empty(n, self.dim, dtype=torch.float64, device=dev)
        x[:, 0::2] = sample_doublewell_x1(n * self.n_wells, generator, dev).view(n, self.n_wells)
        x[:, 1::2] = torch.randn(n, self.n_wells, generator=generator, dtype=torch.float64, device=dev)
        return x.float()


DENSITIES = {"25gmm": GMM25, "manywell": Manywell, "gaussian": Gaussian}


def make_density(name: str, dim: int | None = None) -> Density:
    """The density called ``name`` (``25gmm``, ``manywell`` or ``gaussian``), at ``dim`` when given."""
    if name not in DENSITIES:
        raise ConfigError(f"{option('task')}: unknown density {name!r}; choose one of {sorted(DENSITIES)}")
    cls = DENSITIES[name]
    return cls() if dim is None else cls(dim=dim)
