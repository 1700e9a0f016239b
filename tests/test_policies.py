"""The policy interface: ``outputs(env, states) -> PolicyOutputs``, ``env.children`` and an SSR-style policy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import adaptive_teacher
from adaptive_teacher.envs import BitString, DeceptiveGrid, Hypergrid
from adaptive_teacher.envs.base import DiscreteEnv
from adaptive_teacher.metrics import ExactEvaluator
from adaptive_teacher.policies import DiscretePolicy, PolicyOutputs, mlp

ENVS = [Hypergrid(2, 5, lambda s: 1.0 + s.sum(-1).double()), DeceptiveGrid(3, 4), BitString(4)]
IDS = ["hypergrid-d2h5", "deceptive-d3h4", "bitstring-4"]


@pytest.mark.parametrize("env", ENVS, ids=IDS)
def test_children_agree_with_step(env):
    states = env.enumerate_states()
    kids, exists = env.children(states)
    k = env.n_actions - 1
    assert kids.shape == (len(states), k, *states.shape[1:]) and kids.dtype == states.dtype
    assert exists.dtype == torch.bool and torch.equal(exists, env.forward_mask(states)[:, :k])
    for a in range(k):
        rows = exists[:, a]
        if bool(rows.any()):
            want = env.step(states[rows], torch.full((int(rows.sum()),), a, dtype=torch.long))
            assert torch.equal(kids[rows, a], want)
        assert torch.equal(kids[~rows, a], states[~rows])  # no child: the state itself, safe to featurise


@pytest.mark.parametrize(("learn_pb", "flow_head"), [(False, False), (True, False), (True, True), (False, True)])
def test_mlp_outputs_are_the_split_of_its_features_pass(learn_pb, flow_head):
    torch.manual_seed(0)
    env = DeceptiveGrid(2, 6)
    model = DiscretePolicy(
        env.n_features, env.n_actions, env.n_backward_actions, 16, learn_pb=learn_pb, flow_head=flow_head
    )
    states = env.enumerate_states()
    out = model.outputs(env, states)
    old = model.split(model(env.features(states)))
    assert isinstance(out, PolicyOutputs) and out.forward.shape == (len(states), env.n_actions)
    for new, ref in zip(out, old, strict=True):
        assert (new is None) == (ref is None) and (new is None or torch.equal(new, ref))
    assert (out.backward is not None) == learn_pb and (out.log_flow is not None) == flow_head


class ToySSR(nn.Module):
    """SSR-style policy (Shen et al., 2023): logit(s → s') = score([enc_s(s), enc_c(s')]), stop from enc_s(s)."""

    learn_pb = False
    flow_head = False

    def __init__(self, env: DiscreteEnv, hidden: int = 32):
        super().__init__()
        self.state_encoder = mlp(env.n_features, hidden, hidden, 1)
        self.child_encoder = mlp(env.n_features, hidden, hidden, 1)
        self.scorer = mlp(2 * hidden, 1, hidden, 1)
        self.stop_head = nn.Linear(hidden, 1)
        self.log_Z = nn.Parameter(torch.zeros(()))

    def outputs(self, env: DiscreteEnv, states: Tensor) -> PolicyOutputs:
        kids, exists = env.children(states)
        n, k = exists.shape
        h_s = self.state_encoder(env.features(states))
        h_c = self.child_encoder(env.features(kids.reshape(n * k, *states.shape[1:]))).view(n, k, -1)
        moves = self.scorer(torch.cat([h_s[:, None].expand(-1, k, -1), h_c], -1)).squeeze(-1)
        return PolicyOutputs(torch.cat([moves, self.stop_head(h_s)], 1), None, None)


def test_an_ssr_policy_trains_through_the_public_api():
    env = BitString(n=4)
    cfg = adaptive_teacher.resolve_config("tb", reward_calls=320, batch_size=16, n_evals=2, progress=False)
    trainer = adaptive_teacher.Trainer(env, cfg)
    torch.manual_seed(0)
    ssr = ToySSR(env)
    body = [p for name, p in ssr.named_parameters() if name != "log_Z"]
    trainer.student = ssr
    trainer.opt_student = torch.optim.Adam(
        [{"params": body, "lr": cfg.lr}, {"params": [ssr.log_Z], "lr": cfg.lr_log_z}]
    )
    before = [p.detach().clone() for p in body]
    trainer.train()
    assert trainer.reward_calls == 320 and all(math.isfinite(r["loss"]) for r in trainer.history[1:])
    assert any(not torch.equal(a, p) for a, p in zip(before, body, strict=True))  # it was trained
    assert math.isfinite(trainer.history[-1]["l1"])

    ev = ExactEvaluator(env)
    p = ev.distribution(ssr)
    assert abs(float(p.sum()) - 1.0) < 1e-9
    n = 20_000
    x = env.rollout(ssr, n).terminal
    emp = torch.bincount(ev.position(x), minlength=ev.n_states).to(torch.float64)[ev.terminal] / n
    assert float((emp - p).abs().sum()) < 0.05
