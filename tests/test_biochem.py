"""The biochemical string family: its protocol (Kim et al.'s discovery code), the tasks through the trainer and
the command line, the user-oracle API (SequenceEnv)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import adaptive_teacher as at
from adaptive_teacher.biochem import make_string_task, tfbind8
from adaptive_teacher.cli import main
from adaptive_teacher.config import resolve_config
from adaptive_teacher.envs.strings import PrependAppendStrings
from adaptive_teacher.errors import ConfigError, RewardError
from adaptive_teacher.sources.buffer import ReplayBuffer
from adaptive_teacher.sources.local_search import back_and_forth
from adaptive_teacher.sources.teacher import teacher_log_reward
from adaptive_teacher.ssr import SSRPolicy
from adaptive_teacher.tasks import default_budget, task_info
from adaptive_teacher.trainer import Trainer, build_schedule


# ---- the protocol ------------------------------------------------------------------------------------------
def test_task_settings_follow_the_official_settings_yaml():
    qm9 = resolve_config("teacher", "strings", {"name": "qm9"})
    assert (qm9.hidden, qm9.eps, qm9.n_evals, qm9.batch_size, qm9.lr, qm9.lr_log_z) == (1024, 0.01, 50, 32, 1e-4, 1e-2)
    assert (qm9.teacher_lr_scale, qm9.clip_grad_norm, qm9.log_z_init, qm9.log_z_min) == (5.0, 10.0, 5.0, 0.0)
    assert (qm9.alpha, qm9.C, qm9.loss_clamp, qm9.buffer, qm9.buffer_size) == (0.5, 19.0, 5000.0, "reward", 1000)
    seh = resolve_config("tb", "strings", {"name": "seh"})
    assert (seh.hidden, seh.eps, seh.n_evals) == (1024, 0.05, 40)
    rna = resolve_config("tb-ls", "strings", {"name": "rna1"})
    assert (rna.hidden, rna.ls_back_steps, rna.ls_iterations, rna.ls_style) == (128, 7, 7, "chain")
    assert resolve_config("tb", "strings", {"name": "rna1"}, hidden=64).hidden == 64  # given options win
    assert resolve_config("tb-per", "strings", {"name": "tfbind8"}).buffer == "teacher_reward"
    gtb = resolve_config("gtb", "strings", {"name": "rna1"})
    assert (gtb.guide_mix, gtb.guide_temperature) == (0.25, 3.0)  # RNA's settings.yaml (QM9, sEH: 0.5, 1.0)
    from adaptive_teacher.config import validate

    validate(resolve_config("tb", "strings", {"name": "tfbind8"}, batch_size=30))  # no local search: any batch
    with pytest.raises(ConfigError, match="divisible"):
        validate(resolve_config("tb-ls", "strings", {"name": "tfbind8"}, batch_size=30))
    with pytest.raises(ConfigError, match="discrete and strings tasks only"):
        from adaptive_teacher.config import validate

        validate(resolve_config("tb", "diffusion", policy="ssr"))


def test_options_the_string_policy_or_task_would_ignore_are_errors_or_take_effect():
    from adaptive_teacher.config import validate

    with pytest.raises(ConfigError, match="layers sets the depth of the MLP policy.*policy mlp"):
        validate(resolve_config("tb", "strings", {"name": "tfbind8"}, layers=3))
    validate(resolve_config("tb", "strings", {"name": "tfbind8"}, layers=3, policy="mlp"))
    assert resolve_config("tb-ls", "strings", {"name": "rna1"}).ls_back_steps == 7  # the task's k ...
    ratio = resolve_config("tb-ls", "strings", {"name": "rna1"}, ls_back_ratio=0.25)
    assert (ratio.ls_back_steps, ratio.ls_back_ratio) == (None, 0.25)  # ... unless a ratio is asked for
    with pytest.raises(ConfigError, match="ls_back_ratio or ls_back_steps, not both"):
        resolve_config("tb-ls", "strings", {"name": "rna1"}, ls_back_ratio=0.25, ls_back_steps=2)


def test_budgets_are_rounds_of_32_reward_calls():
    assert default_budget(make_string_task("qm9")) == {"reward_calls": 32_000}
    assert default_budget(tfbind8()) == {"reward_calls": 64_000}


def test_schedule_one_teacher_round_in_three_and_local_search_every_round():
    teacher = [str(s) for s in build_schedule(resolve_config("teacher", "strings"))]
    assert teacher[:6] == ["student", "replay", "student", "replay", "teacher", "replay"]
    assert len(teacher) % 6 == 0 and teacher[6:12] == teacher[:6]
    tb = [str(s) for s in build_schedule(resolve_config("tb", "strings"))]
    assert tb == ["student", "replay"] * (len(tb) // 2)
    assert [str(s) for s in build_schedule(resolve_config("tb-ls", "strings"))] == ["student+ls", "replay"]
    # teacher-ls keeps the Teacher's rounds (unrefined) and refines every Student round; the official strings
    # code's order of branches (local search replaces the Teacher's rounds) is an option
    teacher_ls = [str(s) for s in build_schedule(resolve_config("teacher-ls", "strings"))]
    assert teacher_ls == ["student+ls", "replay", "student+ls", "replay", "teacher", "replay"]
    official = resolve_config("teacher-ls", "strings", ls_replaces_teacher=True)
    assert [str(s) for s in build_schedule(official)] == ["student+ls", "replay"]
    # the grid schedule is unchanged: Teacher every second online batch
    grid = [str(s) for s in build_schedule(resolve_config("teacher-per"))]
    assert grid[:4] == ["student", "replay", "teacher", "replay"] and len(grid) == 16


def test_teacher_ls_samples_the_teacher_on_its_rounds_and_chains_the_student():
    env = tfbind8()
    cfg = resolve_config("teacher-ls", "strings", env.task_spec(), reward_calls=10**6, hidden=16, n_evals=1)
    trainer = Trainer(env, cfg)
    sources = []
    for step in trainer.schedule:
        before = trainer.counter.calls
        batch = trainer.next_batch(step)
        sources.append((batch.source, batch.traj.batch_size, trainer.counter.calls - before))
    # Student rounds: 4 seeds + 28 proposals; the Teacher's round: 32 of its own samples; each costs 32 calls
    assert sources[0] == ("student", 32, 32) and sources[4] == ("teacher", 32, 32)


def test_teacher_ls_runs_written_when_local_search_replaced_the_teachers_rounds_are_other_runs():
    from adaptive_teacher.config import comparable_config

    for method, same in (("teacher-ls", False), ("tb-ls", True), ("teacher", True)):
        now = resolve_config(method, "strings").to_dict()
        before = {k: v for k, v in now.items() if k != "ls_replaces_teacher"}  # a config.json of an older run
        assert (comparable_config(before) == comparable_config(now)) is same, method
    grid = resolve_config("teacher-ls").to_dict()  # refine-style local search: the option is inert
    assert comparable_config({**grid, "ls_replaces_teacher": False}) == comparable_config(grid)


def test_teacher_reward_is_the_official_adv_reward_with_the_clamp():
    # basegfn.py: losses = min((fwd - target)^2, 5000); adv = log(20·losses (fwd < target) or losses, + 1.001)
    delta = torch.tensor([0.5, -0.5, 200.0, -200.0], dtype=torch.float64)
    log_r = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    got = teacher_log_reward(delta, log_r, 19.0, 0.5, 1e-3, square_clamp=5000.0)
    losses = (delta**2).clamp(max=5000)
    adv = torch.log(torch.where(delta > 0, 20 * losses, losses) + 1.001)
    assert torch.allclose(got, adv.log() + 0.5 * log_r, rtol=0, atol=1e-12)


def test_top_decile_replay_draws_half_from_the_top_ten_percent():
    buf = ReplayBuffer(1000, (3,), sampling="top_decile")
    x = torch.arange(300).view(100, 3)
    pri = torch.arange(100, dtype=torch.float64)
    buf.add(x, torch.arange(100), pri, pri)
    torch.manual_seed(0)
    states, _ = buf.sample(4000)
    drawn = states[:, 0] // 3  # the priority of each draw
    threshold = float(torch.quantile(pri, 0.9))  # 89.1: the 10 items 90..99
    assert int((drawn[:2000] >= threshold).sum()) == 2000
    assert int((drawn[2000:] <= threshold).sum()) == 2000
    assert 80 <= len(torch.unique(drawn[2000:])) <= 90  # uniform over the 90 others


def test_fifo_eviction_keeps_the_first_insertion_time_without_refresh():
    for refresh, survivor in ((True, 0), (False, 2)):
        buf = ReplayBuffer(2, (1,), refresh_age=refresh)
        one = torch.ones(1, dtype=torch.float64)
        for key in (0, 1, 0, 2):  # key 0 is seen again before key 2 arrives
            buf.add(torch.tensor([[key]]), torch.tensor([key]), one, one)
        assert survivor in buf.keys.tolist() and len(buf) == 2


def test_chained_local_search_keeps_a_window_and_counts_every_proposal():
    env = tfbind8()
    torch.manual_seed(0)
    model = SSRPolicy(env.n_features, hidden=16)
    seeds = env.with_rewards(env.rollout(model, 4))
    cur, proposals = back_and_forth(env, model, seeds, lambda t: t.log_reward, 7, 0.5, "barker", back_steps=3)
    assert len(proposals) == 7 and all(p.batch_size == 4 for p in proposals)
    # k = 3 backward steps are the unstop and 2 characters (the official string MDP): each proposal keeps a
    # 6-character window of the row's current x (the seed or an earlier proposal) and rebuilds the rest
    history = [env.to_strings(seeds.terminal)]
    changed = 0
    for p in proposals:
        for j, x_new in enumerate(env.to_strings(p.terminal)):
            windows = {x_new[i : i + 6] for i in range(3)}
            changed += x_new not in [h[j] for h in history]
            assert any(any(w in h[j] for w in windows) for h in history)
        history.append(env.to_strings(p.terminal))
    assert cur.batch_size == 4 and changed > 0
    cfg = resolve_config("tb-ls", "strings", {"name": "tfbind8"}, reward_calls=64, hidden=16, n_evals=1)
    trainer = Trainer(env, cfg)
    trainer.train_one_step()
    assert trainer.reward_calls == 32  # 4 seeds + 4 × 7 proposals, all trained on


def test_back_steps_destroy_exactly_k_moves():
    env = PrependAppendStrings(3, 6, lambda x: torch.ones(len(x), dtype=torch.float64))
    from adaptive_teacher.sources.local_search import kept_moves

    back = env.backward_rollout(env.from_index(torch.arange(10)))
    assert kept_moves(env, back, 0.5, back_steps=4).tolist() == [3] * 10  # unstop + 3 of the 6 characters
    assert kept_moves(env, back, 0.5, back_steps=1).tolist() == [6] * 10  # unstop only: x is proposed again
    assert kept_moves(env, back, 0.5, back_steps=9).tolist() == [0] * 10


def test_log_z_starts_at_five_and_stays_non_negative():
    env = tfbind8()
    options = {"reward_calls": 320, "hidden": 16, "n_evals": 1, "lr_log_z": 5.0}
    cfg = resolve_config("teacher", "strings", {"name": "tfbind8"}, **options)
    trainer = Trainer(env, cfg)
    assert float(trainer.student.log_Z.detach()) == 5.0 and float(trainer.teacher.log_Z.detach()) == 5.0
    for _ in range(12):
        trainer.train_one_step()
        assert float(trainer.student.log_Z.detach()) >= 0 and float(trainer.teacher.log_Z.detach()) >= 0


# ---- the tasks end to end ----------------------------------------------------------------------------------
def test_tfbind8_teacher_trains_and_reports_the_string_metrics(tmp_path):
    env = tfbind8()
    res = at.train(env, "teacher-per", reward_calls=640, hidden=16, n_evals=2, progress=False, out=tmp_path / "r")
    s = res.summary
    assert s["reward_calls"] == 640 and s["n_modes"] == 328 and 0 <= s["modes_found"] <= 328
    assert abs(s["log_Z_true"] - 8.3350) < 1e-3 and math.isfinite(s["log_Z_is"]) and math.isfinite(s["eubo"])
    assert s["elbo"] <= s["log_Z_true"] + 1e-6 <= s["eubo"] + 2e-6  # ELBO <= log Z <= EUBO (exact targets)
    assert s["log_Z_error"] == pytest.approx(abs(s["log_Z"] - s["log_Z_true"]), abs=1e-9)
    assert 0 <= s["mode_mass"] <= 1 and 0 <= s["l1"] <= 2 and -1 <= s["pearson"] <= 1
    assert 0.001 <= s["top100_r"] <= 1.0 and 0 < s["top100_diversity"] <= 8
    assert 0 <= s["onpolicy_modes"] <= 328 and 0.001 <= s["mean_r"] <= 1.0
    assert (tmp_path / "r" / "modes.png").stat().st_size > 0
    top = res.trainer.modes.top_states
    assert len(top) == 100 and len(torch.unique(env.state_key(top))) == 100
    resumed = Trainer.resume(tmp_path / "r", reward_calls=704)
    assert torch.equal(resumed.modes.top_states, top)
    resumed.train()
    assert float(env.log_reward(resumed.modes.top_states).min()) >= float(env.log_reward(top).min())


def _hand_gafn_delta(env, policy, rnd, states, actions, length) -> float:
    """GAFN's augmented TB residual of one string trajectory, state by state (Pan et al., 2023): the stop at
    length L is forced, so the move into x keeps its plain P_B and r(x) joins R(x)."""
    import torch.nn.functional as F

    def log_pf_and_flow(s):
        out = policy.outputs(env, s[None])
        logits = out.forward.masked_fill(~env.forward_mask(s[None]), -math.inf)
        return F.log_softmax(logits, -1)[0].detach(), float(out.log_flow[0].detach())

    def r(s):
        return 0.01 * float(rnd.error(env.features(s[None]))[0].detach())

    log_pf = sum(float(log_pf_and_flow(states[t])[0][actions[t]]) for t in range(length))
    x, edges = states[length - 1], 0.0
    for t in range(1, length):  # the moves s_{t-1} -> s_t; transition length-1 is the stop at x
        p_b = 1.0 / int(env.backward_mask(states[t][None]).sum())
        if t == length - 1:
            edges += math.log(p_b)
        else:
            edges += math.log(p_b + r(states[t]) / math.exp(log_pf_and_flow(states[t])[1]))
    log_r = float(env.log_reward(x[None])[0])
    return math.log(math.exp(log_r) + r(x) + 1e-8) + edges - float(policy.log_Z.detach()) - log_pf


@pytest.mark.parametrize("policy", ["ssr", "mlp"])
def test_gafn_on_strings_is_the_augmented_tb_of_its_formula(policy):
    from adaptive_teacher.objectives import gafn_trajectory_balance
    from adaptive_teacher.sources import RandomNetworkDistillation

    env = at.SequenceEnv("AB", 3, lambda x: 0.1 + (x == 0).sum(-1).double())
    cfg = resolve_config(
        "gafn", "strings", None, reward_calls=64, hidden=16, policy=policy, buffer_size=8, progress=False
    )
    trainer = Trainer(env, cfg)
    model = trainer.student
    assert model.flow_head and isinstance(model, SSRPolicy) == (policy == "ssr")
    torch.manual_seed(4)
    with torch.no_grad():
        model.log_Z.fill_(0.3)
    rnd = RandomNetworkDistillation(env.n_features, scale=0.01)
    traj = env.with_rewards(env.rollout(model, 6))
    intrinsic, forced_stop, _ = rnd.on_trajectories(env, traj)
    assert bool(forced_stop.all()) and bool((intrinsic[:, : env.length + 1] > 0).all())
    _, delta = gafn_trajectory_balance(env.log_probs(model, traj), model.log_Z, traj.log_reward, intrinsic, forced_stop)
    delta = delta.detach()
    for i in range(len(traj.lengths)):
        want = _hand_gafn_delta(env, model, rnd, traj.states[i], traj.actions[i].tolist(), int(traj.lengths[i]))
        assert float(delta[i]) == pytest.approx(want, rel=1e-5, abs=1e-6)
    plain = env.log_probs(model, traj)
    tb = (traj.log_reward.to(delta.dtype) + plain.log_pb.sum(1) - model.log_Z - plain.log_pf.sum(1)).detach()
    assert not torch.allclose(delta, tb)  # the intrinsic rewards change the residual ...
    zero = torch.zeros_like(intrinsic)
    _, without = gafn_trajectory_balance(plain, model.log_Z, traj.log_reward, zero, forced_stop)
    assert torch.allclose(without.detach(), tb, atol=1e-5)  # ... and without them it is plain TB


def test_gafn_and_the_mlp_policy_train_on_tfbind8(tmp_path):
    from adaptive_teacher.metrics.exact import ExactEvaluator
    from adaptive_teacher.policies import DiscretePolicy

    env = tfbind8()
    run = at.train(env, "gafn", reward_calls=192, hidden=16, n_evals=1, progress=False, out=tmp_path / "gafn")
    rnd_before = at.Trainer(env, run.trainer.cfg).rnd
    assert run.trainer.rnd is not None and isinstance(run.trainer.student, SSRPolicy)
    predictor = dict(run.trainer.rnd.named_parameters())
    assert any(not torch.equal(p, predictor[n]) for n, p in rnd_before.named_parameters() if n in predictor)
    assert math.isfinite(run.summary["l1"]) and 0 <= run.summary["modes_found"] <= 328
    mlp = at.train(env, "tb", reward_calls=192, hidden=16, policy="mlp", n_evals=1, progress=False)
    assert isinstance(mlp.trainer.student, DiscretePolicy) and mlp.trainer.cfg.policy == "mlp"
    p = ExactEvaluator(env).distribution(mlp.trainer.student)
    assert abs(float(p.sum()) - 1) < 1e-9 and mlp.summary["l1"] == pytest.approx(
        float((p - ExactEvaluator(env).target).abs().sum()), abs=1e-6
    )


def test_a_molecule_run_without_rdkit_finishes_and_says_how_to_get_the_picture(tmp_path, monkeypatch, capsys):
    import sys

    from adaptive_teacher.biochem import qm9

    env = qm9()
    for name in [m for m in sys.modules if m == "rdkit" or m.startswith("rdkit.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "rdkit", None)
    run = at.train(env, "tb", reward_calls=64, hidden=8, n_evals=1, progress=False, out=tmp_path / "qm9")
    err = capsys.readouterr().err
    assert "no picture of the top molecules" in err and "pip install 'adaptive-teacher[chem]'" in err
    assert run.summary["top100_diversity"] is None and run.summary["top100_r"] > 0
    assert (tmp_path / "qm9" / "modes.png").exists() and not (tmp_path / "qm9" / "top_molecules.png").exists()
    assert (tmp_path / "qm9" / "summary.json").exists()


def test_string_tasks_on_the_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["info", "--task", "tfbind8", "--beta", "3"])
    assert e.value.code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_terminal_states"] == 65_536 and info["n_modes"] == 328 and abs(info["log_Z"] - 11.4621) < 1e-3
    out = tmp_path / "run"
    argv = ["train", "--task", "tfbind8", "--method", "tb", "--reward-calls", "320", "--hidden", "16"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--n-evals", "1", "--no-progress", "--out", str(out)])
    assert e.value.code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == {"name": "tfbind8", "beta": 20.0, "reward_floor": True}
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["family"] == "strings" and config["policy"] == "ssr" and config["buffer"] == "reward"
    for bad, message in ((["--dim", "2"], "--dim does not apply"), (["--height", "8"], "--height does not apply")):
        with pytest.raises(SystemExit) as e:
            main(["info", "--task", "qm9", *bad])
        assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["info", "--task", "deceptive-grid", "--beta", "3"])
    assert "--beta applies to the string tasks" in capsys.readouterr().err


def test_task_info_of_the_oracle_tasks():
    seh = task_info(make_string_task("seh"))
    assert seh["n_terminal_states"] == 18**6 and seh["n_modes"] == 129 and seh["log_Z"] == pytest.approx(17.5524)
    rna = task_info(make_string_task("rna1"))
    assert rna["n_terminal_states"] == 4**14 and rna["n_modes"] == 8967 and rna["log_Z"] == pytest.approx(5.2202, 1e-4)


def test_rna_rewards_use_the_csv_scale_and_reach_r_max_at_the_best_mode():
    env = make_string_task("rna1")
    best = env.from_strings(["GGGGGCCCCGCGCG"])
    assert float(env.raw_reward(best)[0]) == pytest.approx(1.0545394628, abs=1e-9)
    assert float(env.reward(best)[0]) == pytest.approx(10.0, rel=1e-5)  # scale(β=40) of the csv: max R = 10
    assert bool(env.is_mode(best)[0])
    assert env.target_samples().shape == (2048, 14)


def test_seh_reward_and_modes():
    env = make_string_task("seh")
    x = env.from_strings(["ag550c", "000000"])
    assert float(env.raw_reward(x)[0]) == 7.033253064721926
    assert float(env.reward(x)[0]) == pytest.approx(10.0, rel=1e-12)
    modes = env.modes()
    assert bool(env.is_mode(modes).all()) and float(env.raw_reward(modes).min()) >= 6.8183016
    assert not bool(env.is_mode(x[1:]).any())
    with pytest.raises(RewardError, match=r"expected a \[m, 6\] tensor"):
        env.log_reward(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(RewardError, match="indices 0..17"):
        env.log_reward(torch.full((1, 6), 18))


# ---- a user's own oracle -----------------------------------------------------------------------------------
def _gc(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-20 * (((x == 1) | (x == 2)).double().mean(1) - 0.75) ** 2)


def test_sequence_env_scores_strings_and_rejects_malformed_ones():
    env = at.SequenceEnv("ACGT", 8, _gc, modes=["GGCCGGCA", "CCGGCCGA"])
    assert env.score(["GGCCGGCC"]).tolist() == pytest.approx([math.exp(-20 * 0.25**2)])
    with pytest.raises(RewardError, match="outside the alphabet 'ACGT'"):
        env.score(["ACGU0000"])
    with pytest.raises(RewardError, match="not a sequence of length 8"):
        env.score(["ACG"])
    by_string = at.SequenceEnv("ACGT", 8, lambda seqs: [s.count("G") + 1.0 for s in seqs], inputs="strings")
    assert by_string.score(["GGGAAAAA", "AAAAAAAA"]).tolist() == [4.0, 1.0]
    broken = at.SequenceEnv("ACGT", 8, lambda x: torch.ones(len(x) + 1))
    with pytest.raises(RewardError, match="reward_fn must return"):
        broken.score(["AAAAAAAA"])
    with pytest.raises(RewardError, match="long tensor"):
        env.reward(torch.full((2, 8), 1.5))
    with pytest.raises(RewardError, match="score\\(\\) takes strings"):
        env.reward([[0] * 8])
    at.check_env(env, n_samples=16)
    assert env.n_modes == 2 and env.is_mode(env.from_strings(["GGCCGGCA", "AAAAAAAA"])).tolist() == [True, False]


def test_sequence_env_trains_the_teacher_exactly_evaluated():
    env = at.SequenceEnv("ACGT", 5, _gc)
    res = at.train(env, "teacher", reward_calls=320, hidden=16, n_evals=1, progress=False)
    assert res.config.family == "strings" and res.summary["reward_calls"] == 320
    assert res.summary["l1"] is not None and 0 <= res.summary["l1"] <= 2  # 4^5 strings: exact evaluation
    assert env.to_strings(res.student.sample(3))[0].__len__() == 5


# ---- guided TB (Shen et al., 2023) -------------------------------------------------------------------------
def _ab_env() -> PrependAppendStrings:
    return PrependAppendStrings(2, 3, lambda x: torch.ones(len(x), dtype=torch.float64), alphabet="ab")


def test_substructure_guide_probabilities_by_hand():
    from adaptive_teacher.sources.guide import SubstructureGuide

    env = _ab_env()
    guide = SubstructureGuide(env)
    observed = env.from_strings(["aab", "bbb", "aba"])
    guide.observe(observed, torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64).log())
    x = env.from_strings(["abb"])  # not observed itself
    torch.manual_seed(0)
    log_ps, ends = [], []
    for _ in range(200):
        traj, log_p = guide.trajectories(x, torch.zeros(1, dtype=torch.float64))
        ends.append(env.to_strings(traj.terminal)[0])
        log_ps.append((env.to_strings(traj.states[0, :4]), float(log_p[0])))
        assert torch.equal(traj.actions[0, -1], torch.tensor(env.stop))
    assert set(ends) == {"abb"}
    # step 1, children of "" that are windows of abb: a (in aab, aba: mean 1.5), b (in all three: mean 2)
    # step 2 from a: ab (aab, aba: 1.5); from b: ab (1.5) or bb (bbb: 3); step 3: abb (no other x: uniform)
    expected = {
        ("", "a", "ab", "abb"): math.log(1.5 / 3.5) + math.log(1.0) + math.log(1.0),
        ("", "b", "ab", "abb"): math.log(2 / 3.5) + math.log(1.5 / 4.5) + math.log(1.0),
        ("", "b", "bb", "abb"): math.log(2 / 3.5) + math.log(3 / 4.5) + math.log(1.0),
    }
    for path, log_p in log_ps:
        assert log_p == pytest.approx(expected[tuple(path)], abs=1e-12)
    freq = sum(1 for p, _ in log_ps if p[1] == "a") / len(log_ps)
    assert abs(freq - 1.5 / 3.5) < 0.1
    # an observed x does not score itself: for "aab" (R = 1) the others are bbb (3) and aba (2)
    paths = {
        ("", "a", "ab", "aab"): math.log(2 / 4.5) + math.log(2 / (2 + 1e-5)),
        ("", "a", "aa", "aab"): math.log(2 / 4.5) + math.log(1e-5 / (2 + 1e-5)),
        ("", "b", "ab", "aab"): math.log(2.5 / 4.5),
    }
    for _ in range(20):
        traj, log_p = guide.trajectories(env.from_strings(["aab"]), torch.zeros(1, dtype=torch.float64))
        path = tuple(env.to_strings(traj.states[0, :4]))
        assert float(log_p[0]) == pytest.approx(paths[path], abs=1e-12)


def test_the_guide_scores_given_trajectories_with_the_probabilities_it_samples_them_with():
    """log_prob (Shen et al.'s offline style guide_scores_back_policy_traj) is the sampler's own log-probability,
    by hand on a P_B trajectory, and on every trajectory the guide draws."""
    from adaptive_teacher.sources.guide import SubstructureGuide

    env = _ab_env()
    guide = SubstructureGuide(env, temperature=2.0)
    guide.observe(env.from_strings(["aab", "bbb", "aba"]), torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64).log())
    torch.manual_seed(0)
    x = env.from_strings(["abb", "aab", "bab", "aaa"])
    log_r = torch.tensor([0.0, 0.0, 1.0, -1.0], dtype=torch.float64)
    for _ in range(30):
        traj, log_p = guide.trajectories(x, log_r)
        assert torch.allclose(guide.log_prob(traj), log_p, atol=1e-12)
    back = env.backward_rollout(env.from_strings(["abb"] * 64))
    back.log_reward = torch.zeros(64, dtype=torch.float64)
    scored = guide.log_prob(back)
    w = lambda v: v**2.0  # noqa: E731 - the temperature 2 applied to the scores
    by_path = {
        ("", "a", "ab", "abb"): math.log(w(1.5) / (w(1.5) + w(2.0))),
        ("", "b", "ab", "abb"): math.log(w(2.0) / (w(1.5) + w(2.0))) + math.log(w(1.5) / (w(1.5) + w(3.0))),
        ("", "b", "bb", "abb"): math.log(w(2.0) / (w(1.5) + w(2.0))) + math.log(w(3.0) / (w(1.5) + w(3.0))),
    }
    paths = [tuple(env.to_strings(back.states[i, :4])) for i in range(64)]
    assert len(set(paths)) > 1
    for path, value in zip(paths, scored.tolist(), strict=True):
        assert value == pytest.approx(by_path[path], abs=1e-12)


def test_guided_tb_on_tfbind8_scores_the_learned_backward_policys_trajectories():
    env = tfbind8()
    cfg = resolve_config("gtb", "strings", env.task_spec(), reward_calls=10**6, n_evals=1)
    assert cfg.guide_offline == "score_back" and cfg.learn_pb  # settings.yaml: TFBind8 and RNA
    trainer = Trainer(env, cfg)
    for _ in range(3):
        trainer.train_one_step()
    from adaptive_teacher.sources.schedule import ScheduledStep

    torch.manual_seed(1)
    batch = trainer.next_batch(ScheduledStep("replay"))
    assert batch.log_guide is not None and torch.allclose(batch.log_guide, trainer.guide.log_prob(batch.traj))
    assert bool((batch.log_guide <= 0).all())
    qm9 = resolve_config("gtb", "strings", make_string_task("qm9").task_spec())
    assert qm9.guide_offline == "resample"


def test_learned_ssr_backward_policy_scores_unique_parents():
    env = tfbind8()
    torch.manual_seed(0)
    model = SSRPolicy(env.n_features, hidden=16, learn_pb=True)
    states = env.backward_rollout(env.from_index(torch.arange(0, 65536, 4099))).states[:, 3]
    back = model.outputs(env, states).backward.detach()
    parents, exists = env.parents(states)
    for i in range(len(states)):
        for b in range(env.n_backward_actions):
            if not exists[i, b]:
                assert float(back[i, b]) == 0.0
                continue
            e_s = model.back_encoder(env.features(states[i : i + 1]))
            e_p = model.back_encoder(env.features(parents[i, b : b + 1]))
            ref = model.back_scorer(torch.cat([e_s, e_p], -1)).squeeze().clamp(-50, 50).detach()
            assert float(back[i, b]) == pytest.approx(float(ref), abs=1e-5)
    lp = env.log_probs(model, env.backward_rollout(env.from_index(torch.arange(8)), model))
    assert bool((lp.log_pb <= 0).all()) and bool((lp.log_pb < 0).any())


def test_guided_tb_target_and_backward_regression():
    env = make_string_task("qm9")
    cfg = resolve_config("gtb", "strings", env.task_spec(), reward_calls=10**6, hidden=16, n_evals=1, loss_clamp=100.0)
    trainer = Trainer(env, cfg)
    for _ in range(3):
        trainer.train_one_step()
    from adaptive_teacher.sources.schedule import ScheduledStep

    batch = trainer.next_batch(ScheduledStep("replay"))
    assert batch.log_guide is not None and batch.traj.batch_size == 32
    traj, w = batch.traj, cfg.guide_mix
    lp = env.log_probs(trainer.student, traj)
    loss, delta, _ = trainer._objective(trainer.student, traj, traj.log_reward, batch.log_guide)
    want = traj.log_reward + w * lp.log_pb.sum(1) + (1 - w) * batch.log_guide - trainer.student.log_Z - lp.log_pf.sum(1)
    assert torch.allclose(delta.double(), want.double(), atol=1e-4)
    back_loss = (lp.log_pb.sum(1) - batch.log_guide).square().mean()
    tb_loss = want.square().clamp(max=cfg.loss_clamp).mean()
    assert float(loss.detach()) == pytest.approx(float((tb_loss + back_loss).detach()), rel=1e-5)
    # P_B is trained by the regression alone: its gradient is that of the backward loss
    params = list(trainer.student.back_encoder.parameters())
    g_all = torch.autograd.grad(loss, params, retain_graph=True)
    lp2 = env.log_probs(trainer.student, traj)
    g_back = torch.autograd.grad((lp2.log_pb.sum(1) - batch.log_guide).square().mean(), params)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_all, g_back, strict=True))
    assert len(trainer.guide.seen) > 0
    with pytest.raises(ConfigError, match="needs --learn-pb|needs learn_pb"):
        from adaptive_teacher.config import validate

        validate(resolve_config("teacher", "strings", guide="substructure"))


def test_top_k_tracker_is_the_best_distinct_states_seen():
    from adaptive_teacher.metrics.modes import ModeTracker

    env = tfbind8()
    tracker = ModeTracker(env, top_k=50)
    torch.manual_seed(0)
    seen = []
    for _ in range(20):  # batches with repeats within and across them
        x = env.from_index(torch.randint(0, 400, (64,)))
        tracker.update(x, env.log_reward(x))
        seen.append(x)
    allx = torch.unique(torch.cat(seen), dim=0)
    best = torch.sort(env.log_reward(allx), descending=True).values[:50]
    assert torch.equal(torch.sort(tracker.top_log_reward, descending=True).values, best)
    assert len(torch.unique(env.state_key(tracker.top_states))) == 50
    assert torch.equal(env.log_reward(tracker.top_states), tracker.top_log_reward)
