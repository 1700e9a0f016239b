"""Fidelity to the official code of Kim et al. (ICLR 2025): each test fails on the behaviour it replaced."""

from __future__ import annotations

import json
import math

import pytest
import torch

import adaptive_teacher.sources.mala as mala_module
from adaptive_teacher.config import resolve_config
from adaptive_teacher.densities import GMM25
from adaptive_teacher.envs import DeceptiveGrid, DiffusionEnv
from adaptive_teacher.sources import teacher_log_reward
from adaptive_teacher.sources.mala import mala
from adaptive_teacher.sources.schedule import ScheduledStep
from adaptive_teacher.trainer import Trainer

DIFF = {"batch_size": 32, "hidden": 16, "n_evals": 1, "progress": False, "eval_samples": 64, "final_eval_samples": 64}


def _priorities(buffer) -> dict[int, float]:
    return dict(zip(buffer.keys.tolist(), buffer.priority.tolist(), strict=True))


def test_diffusion_per_priority_is_the_teacher_reward_without_alpha():
    """The buffer ranks by log R_T = log log(1 + ε + w·½δ²); R^α enters only the Teacher's loss."""
    tr = Trainer(DiffusionEnv(GMM25(), n_steps=5), resolve_config("tb-per", "diffusion", iterations=4, **DIFF))
    assert tr.cfg.alpha == 0.5
    batch = tr.next_batch(ScheduledStep("student"))
    delta = tr.student_delta(batch.traj)  # the Student's residual before its update
    tr.train_step(batch)
    c = tr.cfg
    expected = teacher_log_reward(delta, batch.traj.log_reward, c.C, 0.0, c.teacher_eps, c.teacher_half_square)
    with_alpha = teacher_log_reward(delta, batch.traj.log_reward, c.C, 0.5, c.teacher_eps, c.teacher_half_square)
    keys = tr.env.state_key(batch.traj.terminal).tolist()
    stored = _priorities(tr.buffer)
    assert torch.allclose(torch.tensor([stored[k] for k in keys], dtype=torch.float64), expected, atol=1e-6)
    assert not torch.allclose(expected, with_alpha)


def test_per_keeps_the_priority_given_at_insertion_unless_refreshing():
    env = DeceptiveGrid(2, 8)
    for refresh in (False, True):
        cfg = resolve_config("tb-per", reward_calls=320, batch_size=16, hidden=16, n_evals=1, progress=False)
        cfg.per_refresh = refresh
        tr = Trainer(env, cfg)
        tr.train_step(tr.next_batch(ScheduledStep("student")))
        before = _priorities(tr.buffer)
        replay = tr.next_batch(ScheduledStep("replay"))
        assert not replay.fresh
        tr.train_step(replay)
        after = _priorities(tr.buffer)
        replayed = set(tr.env.state_key(replay.traj.terminal).tolist())
        changed = {k for k in replayed if after[k] != before[k]}
        assert (changed == set()) if not refresh else (changed == replayed)


def test_mala_local_search_restarts_its_step_size_and_adapts_every_step(monkeypatch):
    """Official MALA: η = 1e-3 at every call, ×1.01 or ×0.99 after every one of the steps (burn-in or not)."""
    target = GMM25()
    x0 = target.sample(64, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    _, eta, _ = mala(
        target.log_reward, target.grad_log_reward, x0, 20, 10, 1e-3, adaptation="every_step", generator=gen
    )
    steps = math.log(eta / 1e-3)
    ups = (steps - 20 * math.log(0.99)) / (math.log(1.01) - math.log(0.99))
    assert abs(ups - round(ups)) < 1e-6 and 0 <= round(ups) <= 20  # exactly 20 multiplicative moves
    env = DiffusionEnv(target, n_steps=5)
    tr = Trainer(env, resolve_config("tb-per-ls", "diffusion", iterations=4, ls_every=2, ls_iterations=6, **DIFF))
    tr.train_one_step()  # seeds the buffer
    seen = []

    def spy(*args, **kwargs):
        seen.append((kwargs["step_size"], kwargs["adaptation"]))
        return mala(*args, **kwargs)

    monkeypatch.setattr(mala_module, "mala", spy)
    for _ in range(4):  # steps 1..4: MALA at steps 2 and 4
        tr.train_one_step()
    assert seen == [(1e-3, "every_step")] * 2  # never carried over


def _hand_gafn_loss(env, policy, rnd, paths):
    """The official grid code's GAFN loss, transition by transition (Kim et al. 2025, grid/models/gafn.py)."""
    import torch.nn.functional as F

    total, rnd_terms = 0.0, []
    for path in paths:
        states = [torch.tensor([s]) for s in path]
        x = states[-1]
        forced = bool(env.forward_mask(x)[0, env.stop]) and int(env.forward_mask(x)[0].sum()) == 1

        def out(s):
            fwd, _, flow = policy.split(policy(env.features(s)))
            return F.log_softmax(fwd.masked_fill(~env.forward_mask(s), -math.inf), -1)[0].detach(), flow[0].detach()

        def r(s):
            return 0.01 * float(rnd.error(env.features(s))[0].detach())

        log_pf = 0.0
        for s, nxt in zip(states[:-1], states[1:], strict=True):
            a = int((nxt - s).nonzero()[0, 1])
            log_pf += float(out(s)[0][a])
        log_pf += float(out(x)[0][env.stop])
        edges = 0.0
        for t in range(1, len(states)):
            p_b = 1.0 / int(env.backward_mask(states[t]).sum())
            if forced and t == len(states) - 1:
                edges += math.log(p_b)
            else:
                edges += math.log(p_b + r(states[t]) / math.exp(float(out(states[t])[1])))
        log_r = float(env.log_reward(x)[0])
        delta = math.log(math.exp(log_r) + r(x) + 1e-8) + edges - float(policy.log_Z.detach()) - log_pf
        total += delta**2
        obs = states + ([] if forced else [x])
        rnd_terms.append(sum(float(rnd.error(env.features(s))[0].detach()) for s in obs) / len(obs))
    return total / len(paths), sum(rnd_terms) / len(rnd_terms)


def test_gafn_loss_matches_the_official_formula_on_hand_made_trajectories():
    from adaptive_teacher.envs.base import Trajectories
    from adaptive_teacher.objectives import gafn_trajectory_balance
    from adaptive_teacher.policies import DiscretePolicy
    from adaptive_teacher.sources import RandomNetworkDistillation

    env = DeceptiveGrid(2, 8)
    torch.manual_seed(3)
    policy = DiscretePolicy(env.n_features, env.n_actions, env.n_backward_actions, 32, 2, flow_head=True)
    with torch.no_grad():
        policy.log_Z.fill_(0.7)
    rnd = RandomNetworkDistillation(env.n_features, scale=0.01)
    stopped = [(0, 0), (1, 0), (1, 1), (2, 1)]  # ends with a free stop at (2, 1)
    forced = [(0, 0), (0, 1), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (1, 7)]  # stop forced at H-1
    parts = []
    for path in (stopped, forced):
        s = torch.tensor(path)
        moves = [int((b - a).nonzero()[0]) for a, b in zip(s[:-1], s[1:], strict=True)]
        parts.append((torch.cat([s, s[-1:]]), torch.tensor(moves + [env.stop])))
    from adaptive_teacher.envs.base import concat_trajectories

    traj = concat_trajectories([Trajectories(st[None], ac[None], torch.tensor([len(ac)])) for st, ac in parts])
    traj = env.with_rewards(traj)
    intrinsic, forced_stop, rnd_loss = rnd.on_trajectories(env, traj)
    assert forced_stop.tolist() == [False, True]
    loss, _ = gafn_trajectory_balance(
        env.log_probs(policy, traj), policy.log_Z, traj.log_reward, intrinsic, forced_stop
    )
    expected_loss, expected_rnd = _hand_gafn_loss(env, policy, rnd, [stopped, forced])
    assert float(loss.detach()) == pytest.approx(expected_loss, rel=1e-5)
    assert float(rnd_loss.detach()) == pytest.approx(expected_rnd, rel=1e-5)
    assert float(intrinsic[0, 1]) == pytest.approx(
        0.01 * float(rnd.error(env.features(torch.tensor([[1, 0]])))[0].detach())
    )


def test_greedy_local_search_is_strict_and_a_rejected_x_keeps_its_old_trajectory():
    from adaptive_teacher.envs import Hypergrid
    from adaptive_teacher.policies import DiscretePolicy
    from adaptive_teacher.sources import back_and_forth

    env = Hypergrid(2, 6, lambda s: torch.ones(len(s), dtype=torch.float64))  # every x scores the same
    torch.manual_seed(0)
    model = DiscretePolicy(env.n_features, env.n_actions, env.n_backward_actions, 16, 2)
    start = env.with_rewards(env.rollout(model, 32))
    out, proposals = back_and_forth(env, model, start, lambda t: t.log_reward, iterations=4)
    assert len(proposals) == 4 and any(not torch.equal(p.terminal, start.terminal) for p in proposals)
    # Equal scores are not improvements: nothing is accepted, and every x keeps its very trajectory.
    assert torch.equal(out.terminal, start.terminal) and torch.equal(out.lengths, start.lengths)
    width = start.states.shape[1]
    assert torch.equal(out.states[:, :width], start.states) and torch.equal(out.actions[:, : width - 1], start.actions)


def test_local_search_destroys_half_of_the_states_as_the_official_code_counts_them():
    from adaptive_teacher.envs.base import Trajectories
    from adaptive_teacher.sources.local_search import kept_moves

    env = DeceptiveGrid(2, 8)
    free = torch.tensor([[0, 0], [1, 0], [1, 1], [2, 1], [2, 1]])  # 3 moves, free stop: 5 states, 2 go
    forced = torch.tensor([[0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [0, 6], [0, 7], [0, 7]])  # 7, forced
    trajs = [Trajectories(free[None], torch.tensor([[0, 1, 0, 2]]), torch.tensor([4]))]
    trajs.append(Trajectories(forced[None], torch.tensor([[1] * 7 + [2]]), torch.tensor([8])))
    assert [int(kept_moves(env, t, 0.5)[0]) for t in trajs] == [2, 3]  # redo 1 of 3 moves; 4 of 7


def test_local_search_counts_modes_on_the_accepted_batch_only():
    from adaptive_teacher.sources.schedule import ScheduledStep

    env = DeceptiveGrid(2, 8)
    tr = Trainer(env, resolve_config("tb-ls", reward_calls=640, batch_size=16, hidden=16, n_evals=1, progress=False))
    seen = []
    original = tr.modes.update

    def spy(x, log_reward=None):
        seen.append(x.clone())
        original(x, log_reward)

    tr.modes.update = spy
    before = tr.reward_calls
    batch = tr.next_batch(ScheduledStep("student", local_search=True))
    assert tr.reward_calls - before == 16 * (1 + tr.cfg.ls_iterations)  # the batch and every proposal cost a call
    assert len(seen) == 1 and torch.equal(seen[0], batch.traj.terminal)


def test_diffusion_teacher_details_follow_the_official_code(monkeypatch):
    """Weight decay 1e-7 on both optimisers; the Teacher's clipping covers its time encoder only; the Teacher
    trains on fresh bridge trajectories of the batch's x; its samples enter the buffer scored on fresh ones."""
    env = DiffusionEnv(GMM25(), n_steps=5)
    tr = Trainer(env, resolve_config("teacher", "diffusion", iterations=4, **DIFF))
    tr.teacher_gate = -math.inf  # let every sample through, so each part runs
    for opt in (tr.opt_student, tr.opt_teacher):
        assert all(g["weight_decay"] == 1e-7 for g in opt.param_groups)
    clipped, teacher_batches = [], []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip_spy(params, max_norm):
        clipped.append(({id(p) for p in params}, max_norm))
        return real_clip(params, max_norm)

    original = Trainer._objective

    def objective_spy(self, model, traj, log_reward, log_guide=None):
        if model is self.teacher:
            teacher_batches.append(traj)
        return original(self, model, traj, log_reward, log_guide)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_spy)
    monkeypatch.setattr(Trainer, "_objective", objective_spy)
    batch = tr.next_batch(ScheduledStep("student"))
    tr.train_step(batch)
    assert clipped == [({id(p) for p in tr.teacher.time_encoder_parameters()}, 0.1)]  # the Student: no clipping
    (seen,) = teacher_batches
    assert torch.equal(seen.terminal, batch.traj.terminal) and not torch.equal(seen.states, batch.traj.states)
    backward_calls = []
    real_backward = env.backward_rollout
    monkeypatch.setattr(env, "backward_rollout", lambda x, m=None: backward_calls.append(len(x)) or real_backward(x, m))
    tr.next_batch(ScheduledStep("replay", teacher_feeds_buffer=True))
    assert backward_calls[0] == tr.cfg.batch_size  # the Teacher's samples, scored on fresh bridges, then replay


def test_kim2025_protocol_is_a_named_preset_of_their_diffusion_code(capsys, tmp_path):
    from adaptive_teacher.cli import main as cli_main
    from adaptive_teacher.errors import ConfigError

    cfg = resolve_config("teacher", "diffusion", protocol="kim2025")
    assert (cfg.batch_size, cfg.arch, cfg.hidden, cfg.eps, cfg.lr_milestones) == (500, "at256", 256, 0.0, (0.4, 0.8))
    assert resolve_config("teacher", "diffusion").batch_size == 300  # Sendera et al.'s stays the default
    with pytest.raises(ConfigError, match="protocol kim2025 fixes the task's t_scale = 1.0"):
        Trainer(DiffusionEnv(GMM25(), n_steps=5), cfg)  # 25GMM's default σ² is Sendera's 5
    with pytest.raises(ConfigError, match="protocol must be one of default"):
        resolve_config("tb", "discrete", protocol="kim2025")
    small = ["--iterations", "1", "--batch-size", "8", "--hidden", "8", "--n-steps", "3", "--n-evals", "1"]
    small += ["--eval-samples", "4", "--final-eval-samples", "4", "--no-progress", "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as info:
        cli_main(["train", "--task", "gmm25", "--method", "tb", "--protocol", "kim2025", *small])
    assert info.value.code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["task"]["t_scale"] == 1.0 and saved["config"]["protocol"] == "kim2025"


def test_db_teacher_rewards_sum_per_transition_terms_with_the_papers_sign():
    from adaptive_teacher.objectives import detailed_balance_residuals
    from adaptive_teacher.sources.teacher import teacher_log_reward_transitions

    resid = torch.tensor([[1.0, -1.0, 0.0]])  # d_t: over- then under-sampled transition; they telescope to 0
    valid = torch.tensor([[True, True, False]])
    log_r = torch.zeros(1, dtype=torch.float64)
    got = teacher_log_reward_transitions(resid, valid, log_r, C=19.0, eps=1e-3)
    # δ_t = −d_t: the second transition (δ = +1) is under-sampled and gets the weight 1 + C = 20.
    assert float(got[0]) == pytest.approx(math.log(math.log(1.001 + 1.0) + math.log(1.001 + 20.0)))
    telescoped = teacher_log_reward(torch.zeros(1), log_r, C=19.0, eps=1e-3)
    assert float(got[0]) > float(telescoped[0]) + 5  # the old telescoped reward saw nothing wrong here

    env = DeceptiveGrid(2, 6)
    tr = Trainer(env, resolve_config("teacher-db", reward_calls=320, batch_size=16, hidden=16, progress=False))
    batch = tr.next_batch(ScheduledStep("student"))
    with torch.no_grad():
        lp = env.log_probs(tr.student, batch.traj)
        resid = detailed_balance_residuals(lp, batch.traj.log_reward.to(lp.log_pf.dtype))
    expected = teacher_log_reward_transitions(resid, lp.valid, batch.traj.log_reward, 19.0, 0.0, 1e-3)
    assert torch.allclose(tr.teacher_reward(batch.traj), expected)


def test_db_with_per_replays_single_transitions():
    from adaptive_teacher.objectives import detailed_balance_residuals
    from adaptive_teacher.sources import transitions

    env = DeceptiveGrid(2, 8)
    cfg = resolve_config("teacher-db", buffer="teacher_reward", reward_calls=640, batch_size=16, hidden=16)
    cfg.progress = False
    tr = Trainer(env, cfg)
    assert tr.transition_replay and tr.buffer.capacity == 1000
    first = tr.next_batch(ScheduledStep("student"))
    # The per-transition DB residuals of whole trajectories and of their transitions one by one agree.
    t = transitions.transitions_of(env, first.traj)
    with torch.no_grad():
        lp = env.log_probs(tr.student, first.traj)
        whole = detailed_balance_residuals(lp, first.traj.log_reward.to(lp.log_pf.dtype))[lp.valid]
        single = transitions.residuals(env, tr.student, t, t.log_reward)
    assert torch.allclose(whole, single, atol=1e-5)
    tr.train_step(first)
    assert len(tr.buffer) == len(set(transitions.pair_keys(env, t).tolist()))  # every transition, de-duplicated
    replay = tr.next_batch(ScheduledStep("replay"))
    rt = replay.traj
    assert isinstance(rt, transitions.Transitions) and rt.batch_size == 16 * (8 // 2)
    moves = ~rt.stop
    assert torch.equal(env.step(rt.parents[moves], rt.actions[moves]), rt.children[moves])  # actions recovered
    assert torch.equal(rt.parents[rt.stop], rt.children[rt.stop])
    result = tr.train_step(replay)
    assert math.isfinite(result.loss) and math.isfinite(result.teacher_loss)
    tr.train()  # the whole schedule runs
    assert tr.reward_calls >= 640
