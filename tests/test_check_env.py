import math
import warnings

import pytest
import torch

import adaptive_teacher as at
from adaptive_teacher.envs import BitString, DeceptiveGrid, Hypergrid, check_env
from adaptive_teacher.errors import EnvironmentCheckError
from adaptive_teacher.metrics import ExactEvaluator
from adaptive_teacher.metrics.exact import optimal_policy
from adaptive_teacher.tasks import make_task, task_spec


def _reward(states: torch.Tensor) -> torch.Tensor:
    return 1e-3 + torch.exp(-((states - 2) ** 2).sum(-1).double())


def _grid(cls: type[Hypergrid] = Hypergrid, reward=_reward) -> Hypergrid:
    return cls(2, 6, reward)


# ---- the built-in environments pass ----------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [_grid(), DeceptiveGrid(2, 8), DeceptiveGrid(3, 5), BitString(6), BitString(5, lambda x: 1.0 + x.sum(-1).double())],
    ids=["hypergrid", "deceptive-d2h8", "deceptive-d3h5", "bitstring", "bitstring-user-reward"],
)
def test_builtin_environments_pass(env):
    check_env(env)
    check_env(env, n_samples=7, seed=3)


def test_check_env_leaves_the_global_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check_env(BitString(4))
    assert torch.equal(torch.rand(3), expected)


# ---- broken environments: each names the method to fix -------------------------------------------


class BadBackwardStep(Hypergrid):
    def backward_step(self, states, backward_actions):
        out = states.clone()
        out[torch.arange(len(states)), (backward_actions + 1) % self.dim] -= 1  # the wrong coordinate
        return out


class FloatMask(Hypergrid):
    def forward_mask(self, states):
        return super().forward_mask(states).float()


class NoStopColumn(Hypergrid):
    def forward_mask(self, states):
        return super().forward_mask(states)[:, :-1]


class CollidingKey(Hypergrid):
    def state_key(self, states):
        return states.sum(-1)


class NeverStops(Hypergrid):
    def forward_mask(self, states):
        mask = super().forward_mask(states).clone()
        mask[:, self.stop] = False
        return mask


class ShortMaxLength(Hypergrid):
    def __init__(self, *args):
        super().__init__(*args)
        self.max_length -= 2  # Hypergrid's max_length, d(H-1)+1, is d-1 above the longest trajectory


class WrongForwardAction(Hypergrid):
    def forward_action(self, parents, backward_actions):
        return (backward_actions + 1) % self.dim


class TooManyParents(Hypergrid):
    def backward_mask(self, states):
        return states > 0  # ignores that a state with a coordinate at H-1 has only that parent


class FlatLevel(Hypergrid):
    def level(self, states):
        return torch.zeros(len(states), dtype=torch.long)


def _zero_at_3_3(states):
    return _reward(states) * (states != 3).any(-1)


def _nan_at_4_1(states):
    r = _reward(states)
    return torch.where((states == torch.tensor([4, 1])).all(-1), math.nan, r)


BROKEN = [
    (_grid(BadBackwardStep), "BadBackwardStep.backward_step:", "does not give back s"),
    (_grid(FloatMask), "FloatMask.forward_mask:", "torch.bool"),
    (_grid(NoStopColumn), "NoStopColumn.forward_mask:", "shape"),
    (_grid(CollidingKey), "CollidingKey.state_key:", "same key"),
    (_grid(NeverStops), "NeverStops.forward_mask:", "allows no action"),
    (_grid(ShortMaxLength), "ShortMaxLength.max_length:", "exceed max_length"),
    (_grid(WrongForwardAction), "WrongForwardAction.forward_action:", "!= a"),
    (_grid(TooManyParents), "TooManyParents.backward_mask:", "forward_mask(s)[a] is False"),
    (_grid(FlatLevel), "FlatLevel.level:", "must exceed"),
    (_grid(reward=_zero_at_3_3), "Hypergrid.reward_fn:", "[3, 3]"),
    (_grid(reward=_nan_at_4_1), "Hypergrid.reward_fn:", "[4, 1]"),
]


@pytest.mark.parametrize(("env", "method", "detail"), BROKEN, ids=[m.rstrip(":") for _, m, _ in BROKEN])
def test_broken_environment_is_reported_with_the_method_to_fix(env, method, detail):
    with pytest.raises(EnvironmentCheckError) as err:
        check_env(env)
    message = str(err.value)
    assert message.startswith(method), message
    assert detail in message, message


def test_non_injective_features_still_get_the_exact_policy_check():
    class Blind(Hypergrid):  # the exact optimal policy is keyed on state_key, not on feature rows
        def features(self, states):
            return torch.zeros(len(states), self.n_features)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(_grid(Blind))
    policy = optimal_policy(_grid(Blind))
    assert ExactEvaluator(_grid(Blind)).l1(policy)["l1"] < 1e-9


def test_objects_that_are_not_environments_are_refused():
    with pytest.raises(EnvironmentCheckError, match="check_env checks a DiscreteEnv"):
        check_env(object())


def test_diffusion_env_gets_the_reduced_check():
    env = make_task({"name": "gmm25", "n_steps": 5})
    check_env(env, n_samples=16)

    class Holes(at.Density):
        dim = 2

        def log_reward(self, x):
            return torch.where(x[:, 0] > 0, math.nan, -(x.double() ** 2).sum(-1))

    with pytest.raises(EnvironmentCheckError, match=r"^Holes\.log_reward:"):
        check_env(at.DiffusionEnv(Holes(), n_steps=5), n_samples=16)


# ---- the exact optimal policy and the BitString example task -------------------------------------


@pytest.mark.parametrize("env", [BitString(5), DeceptiveGrid(3, 4)], ids=["bitstring", "deceptive-d3h4"])
def test_optimal_policy_has_zero_tb_residual_and_target_distribution(env):
    model = optimal_policy(env)
    ev = ExactEvaluator(env)
    assert model.log_Z.item() == pytest.approx(env.log_partition(), abs=1e-9)
    torch.manual_seed(0)
    for traj in (env.rollout(model, 128), env.backward_rollout(ev.terminal_states)):
        lp = env.log_probs(model, traj)
        delta = env.log_reward(traj.terminal) + lp.log_pb.sum(1) - model.log_Z - lp.log_pf.sum(1)
        assert float(delta.abs().max()) < 1e-9
    assert ev.l1(model)["l1"] < 1e-9


def test_bitstring_structure():
    env = BitString(4)
    states = env.enumerate_states()
    assert len(states) == 2**5 - 1 and len(env.state_key(states).unique()) == len(states)
    traj = env.rollout(optimal_policy(env), 32)
    assert bool((traj.lengths == 5).all())  # n moves and a forced stop
    assert bool((env.backward_mask(states).sum(-1) == (env.level(states) > 0).long()).all())  # one parent
    assert env.n_modes == 4 and int(env.is_mode(traj.terminal).sum()) >= 1
    x = torch.tensor([[0, 1, 0, 1], [0, 1, 0, 0], [1, 1, 1, 1]])
    assert env.reward(x).tolist() == pytest.approx([1.001, 1e-3 + math.exp(-2), 1e-3 + math.exp(-4)])
    assert BitString(17).enumerate_states() is None and BitString(4, lambda x: x.sum(-1) + 1.0).n_modes is None
    assert task_spec(BitString(6)) == {"name": "bitstring", "dim": 6}


def test_bitstring_trains_with_the_teacher_through_the_public_api():
    assert at.check_env is check_env and at.BitString is BitString
    result = at.train(
        BitString(n=6), method="teacher", reward_calls=1600, seed=0, batch_size=16, hidden=32, n_evals=2, progress=False
    )
    assert math.isfinite(result.summary["l1"]) and result.summary["reward_calls"] == 1600
    assert result.summary["n_modes"] == 4
