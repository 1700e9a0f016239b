import json
import math
import subprocess
import sys

import pytest
import torch

import adaptive_teacher as at
from adaptive_teacher.cli import main as cli_main
from adaptive_teacher.config import PRESETS, resolve_config
from adaptive_teacher.envs import DeceptiveGrid, Hypergrid
from adaptive_teacher.errors import ConfigError, RewardError, TrainingDiverged
from adaptive_teacher.sources.schedule import ScheduledStep
from adaptive_teacher.trainer import Trainer, build_schedule

SMALL = {"hidden": 32, "n_evals": 2, "progress": False}


@pytest.mark.parametrize("method", list(PRESETS))
def test_every_method_trains_and_reports(method, tmp_path):
    env = DeceptiveGrid(2, 6)
    res = at.train(env, method, reward_calls=320, out=tmp_path, **SMALL)
    s = res.summary
    assert s["reward_calls"] >= 320 and s["method"] == method
    assert 0 <= s["modes_found"] <= env.n_modes
    assert math.isfinite(s["l1"]) and math.isfinite(s["log_Z"])
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for key in ("step", "reward_calls", "modes_found", "l1", "log_Z", "loss", "wall_s"):
        assert key in json.loads(lines[-1])
    assert json.loads((tmp_path / "config.json").read_text())["config"]["method"] == method
    assert (tmp_path / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["n_modes"] == env.n_modes


def test_schedules_follow_the_paper_grid_code():
    def schedule(method):
        return [str(step) for step in build_schedule(resolve_config(method))]

    assert schedule("teacher")[:4] == ["student", "student", "teacher", "teacher"]
    assert schedule("teacher-per")[:4] == ["student", "replay", "teacher", "replay"]
    assert schedule("tb-prt")[:2] == ["student", "replay"]
    ls = schedule("tb-ls")
    assert ls.count("student+ls") == 2 and len(ls) == 16
    assert schedule("teacher-ls").count("teacher+ls") == 2


def test_budget_counts_reward_calls_not_replays():
    env = DeceptiveGrid(2, 6)
    tb = Trainer(env, resolve_config("tb", reward_calls=480, **SMALL))
    tb.train()
    assert (tb.step, tb.reward_calls) == (30, 480)
    prt = Trainer(env, resolve_config("tb-prt", reward_calls=480, **SMALL))
    prt.train()
    assert (prt.step, prt.reward_calls) == (59, 480)  # 30 on-policy steps + 29 free replay steps
    ls = Trainer(env, resolve_config("tb-ls", reward_calls=384, **SMALL))
    ls.train()
    assert (ls.step, ls.reward_calls) == (16, 14 * 16 + 2 * (16 + 4 * 16))


def test_modes_found_counts_distinct_modes_in_training_samples():
    env = DeceptiveGrid(2, 6)
    tr = Trainer(env, resolve_config("tb", reward_calls=160, **SMALL))
    tr.train()
    # recount from scratch: every mode key must be a real mode
    keys = torch.tensor(sorted(tr.modes.found), dtype=torch.long)
    states = env.enumerate_states()
    mode_keys = set(env.state_key(states[env.is_mode(states)]).tolist())
    assert set(keys.tolist()) <= mode_keys


def test_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    env = DeceptiveGrid(2, 6)
    cfg = resolve_config("teacher-per", reward_calls=640, hidden=32, n_evals=4, progress=False)
    full = Trainer(env, cfg, tmp_path / "full").train()

    calls = {"n": 0}
    original = Trainer.train_step

    def crashing(self, batch):
        calls["n"] += 1
        if calls["n"] == 45:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        Trainer(env, cfg, tmp_path / "cut").train()
    monkeypatch.setattr(Trainer, "train_step", original)
    kept = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert 1 <= len(kept) < 5
    resumed = Trainer.resume(tmp_path / "cut").train()
    for key in ("step", "reward_calls", "modes_found", "l1", "log_Z", "loss"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-5), key
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 5


def test_nan_loss_stops_and_keeps_checkpoint_and_metrics(tmp_path, monkeypatch):
    env = DeceptiveGrid(2, 6)
    tr = Trainer(env, resolve_config("teacher", reward_calls=640, hidden=32, n_evals=8, progress=False), tmp_path)
    original = Trainer._objective
    state = {"steps": 0}

    def poisoned(self, model, traj, log_reward, log_guide=None):
        loss, *rest = original(self, model, traj, log_reward, log_guide)
        if model is self.student and torch.is_grad_enabled():
            state["steps"] += 1
            if state["steps"] > 15:
                loss = loss * float("nan")
        return (loss, *rest)

    monkeypatch.setattr(Trainer, "_objective", poisoned)
    with pytest.raises(TrainingDiverged, match="Student loss became nan at step 15"):
        tr.train()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 5, 10, 15]
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 15


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0.0])
def test_bad_reward_names_the_state(bad):
    def reward(s):
        r = torch.ones(len(s), dtype=torch.float64)
        r[(s == torch.tensor([0, 1])).all(-1)] = bad
        return r

    env = Hypergrid(2, 4, reward)
    with pytest.raises(RewardError, match=r"at state \[0, 1\]"):
        env.log_reward(torch.tensor([[0, 0], [0, 1]]))


@pytest.mark.parametrize(
    "overrides,option",
    [
        ({"reward_calls": 0}, "reward_calls"),
        ({"C": -1.0}, "C"),
        ({"buffer": "reward", "buffer_size": 10_000}, "buffer_size"),
        ({"eps": 2.0}, "eps"),
        ({"lr": 0.0}, "lr"),
        ({"buffer": "lifo"}, "buffer"),
    ],
)
def test_impossible_configs_name_the_option(overrides, option):
    # Python callers get the keyword they used, not a command-line flag.
    with pytest.raises(ConfigError, match=rf"^{option} ") as info:
        Trainer(DeceptiveGrid(2, 6), resolve_config("tb", **overrides))
    assert "--" not in str(info.value)


def test_unknown_method():
    with pytest.raises(ConfigError, match="^method: unknown method 'sac'"):
        resolve_config("sac")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "adaptive_teacher.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args,option",
    [
        (["info", "--height", "1"], "--height"),
        (["info", "--dim", "0"], "--dim"),
        (["info", "--task", "chess"], "--task"),
        (["train", "--method", "foo"], "--method"),
        (["train", "--reward-calls", "-5"], "--reward-calls"),
        (["train", "--C", "-1"], "--C"),
        (["train", "--method", "tb-prt", "--buffer-size", "999999"], "--buffer-size"),
        (["compare", "--methods", "tb,nope"], "--method"),
        (["train", "--resume", "/nonexistent/run"], "--resume"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(args, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and option in err


def test_cli_error_in_a_real_process_has_no_traceback():
    proc = _cli("train", "--method", "foo")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "adaptive-teacher: error: --method: unknown method 'foo'; choose one of " + ", ".join(PRESETS)
    )


def _cli_json(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(list(args))
    assert exit_info.value.code == 0
    return json.loads(capsys.readouterr().out)


def test_cli_info_json(capsys):
    info = _cli_json(capsys, "info", "--task", "deceptive-grid", "--dim", "2", "--height", "16")
    assert (info["n_terminal_states"], info["n_modes"]) == (255, 9)
    assert info["log_Z"] == pytest.approx(3.374, abs=1e-3)


def test_cli_train_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--dim", "2", "--height", "6", "--method", "tb-eps", "--hidden", "16", "--n-evals", "2", "--no-progress"]
    summary = _cli_json(capsys, "train", *args, "--reward-calls", "160", "--out", str(out))
    assert summary["method"] == "tb-eps" and summary["reward_calls"] == 160
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["eps"] == 0.01 and cfg["task"] == {"name": "deceptive-grid", "dim": 2, "height": 6}
    resumed = _cli_json(capsys, "train", "--resume", str(out), "--no-progress")
    assert resumed["step"] == summary["step"]


def test_cli_compare_writes_table_csv_and_plot(tmp_path):
    proc = _cli(
        "compare",
        "--dim",
        "2",
        "--height",
        "6",
        "--methods",
        "tb,teacher",
        "--seeds",
        "0,1",
        "--reward-calls",
        "160",
        "--hidden",
        "16",
        "--n-evals",
        "2",
        "--jobs",
        "2",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "modes_vs_reward_calls.png").stat().st_size > 1000
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("method,seed")
    table = (tmp_path / "results.md").read_text()
    assert "| tb |" in table and "| teacher |" in table


def test_default_budgets_follow_the_paper_equal_budget_rule():
    from adaptive_teacher.tasks import default_budget, make_task

    assert default_budget(DeceptiveGrid(2, 32)) == {"reward_calls": 96_000}
    assert default_budget(DeceptiveGrid(4, 16)) == {"reward_calls": 96_000}
    assert default_budget(DeceptiveGrid(4, 32)) == {"reward_calls": 384_000}
    assert default_budget(DeceptiveGrid(2, 512)) == {"reward_calls": 192_000}
    assert default_budget(make_task({"name": "gmm25"})) == {"iterations": 10_000}


def test_teacher_learns_from_the_students_pre_update_residual(monkeypatch):
    """R_T uses δ from the Student *before* its optimiser step, detached, on the very batch both train on."""
    import copy

    from adaptive_teacher.sources import teacher_log_reward

    env = DeceptiveGrid(2, 6)
    tr = Trainer(env, resolve_config("teacher", reward_calls=64, hidden=16, progress=False))
    batch = tr.next_batch(ScheduledStep("student"))
    traj = batch.traj
    before = copy.deepcopy(tr.student)
    seen = {}
    original = Trainer._objective

    def spy(self, model, batch, log_reward, log_guide=None):
        if model is self.teacher:
            seen["target"], seen["batch"] = log_reward.clone(), batch
        return original(self, model, batch, log_reward, log_guide)

    monkeypatch.setattr(Trainer, "_objective", spy)
    tr.train_step(batch)
    lp = env.log_probs(before, traj)
    delta = traj.log_reward + lp.log_pb.sum(1).double() - before.log_Z.double() - lp.log_pf.sum(1).double()
    expected = teacher_log_reward(delta, traj.log_reward, C=19.0, alpha=0.0, eps=1e-3)
    assert torch.allclose(seen["target"], expected, atol=1e-4)
    assert torch.equal(seen["batch"].terminal, traj.terminal)
    assert not seen["target"].requires_grad
    # and the Student did move, so the post-update residual would differ
    lp_after = env.log_probs(tr.student, traj)
    assert not torch.allclose(lp_after.log_pf, lp.log_pf)


def test_space_too_large_to_enumerate_trains_and_reports_modes_only(tmp_path):
    env = DeceptiveGrid(4, 128)  # 268M states: no exact distribution
    res = at.train(env, "teacher-per", reward_calls=96, out=tmp_path, **SMALL)
    s = res.summary
    assert s["l1"] is None and s["log_Z_true"] is None and s["n_modes"] == 26**4
    assert s["modes_found"] >= 0 and s["reward_calls"] >= 96
