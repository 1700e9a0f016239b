import math

import pytest
import torch

from adaptive_teacher.envs import DeceptiveGrid, Hypergrid
from adaptive_teacher.errors import ConfigError
from adaptive_teacher.tasks import task_info


@pytest.mark.parametrize(
    "dim,height,n_terminal,n_modes,log_z",
    [(2, 16, 255, 9, 3.374), (2, 32, 1023, 36, 4.671), (4, 16, 64_125, 81, 8.429), (4, 32, 1_042_685, 1296, 11.028)],
)
def test_reference_counts(dim, height, n_terminal, n_modes, log_z):
    info = task_info(DeceptiveGrid(dim, height))
    assert info["n_terminal_states"] == n_terminal
    assert info["n_modes"] == n_modes
    assert info["log_Z"] == pytest.approx(log_z, abs=5e-4)


def test_modes_counted_by_enumeration_match_analytic_count():
    env = DeceptiveGrid(2, 32)
    states = env.enumerate_states()
    r = env.reward(states)
    assert int((r == r.max()).sum()) == env.n_modes == int(env.is_mode(states).sum())


def test_goal_set_is_asymmetric_as_in_official_code():
    assert DeceptiveGrid(2, 16).goal_coordinates == [2, 12, 13]


def test_too_large_space_reports_modes_but_no_log_z():
    info = task_info(DeceptiveGrid(4, 128))
    assert info["log_Z"] is None
    assert info["n_modes"] == 26**4
    assert info["n_terminal_states"] == 127**4 + 4 * 127**3


def test_masks_and_transitions():
    env = DeceptiveGrid(2, 4)
    s = torch.tensor([[0, 0], [1, 3], [2, 2], [3, 0]])
    fm = env.forward_mask(s)
    assert fm.tolist() == [[True, True, True], [False, False, True], [True, True, True], [False, False, True]]
    bm = env.backward_mask(s)
    # at s0 no parent; with a coordinate at H-1 only that coordinate can be undone
    assert bm.tolist() == [[False, False], [False, True], [True, True], [True, False]]
    assert env.step(s[2:3], torch.tensor([1])).tolist() == [[2, 3]]
    assert env.backward_step(s[1:2], torch.tensor([1])).tolist() == [[1, 2]]
    assert env.is_initial(s).tolist() == [True, False, False, False]


def test_features_are_one_hot_per_coordinate():
    env = DeceptiveGrid(3, 5)
    f = env.features(torch.tensor([[0, 4, 2]]))
    assert f.shape == (1, 15) and f.sum() == 3
    assert f[0, 0] == 1 and f[0, 5 + 4] == 1 and f[0, 10 + 2] == 1


def test_reward_formula_values():
    env = DeceptiveGrid(2, 16)
    r = env.reward(torch.tensor([[2, 13], [0, 0], [7, 7], [2, 7]]))
    assert r.dtype == torch.float64
    assert r.tolist() == pytest.approx([2.00001, 1e-5, 0.10001, 0.10001])


def test_invalid_sizes_raise_config_error():
    with pytest.raises(ConfigError, match="^height "):
        DeceptiveGrid(2, 1)
    with pytest.raises(ConfigError, match="^dim "):
        DeceptiveGrid(0, 8)


def test_custom_reward_log_partition():
    env = Hypergrid(2, 3, lambda s: 1.0 + s.sum(-1).to(torch.float64))
    states = env.enumerate_states()
    assert len(states) == 8  # (2,2) is unreachable
    assert env.log_partition() == pytest.approx(math.log(float((1 + states.sum(-1)).sum())))
