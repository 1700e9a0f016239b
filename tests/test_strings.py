"""The prepend/append string MDP, the SSR policy and the table tasks (QM9, TFBind8) of the shared data folder.

The environment and policy tests need no data; the task tests read the copy of the data files shipped in
``tests/data`` (conftest.py points ``$ADAPTIVE_TEACHER_DATA`` there unless it is set).
"""

from __future__ import annotations

import math

import pytest
import torch

import adaptive_teacher
from adaptive_teacher.biochem import DATA_ENV_VAR, default_data_dir, make_string_task, qm9, tfbind8
from adaptive_teacher.envs.check import check_env
from adaptive_teacher.envs.strings import PrependAppendStrings
from adaptive_teacher.errors import ConfigError, DataError
from adaptive_teacher.metrics.exact import ExactEvaluator, optimal_policy
from adaptive_teacher.policies import DiscretePolicy
from adaptive_teacher.ssr import SSRExactEvaluator, SSRPolicy, make_ssr_policy

from .helpers import far_from_uniform_policy


def peaked(x: torch.Tensor) -> torch.Tensor:
    """A reward with structure in both ends of the string: 0.1 + #zeros + 3·[first char == last char]."""
    return 0.1 + (x == 0).sum(-1).double() + 3.0 * (x[:, 0] == x[:, -1]).double()


def tiny(a: int, n: int) -> PrependAppendStrings:
    return PrependAppendStrings(a, n, peaked)


SIZES = [(2, 3), (3, 4)]
IDS = ["A2-L3", "A3-L4"]


# ---- the MDP ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "n"), SIZES, ids=IDS)
def test_check_env_passes(a, n):
    check_env(tiny(a, n))


@pytest.mark.parametrize(("a", "n"), SIZES, ids=IDS)
def test_children_are_the_unique_prepends_and_appends(a, n):
    env = tiny(a, n)
    states = env.enumerate_states()
    assert len(states) == sum(a**k for k in range(n + 1))
    words = env.to_strings(states)
    kids, exists = env.children(states)
    mask = env.forward_mask(states)
    for i, w in enumerate(words):
        want = {ch + w for ch in env.alphabet} | {w + ch for ch in env.alphabet} if len(w) < n else set()
        got = env.to_strings(kids[i][exists[i]])
        assert len(got) == len(set(got)) and set(got) == want, w  # every child once, the duplicate masked
        assert bool(mask[i, env.stop]) == (len(w) == n) and (len(w) < n or int(mask[i].sum()) == 1)
    assert not bool(mask[0, :a].any()) and bool(mask[0, a : 2 * a].all())  # s0: appends only


@pytest.mark.parametrize(("a", "n"), SIZES, ids=IDS)
def test_parents_are_unique_and_consistent_with_the_moves(a, n):
    env = tiny(a, n)
    states = env.enumerate_states()[1:]
    bmask = env.backward_mask(states)
    for i, w in enumerate(env.to_strings(states)):
        allowed = bmask[i].nonzero().squeeze(1)
        parents = env.backward_step(states[i].expand(len(allowed), -1), allowed)
        assert sorted(env.to_strings(parents)) == sorted({w[1:], w[:-1]}), w
        again = env.step(parents, env.forward_action(parents, allowed))
        assert env.to_strings(again) == [w] * len(allowed)


def test_backward_sampling_is_uniform_over_unique_parents():
    """x = 001: parents 01 and 00 (1/2 each); 00 has the one parent 0, 01 has 0 and 1."""
    env = tiny(2, 3)
    torch.manual_seed(0)
    n = 4000
    traj = env.backward_rollout(env.from_strings(["001"]).expand(n, -1))
    assert bool((traj.lengths == 4).all())
    via = env.to_strings(traj.states[:, 2])
    share = {w: via.count(w) / n for w in ("00", "01")}
    first = env.to_strings(traj.states[:, 1])
    assert abs(share["00"] - 0.5) < 0.04 and abs(share["01"] - 0.5) < 0.04
    assert abs(first.count("1") / n - 0.25) < 0.03  # 001 <- 01 <- 1 <- '' has P_B = 1/2 · 1/2


@pytest.mark.parametrize(("a", "n"), SIZES, ids=IDS)
def test_optimal_policy_is_exact_with_zero_tb_residual(a, n):
    env = tiny(a, n)
    ev = ExactEvaluator(env)
    policy = optimal_policy(env, ev)
    assert float((ev.distribution(policy) - ev.target).abs().sum()) < 1e-10
    assert abs(float(policy.log_Z) - env.log_partition()) < 1e-10
    torch.manual_seed(0)
    traj = env.rollout(policy, 256)
    assert bool((traj.lengths == n + 1).all())  # L moves + stop
    lp = env.log_probs(policy, traj)
    delta = env.log_reward(traj.terminal) + lp.log_pb.sum(1) - float(policy.log_Z) - lp.log_pf.sum(1)
    assert float(delta.abs().max()) < 1e-9


@pytest.mark.parametrize(("a", "n"), SIZES, ids=IDS)
def test_sampled_frequencies_match_the_exact_distribution(a, n):
    env = tiny(a, n)
    model = far_from_uniform_policy(env, seed=1)
    ev = ExactEvaluator(env)
    p = ev.distribution(model)
    assert abs(float(p.sum()) - 1.0) < 1e-9
    m = 20_000
    x = env.rollout(model, m).terminal
    emp = torch.bincount(ev.position(x), minlength=ev.n_states).double()[ev.terminal] / m
    assert float((emp - p).abs().sum()) < 0.06


def test_strings_indices_and_limits():
    env = PrependAppendStrings(4, 3, peaked, alphabet="ACGT")
    s = env.from_strings(["", "A", "GT", "TCA"])
    assert env.to_strings(s) == ["", "A", "GT", "TCA"] and env.level(s).tolist() == [0, 1, 2, 3]
    x = env.from_strings(["AAA", "AAC", "CAA", "TTT"])
    assert env.terminal_index(x).tolist() == [0, 1, 16, 63]  # the first character is the most significant
    assert torch.equal(env.from_index(env.terminal_index(x)), x)
    with pytest.raises(ValueError, match="not in the alphabet"):
        env.from_strings(["AXA"])
    with pytest.raises(ValueError, match="longer"):
        env.from_strings(["AAAA"])
    assert PrependAppendStrings(4, 10, peaked).enumerate_states() is None  # 4^10 > the enumeration limit
    with pytest.raises(ConfigError, match="reward_fn"):
        PrependAppendStrings(2, 3, None)


# ---- the SSR policy ---------------------------------------------------------------------------------------
def test_ssr_logits_are_the_plain_scorer_on_state_child_pairs():
    env = tiny(3, 4)
    torch.manual_seed(0)
    model = SSRPolicy(env.n_features, hidden=16, flow_head=True, logit_clip=2.0, chunk=40)
    states = env.enumerate_states()
    out = model.outputs(env, states)  # with gradients: one block
    logits = out.forward.detach()
    kids, exists = env.children(states)
    e_s = model.embed(env, states)
    for a in range(env.n_actions - 1):
        rows = exists[:, a]
        want = model.score(e_s[rows], model.embed(env, kids[rows, a])).clamp(-2.0, 2.0)
        assert torch.allclose(logits[rows, a], want, atol=1e-5)
    stop = model.score(e_s, e_s).clamp(-2.0, 2.0)
    assert torch.allclose(logits[:, env.stop], stop, atol=1e-5)
    assert float(logits.abs().max()) <= 2.0 and out.backward is None and out.log_flow is not None
    with torch.no_grad():
        blocks = model.outputs(env, states)  # no gradients: blocks of chunk // n_actions states
    assert torch.allclose(blocks.forward, logits, atol=1e-6) and torch.allclose(blocks.log_flow, out.log_flow.detach())


@pytest.mark.parametrize(("a", "n"), SIZES, ids=IDS)
def test_ssr_probabilities_are_normalised_over_the_unique_children(a, n):
    """P_F(·|s) of the SSR policy puts all its mass on the distinct children of s (and stop at length L), each
    reached by exactly one action, whatever the network's weights."""
    env = tiny(a, n)
    torch.manual_seed(1)
    model = SSRPolicy(env.n_features, hidden=16)
    states = env.enumerate_states()
    with torch.no_grad():
        for weight in model.parameters():
            weight.mul_(3.0)  # sharply non-uniform probabilities
        logits = model.outputs(env, states).forward
    p = torch.softmax(logits.double().masked_fill(~env.forward_mask(states), -math.inf), -1)
    assert torch.allclose(p.sum(1), torch.ones(len(states), dtype=torch.float64))
    kids, exists = env.children(states)
    words = env.to_strings(states)
    for i, w in enumerate(words):
        moves = (p[i, : env.stop] > 0).nonzero().squeeze(1)
        reached = env.to_strings(kids[i, moves]) if len(moves) else []
        want = {c + w for c in env.alphabet} | {w + c for c in env.alphabet} if len(w) < n else set()
        assert len(reached) == len(set(reached)) and set(reached) == want, w
        assert (float(p[i, env.stop]) == 1.0) == (len(w) == n) and (len(w) == n or float(p[i, env.stop]) == 0.0)
        assert bool(exists[i, moves].all())


def test_ssr_exact_evaluator_agrees_with_the_generic_dp():
    env = tiny(3, 4)
    torch.manual_seed(0)
    model = SSRPolicy(env.n_features, hidden=16, chunk=64)
    p = ExactEvaluator(env).distribution(model)
    fast = SSRExactEvaluator(env)
    assert float((fast.distribution(model) - p).abs().sum()) < 1e-6 and abs(float(p.sum()) - 1) < 1e-9
    table, generic = fast.action_probs(model), ExactEvaluator(env).action_probs(model)
    assert torch.allclose(table, generic, atol=1e-6)  # every row, the full strings' forced stop included
    full = ~fast.forward_mask[:, : env.stop].any(1)
    assert bool(full.any()) and bool((table[full, env.stop] == 1).all())
    mlp = DiscretePolicy(env.n_features, env.n_actions, env.n_backward_actions, 16)
    assert torch.equal(fast.distribution(mlp), ExactEvaluator(env).distribution(mlp))  # generic for others


def test_ssr_factory_follows_the_config():
    env = tiny(2, 3)
    cfg = adaptive_teacher.resolve_config("db", reward_calls=64, progress=False)
    assert make_ssr_policy(env, cfg).flow_head
    assert not make_ssr_policy(env, adaptive_teacher.resolve_config("tb", reward_calls=64)).flow_head
    learned = make_ssr_policy(env, adaptive_teacher.resolve_config("tb", reward_calls=64, learn_pb=True))
    assert learned.learn_pb and learned.back_encoder is not None


@pytest.mark.parametrize("method", ["tb", "teacher-db"])
def test_ssr_trains_through_the_trainer(method):
    env = tiny(3, 4)
    cfg = adaptive_teacher.resolve_config(method, reward_calls=320, batch_size=16, n_evals=2, progress=False)
    trainer = adaptive_teacher.Trainer(env, cfg)
    torch.manual_seed(0)
    for who, lr in (("student", cfg.lr), ("teacher", cfg.teacher_lr or cfg.lr * cfg.teacher_lr_scale)):
        if getattr(trainer, who) is None:
            continue
        ssr = make_ssr_policy(env, cfg)
        body = [p for name, p in ssr.named_parameters() if name != "log_Z"]
        setattr(trainer, who, ssr)
        opt = torch.optim.Adam([{"params": body, "lr": lr}, {"params": [ssr.log_Z], "lr": cfg.lr_log_z}])
        setattr(trainer, "opt_" + who, opt)
    before = [p.detach().clone() for p in trainer.student.parameters()]
    trainer.train()
    assert trainer.reward_calls == 320 and all(math.isfinite(r["loss"]) for r in trainer.history[1:])
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.student.parameters(), strict=True))
    assert math.isfinite(trainer.history[-1]["l1"])
    p = ExactEvaluator(env).distribution(trainer.student)
    assert abs(float(p.sum()) - 1.0) < 1e-9


# ---- the table tasks (shared data) ------------------------------------------------------------------------

# shared/data/README.md: (task, β) -> (logZ_scaled, E[r], target mass on the modes)
REFERENCE = {
    ("qm9", 20): (4.7487, 16.7745, 0.9885),
    ("qm9", 5): (11.9267, 7.6237, 0.0337),
    ("tfbind8", 20): (8.3350, 0.9224, 0.2376),
    ("tfbind8", 3): (11.4621, 0.6473, 0.0281),
}


@pytest.mark.parametrize(("name", "beta"), list(REFERENCE), ids=[f"{n}-beta{b}" for n, b in REFERENCE])
def test_reference_constants_from_the_enumeration(name, beta):
    env = make_string_task(name, beta)
    ev = ExactEvaluator(env)
    log_z, e_r, mass = REFERENCE[(name, beta)]
    assert ev.n_terminal == env.alphabet_size**env.length
    assert abs(ev.log_Z - log_z) < 1e-4 and abs(env.log_partition() - log_z) < 1e-4
    x = ev.terminal_states
    assert abs(float((ev.target * env.raw_reward(x)).sum()) - e_r) < 1e-4
    modes = env.is_mode(x)
    assert int(modes.sum()) == env.n_modes == {"qm9": 805, "tfbind8": 328}[name]
    assert abs(float(ev.target[modes].sum()) - mass) < 1e-4
    assert abs(float(env.reward(x).max()) - env.r_max) < 1e-9 * env.r_max
    c = env.constants()
    assert abs(c["logZ_scaled"] - log_z) < 1e-4 and abs(c["expected_r"] - e_r) < 1e-4


def test_tasks_read_strings_left_to_right():
    env = tfbind8()
    best = env.from_strings(["AGGTATCA", "TGATACCT", "ACTATGGA", "GGCCGGCC"])  # the maxima, one reversed, the min
    assert env.raw_reward(best)[:2].tolist() == [1.0, 1.0] and float(env.raw_reward(best)[2]) < 1.0
    assert float(env.raw_reward(best)[3]) == 0.001 and env.reward(best)[:2].tolist() == [10.0, 10.0]
    q = qm9(beta=5)
    modes = q.from_strings((default_data_dir() / "qm9" / "modes.txt").read_text().split())
    assert float(q.raw_reward(modes).min()) >= 9.1302 and bool(q.is_mode(modes).all())
    assert float(q.raw_reward(q.from_strings(["aaaaa"]))[0]) != float(q.raw_reward(q.from_strings(["00000"]))[0])


def test_tasks_pass_check_env_and_keep_official_floors():
    for env in (qm9(), tfbind8()):
        check_env(env, n_samples=32)
    assert float(qm9(beta=20, reward_floor=False).log_reward_table.min()) < -150  # 0.001^20 · scale
    assert float(qm9(beta=20).log_reward_table.min()) >= math.log(1e-12) - 1e-9
    assert float(tfbind8(beta=20).log_reward_table.min()) >= math.log(1e-20) - 1e-9


def test_ssr_exact_evaluation_on_qm9_sums_to_one():
    env = qm9()
    torch.manual_seed(0)
    p = SSRExactEvaluator(env).distribution(SSRPolicy(env.n_features, hidden=8))
    assert len(p) == 11**5 and abs(float(p.sum()) - 1.0) < 1e-9


def test_missing_or_damaged_data_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert default_data_dir() == tmp_path
    with pytest.raises(DataError, match=rf"qm9/rewards\.npz.*{DATA_ENV_VAR}"):
        qm9()
    (tmp_path / "tfbind8").mkdir()
    (tmp_path / "tfbind8" / "rewards.npz").write_bytes(b"not an npz")
    with pytest.raises(DataError, match=rf"sha256.*{DATA_ENV_VAR}"):
        tfbind8()
    with pytest.raises(DataError, match=r"tfbind8/rewards\.npz.*expected 341613 bytes, sha256 baf67ff1c98d985e"):
        tfbind8()
    with pytest.raises(DataError, match=r"qm9/rewards\.npz not found.*sha256 98aa001713348ff9e4e9a2f1272b8ee3"):
        qm9()
    with pytest.raises(ConfigError, match="unknown string task"):
        make_string_task("sehstr")


@pytest.mark.parametrize("learn_pb", [False, True])
def test_the_tabulated_evaluation_equals_the_network_one(learn_pb):
    """The StringEvaluator of an enumerable task samples and scores with the tabulated P_F (and the Student's
    learned P_B, if any): the same samples (the same random numbers) and the same metrics as the Student's own
    passes."""
    from adaptive_teacher.metrics.strings import StringEvaluator

    env = tfbind8()
    torch.manual_seed(0)
    model = SSRPolicy(env.n_features, hidden=16, learn_pb=learn_pb)
    for p in model.parameters():
        p.data.mul_(4.0)  # far from uniform
    cfg = adaptive_teacher.resolve_config("tb", "strings", env.task_spec(), reward_calls=64, eval_samples=512)
    rows = []
    for tabulate in (True, False):
        ev = StringEvaluator(env, cfg)
        exact = ev.exact
        if not tabulate:
            ev.exact = None
        torch.manual_seed(1)
        row = ev(model, None, 3.0, final=False)
        if not tabulate:
            p = exact.distribution(model)
            row["l1"] = float((p - exact.target).abs().sum())
        rows.append(row)
    table, network = rows
    assert table["onpolicy_modes"] == network["onpolicy_modes"] and table["mean_r"] == network["mean_r"]
    for key in ("elbo", "log_Z_is", "eubo", "pearson", "l1"):
        assert table[key] == pytest.approx(network[key], rel=1e-5, abs=1e-5), key
