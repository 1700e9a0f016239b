"""The continuous task family: densities, drift networks, the diffusion environment, MALA, log Z bounds."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch import nn

from adaptive_teacher.densities import GMM25, Gaussian, Manywell, sample_doublewell_x1
from adaptive_teacher.diffusion_policies import DiffusionPolicy
from adaptive_teacher.envs.diffusion import DiffusionEnv
from adaptive_teacher.errors import ConfigError, RewardError
from adaptive_teacher.metrics.bounds import log_z_bounds, wasserstein2
from adaptive_teacher.objectives import trajectory_balance
from adaptive_teacher.sources.mala import mala


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small networks on a shared 2-core machine: intra-op threading only adds contention.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def log_normal(x: torch.Tensor, var: float) -> torch.Tensor:
    x = x.to(torch.float64)
    return (-0.5 * (x**2 / var + math.log(2 * math.pi * var))).sum(-1)


def doublewell_quadrature() -> tuple[float, torch.Tensor, torch.Tensor]:
    x = torch.linspace(-5, 5, 200_001, dtype=torch.float64)
    logf = -(x**4) + 6 * x**2 + 0.5 * x
    log_z = float(torch.logsumexp(logf, 0) + math.log(float(x[1] - x[0])))
    return log_z, x, torch.softmax(logf, 0)


# ---- densities ------------------------------------------------------------------------------------


def test_manywell_log_z():
    log_z1, _, _ = doublewell_quadrature()
    assert log_z1 == pytest.approx(math.log(Manywell.Z_X1), abs=1e-8)
    assert Manywell(32).log_Z == pytest.approx(164.69567532, abs=1e-7)
    assert Manywell(2).log_Z == pytest.approx(log_z1 + 0.5 * math.log(2 * math.pi), abs=1e-8)


def test_gmm25_is_normalised():
    g = torch.linspace(-14, 14, 701, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_mass = torch.logsumexp(GMM25().log_reward(grid), 0) + 2 * math.log(float(g[1] - g[0]))
    assert float(log_mass) == pytest.approx(GMM25.log_Z, abs=1e-6)


@pytest.mark.parametrize("density", [GMM25(), Manywell(4), Gaussian(3, var=2.0, mean=0.5)])
def test_gradients_match_autograd(density):
    x = density.sample(64, generator=gen(1)).double() + 0.3 * torch.randn(64, density.dim, generator=gen(2)).double()
    x.requires_grad_(True)
    (auto,) = torch.autograd.grad(density.log_reward(x).sum(), x)
    assert density.log_reward(x).dtype == torch.float64
    assert torch.allclose(density.grad_log_reward(x.detach()), auto, atol=1e-9, rtol=1e-9)
    assert density.grad_log_reward(x.detach().float()).dtype == torch.float32


def test_exact_samples():
    n = 20_000
    x = GMM25().sample(n, generator=gen(0))
    assert x.shape == (n, 2) and x.dtype == torch.float32
    nearest = torch.round(x / 5) * 5
    counts = torch.unique(nearest, dim=0, return_counts=True)[1]
    assert counts.numel() == 25 and (counts - n / 25).abs().max() < 5 * math.sqrt(n / 25)
    assert float((x - nearest).var()) == pytest.approx(0.3, rel=0.05)
    assert torch.equal(GMM25().sample(10, generator=gen(3)), GMM25().sample(10, generator=gen(3)))

    _, grid, p = doublewell_quadrature()
    m1, m2, right = float((p * grid).sum()), float((p * grid**2).sum()), float(p[grid > 0].sum())
    y = Manywell(4).sample(n, generator=gen(4)).double()
    x1, x2 = y[:, 0::2].reshape(-1), y[:, 1::2].reshape(-1)
    se = 4 / math.sqrt(x1.numel())
    assert float(x1.mean()) == pytest.approx(m1, abs=4 * se * math.sqrt(m2 - m1**2))
    assert float((x1**2).mean()) == pytest.approx(m2, abs=0.05)
    assert float((x1 > 0).double().mean()) == pytest.approx(right, abs=0.015)
    assert float(x2.mean()) == pytest.approx(0.0, abs=0.04) and float(x2.var()) == pytest.approx(1.0, abs=0.04)
    assert sample_doublewell_x1(7, gen(5)).shape == (7,)


@pytest.mark.parametrize("make", [lambda: Manywell(3), lambda: Manywell(0), lambda: Manywell(-2), lambda: GMM25(3)])
def test_dim_is_validated(make):
    with pytest.raises(ConfigError, match="^dim "):
        make()


def test_non_finite_log_density_raises():
    env = DiffusionEnv(Manywell(4))
    x = torch.zeros(5, 4)
    x[1, 0] = float("nan")
    x[3, 2] = float("inf")
    with pytest.raises(RewardError, match="2 of 5"):
        env.log_reward(x)
    with pytest.raises(RewardError, match="2 of 5"):
        env.grad_log_reward(x)
    assert env.log_reward(torch.zeros(3, 4)).dtype == torch.float64


# ---- drift networks --------------------------------------------------------------------------------


def _scrambled_policy(dim: int, **kw) -> DiffusionPolicy:
    torch.manual_seed(0)
    m = DiffusionPolicy(dim, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("arch", ["pis", "at256"])
def test_policy_starts_as_brownian_motion(arch):
    x = torch.randn(8, 3)
    m = DiffusionPolicy(3, arch=arch, t_scale=2.0)
    drift, log_var = m(x, 0.3)
    assert drift.shape == (8, 3) and torch.all(drift == 0) and log_var is None
    assert torch.equal(m(x, torch.full((8,), 0.3))[0], drift)
    mv = DiffusionPolicy(3, arch=arch, t_scale=2.0, learn_var=True)
    assert torch.allclose(mv(x, torch.rand(8))[1], torch.full((8, 3), math.log(2.0)))
    assert m.hidden == (64 if arch == "pis" else 256)
    net = m.network_parameters()
    assert all(p is not m.log_Z for p in net) and len(net) + 1 == len(list(m.parameters()))


def test_policy_langevin():
    density = GMM25()
    with pytest.raises(ConfigError, match="grad_fn"):
        DiffusionPolicy(2, langevin=True)
    x = 12 * torch.randn(16, 2, generator=gen(0))
    for arch in ("pis", "at256"):
        m = DiffusionPolicy(2, arch=arch, langevin=True, grad_fn=density.grad_log_reward)
        drift, _ = m(x, 0.5)  # zero network output + 0.01 · clip(∇log R, ±100)
        assert torch.allclose(drift, 0.01 * density.grad_log_reward(x).clamp(-100, 100), atol=1e-6)


@pytest.mark.parametrize("arch", ["pis", "at256"])
@pytest.mark.parametrize("langevin", [False, True])
def test_policy_time_inputs_agree(arch, langevin):
    """A scalar t, one t per row, a [M] grid for B·M rows and a precomputed embed_time(t) give the same
    outputs (the time branch is evaluated once per distinct time and broadcast)."""
    density = GMM25()
    kw = {"langevin": langevin, "grad_fn": density.grad_log_reward} if langevin else {}
    m = _scrambled_policy(2, arch=arch, t_scale=5.0, learn_var=True, **kw)
    b, grid = 6, torch.linspace(0, 0.9, 10)
    x = 3 * torch.randn(b * 10, 2, generator=gen(0))
    per_row = m(x, grid.repeat(b))
    for t in (grid, m.embed_time(grid)):
        out = m(x, t)
        for got, want in zip(out, per_row, strict=True):
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    t3 = float(grid[3])
    scalar = m(x, t3)
    for t in (torch.full((b * 10,), t3), torch.tensor(t3), m.embed_time(t3), m.embed_time(grid).steps()[3]):
        for got, want in zip(m(x, t), scalar, strict=True):
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert m(x[:0], grid)[0].shape == (0, 2)
    with pytest.raises(ValueError, match="times for"):
        m(x, torch.rand(7))
    with pytest.raises(ValueError, match="1-d"):
        m(x, torch.rand(6, 10))


def test_policy_validation():
    with pytest.raises(ConfigError, match="^arch "):
        DiffusionPolicy(2, arch="unet")
    with pytest.raises(ConfigError, match="^t_scale "):
        DiffusionPolicy(2, t_scale=0.0)


# ---- the environment ------------------------------------------------------------------------------


def test_env_validation_and_defaults():
    assert DiffusionEnv(GMM25()).t_scale == 5.0 and DiffusionEnv(Manywell()).t_scale == 1.0
    assert DiffusionEnv(GMM25(), t_scale=2.0).t_scale == 2.0
    for bad in (0, -3, 1.5):
        with pytest.raises(ConfigError, match="^n_steps "):
            DiffusionEnv(GMM25(), n_steps=bad)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="^t_scale "):
            DiffusionEnv(GMM25(), t_scale=bad)


def test_trajectory_conventions():
    env = DiffusionEnv(Manywell(4), n_steps=7)
    m = DiffusionPolicy(4)
    for traj in (env.rollout(m, 5), env.backward_rollout(env.density.sample(5))):
        assert traj.states.shape == (5, 8, 4) and traj.states.dtype == torch.float32
        assert torch.all(traj.states[:, 0] == 0)
        assert traj.actions.shape == (5, 7) and traj.actions.dtype == torch.long and torch.all(traj.actions == 0)
        assert torch.all(traj.lengths == 7)
        assert torch.equal(traj.terminal, traj.states[:, -1])
        rewarded = env.with_rewards(traj)
        assert torch.equal(rewarded.log_reward, env.density.log_reward(traj.states[:, -1]))
    assert env.enumerate_states() is None and not env.is_mode(torch.zeros(3, 4)).any()
    assert env.log_partition() == env.density.log_Z and env.name == "manywell"


@pytest.mark.parametrize(
    ("density", "arch", "learn_var"), [(GMM25(), "pis", False), (Manywell(4), "at256", True)], ids=["25gmm", "mw4"]
)
def test_log_pf_minus_log_pb_is_the_gaussian_at_init(density, arch, learn_var):
    """Zero drift, variance σ²: the forward process is Brownian motion and P_B its exact reversal."""
    env = DiffusionEnv(density, n_steps=25)
    m = DiffusionPolicy(env.dim, arch=arch, t_scale=env.t_scale, learn_var=learn_var)
    forward = env.rollout(m, 32)
    backward = env.backward_rollout(density.sample(32, generator=gen(0)))
    for traj in (forward, backward):
        lp = env.log_probs(m, traj, dtype=torch.float64)
        diff = lp.log_pf.sum(1) - lp.log_pb.sum(1)
        assert torch.allclose(diff, log_normal(traj.states[:, -1], env.t_scale), atol=1e-9)
        assert torch.all(lp.log_pb[:, 0] == 0) and lp.valid.all()
        lp32 = env.log_probs(m, traj)
        assert lp32.log_pf.dtype == torch.float32
        assert torch.allclose(lp32.log_pf.sum(1).double() - lp32.log_pb.sum(1).double(), diff, atol=1e-3)


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_batched_log_probs_equal_rollout_log_probs(eps):
    env = DiffusionEnv(GMM25(), n_steps=20)
    m = _scrambled_policy(2, t_scale=env.t_scale, learn_var=True, langevin=True, grad_fn=env.grad_log_reward)
    traj, acc = env.rollout(m, 16, eps=eps, return_log_probs=True)
    calls = []
    handle = m.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    lp = env.log_probs(m, traj)
    handle.remove()
    assert calls == [16 * 20]  # one network pass over all B·T (state, time) pairs
    assert torch.allclose(lp.log_pf, acc.log_pf, atol=1e-4, rtol=1e-5)
    assert torch.allclose(lp.log_pb, acc.log_pb, atol=1e-4, rtol=1e-5)
    # Gradients reach the network (the zero-initialised output layer included) and log Z through TB.
    m0 = DiffusionPolicy(2, t_scale=env.t_scale)
    traj0 = env.with_rewards(env.rollout(m0, 16))
    loss, _ = trajectory_balance(env.log_probs(m0, traj0), m0.log_Z, traj0.log_reward.float())
    loss.backward()
    assert m0.joint[-1].weight.grad.abs().sum() > 0 and m0.log_Z.grad is not None


@pytest.mark.parametrize(
    ("arch", "learn_var", "langevin"), [("pis", False, False), ("pis", True, True), ("at256", True, False)]
)
def test_float32_log_probs_agree_with_float64(arch, learn_var, langevin):
    """The training path (float32 Gaussian algebra, constants added per step) vs the float64 path of the log Z
    bounds, on a policy with random non-zero weights: per-step values, per-trajectory sums, TB gradients."""
    env = DiffusionEnv(Manywell(8), n_steps=50)
    kw = {"langevin": True, "grad_fn": env.grad_log_reward} if langevin else {}
    m = _scrambled_policy(8, arch=arch, t_scale=env.t_scale, learn_var=learn_var, **kw)
    torch.manual_seed(1)
    for traj in (env.rollout(m, 32, eps=0.2), env.backward_rollout(env.density.sample(32, generator=gen(1)))):
        traj = env.with_rewards(traj)
        grads = []
        for dtype in (torch.float32, torch.float64):
            m.zero_grad()
            lp = env.log_probs(m, traj, dtype=dtype)
            assert lp.log_pf.dtype == lp.log_pb.dtype == dtype and torch.all(lp.log_pb[:, 0] == 0)
            loss, _ = trajectory_balance(lp, m.log_Z.to(dtype), traj.log_reward.to(dtype))
            loss.backward()
            grads.append(torch.cat([p.grad.flatten() for p in m.network_parameters()]).double())
            if dtype == torch.float32:
                lp32 = lp
        scale = lp.log_pf.abs().sum(1) + lp.log_pb.abs().sum(1)
        for name in ("log_pf", "log_pb"):
            a, b = getattr(lp32, name).detach().double(), getattr(lp, name).detach()
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-3)
            assert torch.all((a.sum(1) - b.sum(1)).abs() <= 1e-5 * scale.detach())
        w32 = (lp32.log_pb.sum(1) - lp32.log_pf.sum(1)).detach().double()
        w64 = (lp.log_pb.sum(1) - lp.log_pf.sum(1)).detach()
        assert torch.all((w32 - w64).abs() <= 1e-3 * (1 + w64.abs()))
        assert float((grads[0] - grads[1]).norm() / grads[1].norm()) < 1e-3


def test_log_probs_for_any_model_and_empty_batches():
    """A model without ``embed_time`` gets one t per row (log_probs) or a scalar t (rollout) and gives the
    same numbers; a batch of 0 trajectories (e.g. no row passed the Teacher's gate) works."""
    env = DiffusionEnv(GMM25(), n_steps=10)
    m = _scrambled_policy(2, t_scale=env.t_scale, learn_var=True)

    class PerRowTime(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = m

        def forward(self, x, t):
            t = torch.as_tensor(t)
            assert t.dim() == 0 or t.shape == (x.shape[0],)
            return self.inner(x, t)

    plain = PerRowTime()
    torch.manual_seed(0)
    traj, acc = env.rollout(plain, 8, return_log_probs=True)
    torch.manual_seed(0)
    assert torch.allclose(env.rollout(m, 8).states, traj.states, atol=1e-5)
    for dtype in (torch.float32, torch.float64):
        a, b = env.log_probs(plain, traj, dtype=dtype), env.log_probs(m, traj, dtype=dtype)
        assert torch.allclose(a.log_pf, b.log_pf, atol=1e-4) and torch.equal(a.log_pb, b.log_pb)
    assert torch.allclose(acc.log_pf, env.log_probs(m, traj).log_pf, atol=1e-4)
    empty = env.log_probs(m, traj.select(torch.zeros(8, dtype=torch.bool)))
    assert empty.log_pf.shape == empty.log_pb.shape == (0, 10)


def test_rollout_from_a_prefix_keeps_it():
    env = DiffusionEnv(GMM25(), n_steps=10)
    m = _scrambled_policy(2, t_scale=env.t_scale)
    prefix = env.backward_rollout(env.density.sample(6, generator=gen(0)))
    traj, acc = env.rollout(m, start=prefix, start_step=7, return_log_probs=True)
    assert torch.equal(traj.states[:, :8], prefix.states[:, :8])
    assert not torch.equal(traj.states[:, 8:], prefix.states[:, 8:])
    lp = env.log_probs(m, traj)
    assert torch.allclose(lp.log_pf, acc.log_pf, atol=1e-4) and torch.allclose(lp.log_pb, acc.log_pb, atol=1e-4)
    with pytest.raises(ValueError):
        env.rollout(m, start=torch.ones(3, 2))


def test_exploration_adds_per_step_variance():
    env = DiffusionEnv(Gaussian(2, var=1.0), n_steps=10)
    m = DiffusionPolicy(2, t_scale=1.0)
    torch.manual_seed(0)
    x = env.rollout(m, 4000, eps=0.3).states[:, -1]
    assert float(x.var()) == pytest.approx(1.0 + 10 * 0.3**2, abs=0.15)
    x = env.rollout(m, 4000).states[:, -1]
    assert float(x.var()) == pytest.approx(1.0, abs=0.1)


def test_backward_bridge_marginals():
    """Under the Brownian bridge from x_1 to 0: x_t | x_1 ~ N(t·x_1, t(1−t)·σ²·I)."""
    env = DiffusionEnv(GMM25(), n_steps=10)
    torch.manual_seed(0)
    end = torch.tensor([[10.0, -5.0]]).expand(4000, 2)
    mid = env.backward_rollout(end).states[:, 4]  # t = 0.4
    assert torch.allclose(mid.mean(0), 0.4 * end[0], atol=0.1)
    assert torch.allclose(mid.var(0), torch.full((2,), 0.4 * 0.6 * 5.0), rtol=0.08)


def test_tb_residual_sign():
    """δ = log R + Σlog P_B − log Z − Σlog P_F: at init (log Z = 0) δ = log R(x) − log N(x; 0, σ²I), so δ > 0
    where the sampler puts too little mass (a far mode) and δ < 0 where it puts too much (the origin)."""
    env = DiffusionEnv(GMM25(), n_steps=20)
    m = DiffusionPolicy(2, t_scale=env.t_scale)
    x = torch.tensor([[10.0, 10.0], [0.0, 0.0], [-5.0, 5.0]])
    traj = env.with_rewards(env.backward_rollout(x))
    _, delta = trajectory_balance(env.log_probs(m, traj, dtype=torch.float64), m.log_Z.double(), traj.log_reward)
    expected = env.log_reward(x) - log_normal(x, env.t_scale)
    assert torch.allclose(delta, expected, atol=1e-8)
    assert delta[0] > 0 and delta[1] < 0


def test_state_key():
    env = DiffusionEnv(Manywell(4))
    x = torch.randn(10_000, 4, generator=gen(0))
    keys = env.state_key(x)
    assert keys.dtype == torch.int64 and keys.unique().numel() == 10_000
    assert torch.equal(env.state_key(x[[3, 3, 7]]), keys[[3, 3, 7]])
    assert torch.equal(env.state_key(x.double()), keys)
    z = torch.zeros(2, 4)
    z[1, 2] = -0.0
    assert env.state_key(z)[0] == env.state_key(z)[1]
    y = x[:2].clone()
    y[1] = y[0]
    y[1, 3] = torch.nextafter(y[0, 3], torch.tensor(10.0))  # one ulp apart
    assert env.state_key(y)[0] != env.state_key(y)[1]


# ---- MALA -------------------------------------------------------------------------------------------


def test_mala_gaussian_target():
    target = Gaussian(2, var=4.0, mean=1.0)
    x0 = torch.zeros(200, 2)
    chain, eta, acc = mala(target.log_reward, target.grad_log_reward, x0, 300, 100, keep="chain", generator=gen(0))
    assert chain.shape == (200 * 200, 2)
    assert torch.allclose(chain.mean(0), torch.ones(2), atol=0.1)
    assert torch.allclose(chain.var(0), torch.full((2,), 4.0), rtol=0.1)
    assert acc == pytest.approx(0.574, abs=0.1) and eta > 0.001
    accepted, _, acc2 = mala(target.log_reward, target.grad_log_reward, x0, 300, 100, generator=gen(0))
    assert accepted.shape[0] == round(acc2 * 200 * 200)


def test_mala_metropolis_correction():
    """N(0, 1) with a fixed step η = 1: the unadjusted Langevin chain's stationary variance is
    2η / (1 − (1 − η)²) = 2; the MH correction must bring it back to 1."""
    target = Gaussian(1, var=1.0)
    torch.manual_seed(0)
    chain, eta, _ = mala(
        target.log_reward, target.grad_log_reward, torch.zeros(500, 1), 500, 100, 1.0, adapt=False, keep="chain"
    )
    assert eta == 1.0
    assert float(chain.var()) == pytest.approx(1.0, abs=0.06) and float(chain.mean()) == pytest.approx(0, abs=0.05)


def test_mala_non_gaussian_moments():
    """log p(x) = −x⁴/4: E[x²] = 2·Γ(3/4)/Γ(1/4), E[x⁴] = 1."""

    def log_r(x):
        return -(x.to(torch.float64) ** 4).sum(-1) / 4

    def grad(x):
        return -(x**3)

    torch.manual_seed(0)
    chain, _, acc = mala(log_r, grad, torch.zeros(4000, 1), 600, 100, 0.1, keep="chain")
    assert float((chain**2).mean()) == pytest.approx(2 * math.gamma(0.75) / math.gamma(0.25), abs=0.02)
    assert float((chain**4).mean()) == pytest.approx(1.0, abs=0.08)  # s.e. ≈ 0.015 (correlated chains)
    assert acc == pytest.approx(0.574, abs=0.1)


# ---- log Z bounds and W2 ------------------------------------------------------------------------------


def test_bounds_exact_gaussian():
    """The untrained sampler samples q = N(0, σ²I) exactly and w = log R(x) − log q(x), so
    ELBO = log Z − KL(q‖p) and EUBO = log Z + KL(p‖q) in closed form; σ² = var gives all = log Z."""
    torch.manual_seed(0)
    env = DiffusionEnv(Gaussian(3, var=2.0), n_steps=10)
    m = DiffusionPolicy(3, t_scale=env.t_scale)
    b = log_z_bounds(env, m, 300, env.density.sample(300), batch=128)
    for key in ("elbo", "log_Z_is", "eubo"):
        assert b[key] == pytest.approx(env.density.log_Z, abs=1e-9)
    assert b["delta_log_Z_elbo"] == pytest.approx(0, abs=1e-9) and b["n"] == 300 and b["samples"].shape == (300, 3)

    sigma2, var, d = 1.0, 2.0, 3
    env = DiffusionEnv(Gaussian(d, var=var), n_steps=10, t_scale=sigma2)
    m = DiffusionPolicy(d, t_scale=sigma2)

    def kl(a, b):
        return 0.5 * d * (a / b - 1 - math.log(a / b))

    b = log_z_bounds(env, m, 4000, env.density.sample(4000, generator=gen(1)), batch=2000)
    log_z = env.density.log_Z
    assert b["elbo"] == pytest.approx(log_z - kl(sigma2, var), abs=0.05)
    assert b["eubo"] == pytest.approx(log_z + kl(var, sigma2), abs=0.1)
    assert b["elbo"] <= b["log_Z_is"] <= log_z + 0.05
    assert b["delta_log_Z_elbo"] == pytest.approx(kl(sigma2, var), abs=0.05)


def test_bounds_untrained_25gmm():
    torch.manual_seed(0)
    env = DiffusionEnv(GMM25(), n_steps=20)
    m = DiffusionPolicy(2, t_scale=env.t_scale)
    b = log_z_bounds(env, m, 1000, env.density.sample(1000, generator=gen(2)), batch=500)
    assert b["elbo"] < GMM25.log_Z - 1 < GMM25.log_Z + 1 < b["eubo"]
    assert b["delta_log_Z_elbo"] == pytest.approx(-b["elbo"]) and b["delta_log_Z_elbo"] > 0
    assert b["elbo"] <= b["log_Z_is"]
    assert m.training  # the evaluation restores the mode


def test_wasserstein2():
    pytest.importorskip("ot")
    x = torch.randn(300, 3, generator=gen(0))
    shift = torch.tensor([3.0, -1.0, 0.5])
    assert wasserstein2(x, x) == pytest.approx(0.0, abs=1e-6)
    assert wasserstein2(x, x + shift) == pytest.approx(float(shift.norm()), abs=1e-5)
    perm = x[torch.randperm(300, generator=gen(1))]
    assert wasserstein2(x, perm) == pytest.approx(0.0, abs=1e-6)


def test_wasserstein2_without_pot(monkeypatch):
    monkeypatch.setitem(sys.modules, "ot", None)
    with pytest.raises(ImportError, match="pip install pot"):
        wasserstein2(torch.zeros(2, 2), torch.ones(2, 2))
