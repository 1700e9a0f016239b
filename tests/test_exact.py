import pytest
import torch

from adaptive_teacher.envs import DeceptiveGrid
from adaptive_teacher.metrics import ExactEvaluator
from adaptive_teacher.objectives import trajectory_balance

from .helpers import far_from_uniform_policy, optimal_policy


def test_dp_distribution_sums_to_one_and_matches_sampling():
    env = DeceptiveGrid(2, 8)
    model = far_from_uniform_policy(env, seed=0)
    ev = ExactEvaluator(env)
    p = ev.distribution(model)
    assert abs(float(p.sum()) - 1.0) < 1e-9
    n = 100_000
    x = env.rollout(model, n).terminal
    counts = torch.bincount(ev.position(x), minlength=ev.n_states).to(torch.float64)
    emp = counts[ev.terminal] / n
    assert float((emp - p).abs().sum()) < 0.04
    # every sampled state is terminal-reachable and probability mass sits only there
    assert bool(ev.terminal[ev.position(x)].all())


def test_tb_residual_is_zero_for_the_exact_optimal_policy():
    env = DeceptiveGrid(2, 6)
    model = optimal_policy(env)
    ev = ExactEvaluator(env)
    assert model.log_Z.item() == pytest.approx(ev.log_Z, abs=1e-5)
    torch.manual_seed(1)
    fwd = env.with_rewards(env.rollout(model, 256))
    bwd = env.backward_rollout(ev.terminal_states)
    bwd.log_reward = env.log_reward(ev.terminal_states)
    for traj in (fwd, bwd):
        _, delta = trajectory_balance(env.log_probs(model, traj), model.log_Z, traj.log_reward.float())
        assert delta.abs().max().item() < 1e-4
    # and the optimal policy's exact terminal distribution is the target
    assert float((ev.distribution(model) - ev.target).abs().sum()) < 1e-5


def test_l1_of_target_is_zero_and_mean_convention():
    env = DeceptiveGrid(2, 6)
    ev = ExactEvaluator(env)
    out = ev.l1(optimal_policy(env))
    assert out["l1"] < 1e-5
    assert out["l1_mean"] == out["l1"] / ev.n_terminal


def test_log_z_bounds_work_on_discrete_environments_and_are_tight_at_the_optimum():
    """ELBO = log Ẑ_IS = EUBO = log Z for the exact optimal policy (every log weight equals log Z)."""
    from adaptive_teacher.metrics.bounds import log_z_bounds
    from adaptive_teacher.metrics.exact import optimal_policy

    env = DeceptiveGrid(2, 6)
    policy = optimal_policy(env)
    states = env.enumerate_states()
    terminal = states[env.forward_mask(states)[:, env.stop]]
    probs = env.log_reward(terminal).softmax(0)
    target = terminal[torch.multinomial(probs, 300, replacement=True, generator=torch.Generator().manual_seed(0))]
    b = log_z_bounds(env, policy, 300, target_samples=target)
    for key in ("elbo", "log_Z_is", "eubo"):
        assert b[key] == pytest.approx(env.log_partition(), abs=1e-5), key
    assert b["delta_log_Z_elbo"] == pytest.approx(0, abs=1e-5) and b["samples"].shape == (300, 2)


def test_the_modes_a_perfect_sampler_finds_match_sampling_the_target():
    from adaptive_teacher.metrics.exact import exact_sampler_curve

    env = DeceptiveGrid(2, 8)
    ev = ExactEvaluator(env)
    modes = env.is_mode(ev.terminal_states)
    assert int(modes.sum()) > 1
    one, ten, many = ev.expected_modes([1, 10, 10**9])
    assert one == pytest.approx(float(ev.target[modes].sum()), rel=1e-12)  # one draw: the mode mass
    assert many == pytest.approx(float(modes.sum()), abs=1e-6)  # endless draws find every mode
    torch.manual_seed(0)
    draws = torch.multinomial(ev.target.double(), 20_000 * 10, replacement=True).view(20_000, 10)
    found = [len(set(row.tolist()) & set(modes.nonzero().squeeze(1).tolist())) for row in draws]
    assert ten == pytest.approx(sum(found) / len(found), abs=0.03)
    calls, expected, label = exact_sampler_curve(env, 1000.0, points=11)
    assert calls[0] == 0 and calls[-1] == 1000.0 and expected[0] == 0 and "perfect sampler" in label
    assert all(a <= b for a, b in zip(expected[:-1], expected[1:], strict=True))
    assert exact_sampler_curve(DeceptiveGrid(4, 128), 1000.0) is None  # too large to enumerate
    assert exact_sampler_curve(env, 1000.0, points=11, evaluator=ev)[1] == expected  # an evaluator built already
