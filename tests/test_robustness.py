"""Trust and robustness: safe loading, runs never silently reused or overwritten, clean interrupts, clear errors."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal

import numpy as np
import pytest
import torch

import adaptive_teacher as at
from adaptive_teacher import run_dir
from adaptive_teacher.cli import build_parser
from adaptive_teacher.cli import main as cli_main
from adaptive_teacher.config import resolve_config
from adaptive_teacher.densities import GMM25
from adaptive_teacher.envs import DeceptiveGrid, DiffusionEnv, Hypergrid
from adaptive_teacher.errors import ConfigError, DataError, RewardError, RunInterrupted, TrainingDiverged
from adaptive_teacher.trainer import Trainer

TINY = {"batch_size": 16, "hidden": 16, "n_evals": 2, "progress": False}
DIFF = {"batch_size": 16, "hidden": 16, "n_evals": 2, "progress": False, "eval_samples": 64, "final_eval_samples": 64}


def _grid_run(out, method="tb", reward_calls=320, **kw):
    cfg = resolve_config(method, reward_calls=reward_calls, **{**TINY, **kw})
    return Trainer(DeceptiveGrid(2, 6), cfg, out)


def _cli(capsys, *args):
    with pytest.raises(SystemExit) as info:
        cli_main(list(args))
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


# ---- safe loading ---------------------------------------------------------------------------------
class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/adaptive-teacher-pwned",))


@pytest.mark.parametrize("method", ["tb", "teacher", "teacher-per", "gafn", "db", "tb-ls"])
def test_every_grid_checkpoint_kind_loads_with_weights_only(method, tmp_path):
    _grid_run(tmp_path, method).train()
    torch.load(tmp_path / run_dir.CHECKPOINT, weights_only=True)  # raises if anything beyond plain data
    loaded = at.load(tmp_path)
    assert loaded.summary["method"] == method and loaded.trainer.step > 0


@pytest.mark.parametrize("method", ["teacher", "tb-per-ls"])
def test_diffusion_checkpoints_load_with_weights_only(method, tmp_path):
    cfg = resolve_config(method, "diffusion", iterations=4, ls_every=2, ls_iterations=4, **DIFF)
    Trainer(DiffusionEnv(GMM25(), n_steps=5), cfg, tmp_path).train()
    torch.load(tmp_path / run_dir.CHECKPOINT, weights_only=True)
    assert at.load(tmp_path).trainer.step == 4


def test_custom_reward_checkpoint_loads_with_weights_only(tmp_path):
    env = Hypergrid(2, 5, lambda s: 1e-3 + (s.sum(-1) == 4).double())
    at.train(env, "teacher", reward_calls=320, out=tmp_path, **TINY)
    torch.load(tmp_path / run_dir.CHECKPOINT, weights_only=True)
    assert at.load(tmp_path, env=env).trainer.step > 0


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path, capsys):
    _grid_run(tmp_path).train()
    state = torch.load(tmp_path / run_dir.CHECKPOINT, weights_only=True)
    state["history"].append(_Payload())
    torch.save(state, tmp_path / run_dir.CHECKPOINT)
    marker = "/tmp/adaptive-teacher-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    with pytest.raises(run_dir.UnsafeCheckpoint, match="refused to load"):
        at.load(tmp_path)
    with pytest.raises(run_dir.UnsafeCheckpoint):
        Trainer.resume(tmp_path)
    code, _, err = _cli(capsys, "train", "--resume", str(tmp_path))
    assert code == 1 and "refused to load" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(marker)
    # A plain pickle (not a torch file) is refused too, not executed.
    with open(tmp_path / run_dir.CHECKPOINT, "wb") as f:
        pickle.dump(_Payload(), f)
    (tmp_path / run_dir.PREVIOUS_CHECKPOINT).unlink()
    with pytest.raises(DataError):
        at.load(tmp_path)
    assert not os.path.exists(marker)


# ---- runs are never silently overwritten or mixed up ----------------------------------------------
def test_an_existing_run_is_refused_unless_overwrite_and_never_keeps_a_stale_summary(tmp_path, monkeypatch):
    _grid_run(tmp_path).train()
    assert (tmp_path / run_dir.SUMMARY).exists()
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        _grid_run(tmp_path)
    # --overwrite: the new run replaces the old; interrupted before its end, it leaves no summary behind.
    cfg = resolve_config("tb", reward_calls=640, **TINY)
    trainer = Trainer(DeceptiveGrid(2, 6), cfg, tmp_path, overwrite=True)
    assert not (tmp_path / run_dir.SUMMARY).exists()
    calls = {"n": 0}
    original = Trainer.train_one_step

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_one_step", interrupted)
    with pytest.raises(RunInterrupted, match=str(tmp_path)):
        trainer.train()
    assert not (tmp_path / run_dir.SUMMARY).exists()
    assert run_dir.read_config(tmp_path)["config"]["reward_calls"] == 640


def test_cli_train_refuses_an_existing_run_and_overwrite_replaces_it(tmp_path, capsys):
    args = ["train", "--dim", "2", "--height", "6", "--hidden", "16", "--n-evals", "2", "--no-progress"]
    args += ["--reward-calls", "320", "--out", str(tmp_path / "r")]
    assert _cli(capsys, *args)[0] == 0
    code, _, err = _cli(capsys, *args)
    assert code == 2 and "already holds a run" in err
    code, out, _ = _cli(capsys, *args, "--overwrite", "--seed", "3")
    assert code == 0 and json.loads(out)["seed"] == 3


def test_resume_refuses_options_it_would_ignore_and_applies_a_new_budget(tmp_path, capsys):
    out = str(tmp_path / "r")
    base = ["train", "--dim", "2", "--height", "6", "--hidden", "16", "--n-evals", "2", "--no-progress"]
    assert _cli(capsys, *base, "--reward-calls", "320", "--out", out)[0] == 0
    code, _, err = _cli(capsys, "train", "--resume", out, "--lr", "0.1", "--method", "tb")
    assert code == 2 and "--lr, --method would be ignored" in err
    code, _, err = _cli(capsys, "train", "--resume", out, "--iterations", "50")
    assert code == 2 and "extend it with --reward-calls" in err
    code, printed, _ = _cli(capsys, "train", "--resume", out, "--reward-calls", "640", "--no-progress")
    summary = json.loads(printed)
    assert code == 0 and summary["reward_calls"] == 640 and summary["reward_calls_budget"] == 640
    saved = run_dir.read_config(out)  # config.json follows the new budget, and its fingerprint too
    assert saved["config"]["reward_calls"] == 640 and summary["fingerprint"] == saved["fingerprint"]


def test_options_that_would_do_nothing_are_errors(capsys):
    for args, needle in [
        (["train", "--reward-calls", "320", "--iterations", "5"], "give one budget"),
        (["train", "--arch", "at256"], "--arch applies to diffusion tasks only"),
        (["train", "--learn-var"], "--learn-var applies to diffusion tasks only"),
        (["train", "--task", "gmm25", "--learn-pb"], "--learn-pb applies to discrete and strings tasks only"),
        (["train", "--task", "gmm25", "--ls-accept", "mh"], "--ls-accept applies to discrete and strings tasks only"),
        (["train", "--task", "gmm25", "--height", "8"], "--height applies to grid tasks only"),
        (["train", "--alpha", "-1"], "--alpha must be >= 0"),
        (["train", "--alpha", "nan"], "--alpha must be a finite number"),
        (["train", "--lr", "inf"], "--lr must be a finite number"),
        (["train", "--seed", str(2**64)], "--seed must be in"),
        (["train", "--reward-calls", "320", "--batch-size", "1000"], "--batch-size 1000 is larger than the budget"),
        (["train", "--iterations", "2", "--batch-size", str(10**9)], "GiB for one training step"),
        (["compare", "--methods", "tb", "--seeds", "-1"], "--seed must be in"),
    ]:
        code, _, err = _cli(capsys, *args)
        assert code == 2 and needle in err, (args, err)
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("under", [False, True])  # an existing file, or a path under a file
def test_unusable_out_is_a_clear_error(under, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "run" if under else tmp_path / "file"
    code, _, err = _cli(capsys, "train", "--reward-calls", "320", "--out", str(out))
    assert code == 2 and f"--out {out}" in err and "Traceback" not in err


def test_unwritable_out_is_a_clear_error(tmp_path):
    target = "/sys/adaptive-teacher-run"  # not writable even by root
    if os.access("/sys", os.W_OK) and not os.path.exists("/sys/kernel"):
        pytest.skip("no unwritable location on this machine")
    with pytest.raises(ConfigError, match="cannot write the run there"):
        _grid_run(target)


def test_api_errors_use_python_names_and_cli_errors_use_flags(capsys):
    with pytest.raises(ConfigError, match=r"^batch_size must be >= 1"):
        at.train(DeceptiveGrid(2, 6), "tb", reward_calls=320, batch_size=0)
    with pytest.raises(ConfigError, match=r"^buffer must be one of"):
        at.train(DeceptiveGrid(2, 6), "tb", reward_calls=320, buffer="lifo")
    with pytest.raises(ConfigError, match=r"^batch_size must be an integer"):
        at.train(DeceptiveGrid(2, 6), "tb", reward_calls=320, batch_size=16.5)
    code, _, err = _cli(capsys, "train", "--batch-size", "0")
    assert code == 2 and "--batch-size must be >= 1" in err


# ---- interrupts and faults ------------------------------------------------------------------------
def test_sigint_during_a_save_is_deferred_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    trainer = _grid_run(tmp_path, reward_calls=640)
    real_save = torch.save
    saves = {"n": 0}

    def save_then_signal(obj, f, *a, **k):
        saves["n"] += 1
        if saves["n"] == 2:  # Ctrl-C in the middle of the second checkpoint
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save_then_signal)
    with pytest.raises(RunInterrupted) as info:
        trainer.train()
    assert str(tmp_path) in str(info.value) and "--resume" in str(info.value)
    assert not (tmp_path / "checkpoint.tmp").exists()
    state = torch.load(tmp_path / run_dir.CHECKPOINT, weights_only=True)  # complete, the second save
    rows = run_dir.read_metrics(tmp_path)
    assert state["step"] == rows[-1]["step"] and len(rows) == 2
    monkeypatch.setattr(torch, "save", real_save)
    assert Trainer.resume(tmp_path).train()["reward_calls"] == 640


def test_nan_action_probabilities_stop_with_a_clear_error_and_keep_the_checkpoint(tmp_path, monkeypatch, capsys):
    trainer = _grid_run(tmp_path, reward_calls=640)
    original = Trainer.train_one_step

    def poison(self):
        if self.step == 25:
            with torch.no_grad():
                for p in self.student.parameters():
                    p.fill_(float("nan"))
        return original(self)

    monkeypatch.setattr(Trainer, "train_one_step", poison)
    with pytest.raises(TrainingDiverged, match="NaN action probabilities.*checkpoint of step 20") as info:
        trainer.train()
    assert str(tmp_path) in str(info.value)
    assert torch.load(tmp_path / run_dir.CHECKPOINT, weights_only=True)["step"] == 20


def _damage(kind: str, run):
    ckpt = run / run_dir.CHECKPOINT
    data = ckpt.read_bytes()
    if kind == "truncated":
        ckpt.write_bytes(data[: len(data) // 3])
    elif kind == "empty":
        ckpt.write_bytes(b"")
    elif kind == "random":
        ckpt.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "missing":
        ckpt.unlink()


@pytest.mark.parametrize("kind", ["truncated", "empty", "random", "missing"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(kind, tmp_path, capsys):
    _grid_run(tmp_path).train()
    _damage(kind, tmp_path)
    trainer = Trainer.resume(tmp_path)
    assert trainer.step == 10 and "continuing from" in capsys.readouterr().err  # the checkpoint before the last
    assert trainer.train()["reward_calls"] == 320
    _damage(kind, tmp_path)
    (tmp_path / run_dir.PREVIOUS_CHECKPOINT).unlink()
    for load in (lambda: at.load(tmp_path), lambda: Trainer.resume(tmp_path)):
        with pytest.raises(DataError, match=r"checkpoint\.pt: (damaged|missing)"):
            load()
    code, _, err = _cli(capsys, "train", "--resume", str(tmp_path))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "checkpoint.pt" in err


def test_a_run_written_before_an_option_existed_loads_and_resumes(tmp_path):
    _grid_run(tmp_path, reward_calls=160).train()
    # the run as an earlier version wrote it: its config.json and checkpoints know nothing of a newer option
    saved = json.loads((tmp_path / run_dir.CONFIG).read_text())
    del saved["config"]["ls_replaces_teacher"]
    saved["fingerprint"] = run_dir.fingerprint(saved["task"], saved["config"])
    (tmp_path / run_dir.CONFIG).write_text(json.dumps(saved))
    old_identity = run_dir.fingerprint(saved["task"], saved["config"], ignore=run_dir.BUDGET_FIELDS)
    for name in (run_dir.CHECKPOINT, run_dir.PREVIOUS_CHECKPOINT):
        state = torch.load(tmp_path / name, weights_only=True)
        state["identity"] = old_identity
        torch.save(state, tmp_path / name)
    old = at.load(tmp_path)
    assert old.trainer.counter.calls == 160 and old.summary["method"] == "tb"  # its summary.json, not a metrics row
    # resumed, then stopped before its next checkpoint: config.json is rewritten, the checkpoints are still old
    Trainer.resume(tmp_path, reward_calls=320)._write_config()
    assert old_identity in json.loads((tmp_path / run_dir.CONFIG).read_text())["earlier_identities"]
    trainer = Trainer.resume(tmp_path, reward_calls=320)
    trainer.train()
    assert trainer.counter.calls == 320 and at.load(tmp_path).trainer.counter.calls == 320
    # a checkpoint of another configuration is still refused
    state = torch.load(tmp_path / run_dir.CHECKPOINT, weights_only=True)
    state["identity"] = "0" * 16
    torch.save(state, tmp_path / run_dir.CHECKPOINT)
    with pytest.raises(DataError, match="belongs to another configuration"):
        at.load(tmp_path)


def test_a_resumed_run_keeps_the_code_that_started_it_and_lists_the_code_that_continued_it(tmp_path):
    _grid_run(tmp_path, reward_calls=160).train()
    saved = json.loads((tmp_path / run_dir.CONFIG).read_text())
    assert "resumed_by" not in saved
    started = {"version": "0.0.9", "commit": "0123456789ab"}  # as if an older checkout had started it
    (tmp_path / run_dir.CONFIG).write_text(json.dumps({**saved, "written_by": started}))
    for budget in (320, 480):  # resumed twice by the same code: listed once
        Trainer.resume(tmp_path, reward_calls=budget).train()
        now = json.loads((tmp_path / run_dir.CONFIG).read_text())
        assert now["written_by"] == started and now["resumed_by"] == [run_dir.code_version()]
    fresh = tmp_path / "fresh"
    _grid_run(fresh, reward_calls=160).train()
    assert "resumed_by" not in json.loads((fresh / run_dir.CONFIG).read_text())
    # a run whose config.json recorded no code keeps saying so; the code that continued it is listed
    saved = json.loads((fresh / run_dir.CONFIG).read_text())
    (fresh / run_dir.CONFIG).write_text(json.dumps({k: v for k, v in saved.items() if k != "written_by"}))
    Trainer.resume(fresh, reward_calls=320).train()
    now = json.loads((fresh / run_dir.CONFIG).read_text())
    assert now["written_by"] is None and now["resumed_by"] == [run_dir.code_version()]


@pytest.mark.parametrize(
    "damage,needle",
    [
        (lambda r: (r / run_dir.CONFIG).write_text("{bad json"), r"config\.json: not valid JSON"),
        (lambda r: (r / run_dir.CONFIG).write_text("[1, 2]"), r"config\.json: expected an object"),
        (lambda r: (r / run_dir.CONFIG).unlink(), r"config\.json"),
        (
            lambda r: (r / run_dir.CONFIG).write_text(
                (r / run_dir.CONFIG).read_text().replace('"hidden": 16', '"hidden": 32')
            ),
            r"config\.json was edited",
        ),
        (
            lambda r: (r / run_dir.CONFIG).write_text(
                json.dumps(
                    {
                        k: v
                        for k, v in json.loads(
                            (r / run_dir.CONFIG).read_text().replace('"hidden": 16', '"hidden": 32')
                        ).items()
                        if k != "fingerprint"
                    }
                )
            ),
            r"belongs to another configuration",
        ),
    ],
)
def test_a_damaged_config_is_one_clear_message_naming_the_file(damage, needle, tmp_path, capsys):
    _grid_run(tmp_path).train()
    damage(tmp_path)
    for load in (lambda: at.load(tmp_path), lambda: Trainer.resume(tmp_path)):
        with pytest.raises((DataError, ConfigError), match=needle):
            load()
    code, _, err = _cli(capsys, "train", "--resume", str(tmp_path))
    assert code in (1, 2) and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_resume_keeps_diffusion_snapshot_steps(tmp_path, monkeypatch):
    cfg = resolve_config("teacher", "diffusion", iterations=8, **{**DIFF, "n_evals": 4})
    env = DiffusionEnv(GMM25(), n_steps=5)
    original = Trainer.train_one_step

    def stop_at_5(self):
        if self.step == 5:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_one_step", stop_at_5)
    with pytest.raises(RunInterrupted):
        Trainer(env, cfg, tmp_path).train()
    monkeypatch.setattr(Trainer, "train_one_step", original)
    resumed = Trainer.resume(tmp_path, env=env)
    resumed.train()
    assert [s["step"] for s in resumed.evaluator.snapshots] == [0, 2, 4, 6, 8]
    assert all("teacher" in s for s in resumed.evaluator.snapshots)


# ---- user targets that are not toys ---------------------------------------------------------------
class EnergyOnly(at.Density):
    """A target known only through its energy: no log Z, no sampler, no gradient."""

    dim = 2

    def log_reward(self, x):
        x = x.double()
        return -((x**2).sum(-1) - 4).pow(2) / 2  # a ring of radius 2


def test_a_density_with_only_an_energy_trains_and_reports_elbo_and_is(tmp_path):
    env = at.DiffusionEnv(EnergyOnly(), n_steps=5)
    result = at.train(env, "teacher", iterations=6, out=tmp_path, **DIFF)
    s = result.summary
    assert math.isfinite(s["elbo"]) and math.isfinite(s["log_Z_is"]) and s["elbo"] <= s["log_Z_is"] + 1e-9
    for key in ("eubo", "delta_log_Z_elbo", "delta_log_Z_is", "w2", "log_Z_true"):
        assert s[key] is None, key
    x = torch.randn(5, 2, dtype=torch.float64)
    expected = -2 * ((x**2).sum(-1, keepdim=True) - 4) * 2 * x / 2  # d/dx of −(|x|²−4)²/2
    assert torch.allclose(EnergyOnly().grad_log_reward(x), expected)
    assert at.load(tmp_path, env=env).trainer.step == 6


class NanGradient(at.Density):
    dim = 2

    def log_reward(self, x):
        return -(x.double() ** 2).sum(-1)

    def grad_log_reward(self, x):
        return torch.full_like(x, float("nan"))


def test_a_nan_energy_gradient_stops_mala_with_a_clear_error():
    env = at.DiffusionEnv(NanGradient(), n_steps=5)
    cfg = resolve_config("tb-per-ls", "diffusion", iterations=6, ls_every=2, ls_iterations=4, **DIFF)
    with pytest.raises(RewardError, match="non-finite gradient of the log-density"):
        Trainer(env, cfg).train()


@pytest.mark.parametrize(
    "bad,needle",
    [
        (lambda s: torch.ones(len(s), 1, dtype=torch.float64), r"returned shape \[(\d+), 1\] for \1 states"),
        (lambda s: torch.ones(len(s) + 1, dtype=torch.float64), r"returned shape \[36\] for 35 states"),
        (lambda s: torch.tensor(1.0), r"shape \[\]"),
        (lambda s: torch.ones(len(s), 2), r"returned shape \[35, 2\]"),
        (lambda s: np.ones(len(s)), "ndarray"),
        (lambda s: [1.0] * len(s), "list"),
        (lambda s: None, "NoneType"),
        (lambda s: torch.ones(len(s), requires_grad=True), "requires grad"),
        (lambda s: torch.ones(len(s), dtype=torch.bool), "dtype torch.bool"),
    ],
)
def test_a_user_reward_of_the_wrong_kind_is_a_clear_error(bad, needle):
    env = Hypergrid(2, 6, bad)
    with pytest.raises(RewardError, match=needle) as info:
        at.train(env, "tb", reward_calls=320, **TINY)
    assert str(info.value).startswith("reward_fn ")


class ColumnDensity(at.Density):
    dim = 2

    def log_reward(self, x):
        return -(x.double() ** 2).sum(-1, keepdim=True)


def test_a_density_of_the_wrong_shape_is_a_clear_error():
    env = at.DiffusionEnv(ColumnDensity(), n_steps=5)
    with pytest.raises(RewardError, match=r"ColumnDensity\.log_reward must return .* shape \[64, 1\]"):
        at.train(env, "tb", iterations=2, **DIFF)


def test_train_rejects_something_that_is_not_an_environment():
    with pytest.raises(ConfigError, match="env must be a DiscreteEnv"):
        at.train("deceptive-grid", "tb")


# ---- help ------------------------------------------------------------------------------------------
def test_every_command_line_option_has_help_and_a_default():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, (name, action.option_strings)
            positional = not action.option_strings  # required: it has no default to state
            takes_value = action.nargs != 0 and action.__class__.__name__ != "_StoreTrueAction" and not positional
            if takes_value and action.__class__.__name__ != "BooleanOptionalAction":
                assert "default" in action.help, (name, action.option_strings, action.help)
