import math

import pytest
import torch

from adaptive_teacher.envs import DeceptiveGrid
from adaptive_teacher.policies import DiscretePolicy
from adaptive_teacher.sources import ReplayBuffer, back_and_forth, teacher_log_reward
from adaptive_teacher.sources.local_search import _suffix_log_ratio

from .helpers import optimal_policy

# ---- Teacher reward ------------------------------------------------------------------------------


def test_teacher_reward_formula_and_sign_convention():
    delta = torch.tensor([2.0, -2.0, 0.0])
    log_r = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    got = teacher_log_reward(delta, log_r, C=19.0, alpha=0.0, eps=1e-3).exp()
    expected = [math.log(1 + 1e-3 + 20 * 4), math.log(1 + 1e-3 + 4), math.log(1 + 1e-3)]
    assert got.tolist() == pytest.approx(expected)
    # δ > 0 (Student under-samples x) is weighted 1 + C times more than the same |δ| with δ < 0
    assert got[0] > got[1]


def test_teacher_reward_alpha_multiplies_by_reward_power():
    delta = torch.tensor([1.0, 1.0])
    log_r = torch.tensor([0.0, math.log(4.0)], dtype=torch.float64)
    got = teacher_log_reward(delta, log_r, alpha=0.5)
    assert float(got[1] - got[0]) == pytest.approx(0.5 * math.log(4.0))


def test_teacher_reward_half_square_variant():
    delta = torch.tensor([2.0])
    got = teacher_log_reward(delta, torch.zeros(1, dtype=torch.float64), half_square=True).exp()
    assert float(got) == pytest.approx(math.log(1 + 1e-3 + 20 * 2.0))


def test_teacher_reward_is_detached():
    delta = torch.tensor([1.0], requires_grad=True)
    assert not teacher_log_reward(delta, torch.zeros(1, dtype=torch.float64)).requires_grad


# ---- Replay buffer -------------------------------------------------------------------------------


def _add(buf, keys, prio):
    keys = torch.tensor(keys)
    buf.add(keys[:, None].clone(), keys, torch.tensor(prio, dtype=torch.float64), torch.zeros(len(keys)))


def test_buffer_deduplicates_and_keeps_newest_priority():
    buf = ReplayBuffer(10, (1,))
    _add(buf, [1, 2, 2], [0.1, 0.2, 0.3])
    assert len(buf) == 2
    assert dict(zip(buf.keys.tolist(), buf.priority.tolist(), strict=True)) == {1: 0.1, 2: 0.3}
    _add(buf, [1], [5.0])
    assert len(buf) == 2 and dict(zip(buf.keys.tolist(), buf.priority.tolist(), strict=True))[1] == 5.0


def test_buffer_fifo_eviction():
    buf = ReplayBuffer(3, (1,))
    _add(buf, [1, 2, 3], [9.0, 9.0, 9.0])
    _add(buf, [4, 5], [0.0, 0.0])
    assert sorted(buf.keys.tolist()) == [3, 4, 5]
    assert buf.states[:, 0].tolist() == buf.keys.tolist()


def test_buffer_rank_based_weights():
    buf = ReplayBuffer(100, (1,))
    _add(buf, [10, 11, 12, 13], [0.5, 3.0, 1.0, -2.0])
    w = buf.sampling_weights()
    n = 4
    by_key = dict(zip(buf.keys.tolist(), w.tolist(), strict=True))
    assert by_key[11] == pytest.approx(1 / (0.01 * n + 0))
    assert by_key[12] == pytest.approx(1 / (0.01 * n + 1))
    assert by_key[10] == pytest.approx(1 / (0.01 * n + 2))
    assert by_key[13] == pytest.approx(1 / (0.01 * n + 3))
    torch.manual_seed(0)
    x, _ = buf.sample(20_000)
    freq = (x[:, 0] == 11).double().mean()
    assert float(freq) == pytest.approx(by_key[11] / sum(by_key.values()), abs=0.02)


def test_buffer_priority_update():
    buf = ReplayBuffer(10, (1,))
    _add(buf, [1, 2], [1.0, 2.0])
    buf.update_priority(torch.tensor([1, 7]), torch.tensor([3.0, 4.0]))
    assert dict(zip(buf.keys.tolist(), buf.priority.tolist(), strict=True)) == {1: 3.0, 2: 2.0}


# ---- Local search --------------------------------------------------------------------------------


def test_greedy_local_search_never_lowers_the_score():
    torch.manual_seed(0)
    env = DeceptiveGrid(2, 8)
    model = DiscretePolicy(env.n_features, env.n_actions, env.n_backward_actions, hidden=16)
    start = env.with_rewards(env.rollout(model, 64))
    out, proposals = back_and_forth(env, model, start, lambda t: t.log_reward, iterations=4)
    assert len(proposals) == 4 and all(p.batch_size == 64 for p in proposals)
    assert bool((out.log_reward >= start.log_reward).all())
    assert torch.equal(out.log_reward, env.log_reward(out.terminal))
    best = torch.stack([start.log_reward] + [p.log_reward for p in proposals]).max(0).values
    # greedy keeps improving: the final reward is at least each accepted step's, and at most the best seen
    assert bool((out.log_reward <= best).all())


def test_metropolis_hastings_ratio_is_one_under_the_optimal_policy():
    """With P_F exact, q(x'|x) = P_B(s|x)·R(x')P_B(s|x')/F(s), so R(x')q(x|x') = R(x)q(x'|x): log A = 0."""
    torch.manual_seed(0)
    env = DeceptiveGrid(2, 6)
    model = optimal_policy(env)
    x = env.with_rewards(env.rollout(model, 128))
    back = env.backward_rollout(x.terminal)
    keep = torch.div(back.lengths - 1, 2, rounding_mode="floor")
    suffix = env.rollout(model, start=back.states[torch.arange(128), keep])
    prop = env.with_rewards(env.splice(back, keep, suffix))
    log_a = prop.log_reward - x.log_reward
    log_a = log_a + _suffix_log_ratio(env, model, prop, keep) - _suffix_log_ratio(env, model, back, keep)
    assert float(log_a.abs().max()) < 1e-4
    out, _ = back_and_forth(env, model, x, lambda t: t.log_reward, iterations=2, accept="mh")
    assert out.batch_size == 128
