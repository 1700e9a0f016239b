"""The diffusion samplers through the shared trainer, config presets and command line."""

import json
import subprocess
import sys

import pytest
import torch

from adaptive_teacher.cli import main as cli_main
from adaptive_teacher.config import methods_for, resolve_config
from adaptive_teacher.errors import ConfigError
from adaptive_teacher.tasks import make_task
from adaptive_teacher.trainer import Trainer, build_schedule

FAST = {"batch_size": 32, "hidden": 16, "n_evals": 2, "eval_samples": 64, "final_eval_samples": 128, "progress": False}


def small_env(name="gmm25", dim=None):
    return make_task({"name": name, "dim": dim, "n_steps": 10})


@pytest.mark.parametrize("method", methods_for("diffusion"))
def test_every_diffusion_method_trains_and_reports(method, tmp_path):
    cfg = resolve_config(method, "diffusion", iterations=8, ls_every=4, ls_iterations=6, **FAST)
    summary = Trainer(small_env(), cfg, tmp_path).train()
    assert summary["step"] == 8 and summary["iterations_budget"] == 8
    for key in ("elbo", "log_Z_is", "eubo", "delta_log_Z_elbo", "delta_log_Z_is", "log_Z", "w2"):
        assert summary[key] is not None, key
    assert summary["elbo"] <= summary["log_Z_is"] + 1e-9  # Jensen on the same samples
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[-1]["reward_calls"] >= 8 * 32 // 2
    assert (tmp_path / "samples.png").exists() and (tmp_path / "metrics.png").exists()


def test_diffusion_presets_and_schedule():
    teacher = resolve_config("teacher", "diffusion")
    assert (teacher.alpha, teacher.teacher_half_square, teacher.teacher_lr_scale) == (0.5, True, 5.0)
    assert teacher.teacher_gate_quantile == 0.9 and teacher.teacher_into_buffer and teacher.lr_milestones == (0.4, 0.8)
    assert [str(s) for s in build_schedule(teacher)] == ["student", "teacher>replay", "student", "replay"]
    per_ls = [str(s) for s in build_schedule(resolve_config("tb-per-ls", "diffusion"))]
    assert per_ls[:2] == ["student", "replay"] and not any("+ls" in s for s in per_ls)  # MALA runs instead
    assert resolve_config("tb-eps", "diffusion").eps == 0.2
    with pytest.raises(ConfigError, match="^method: unknown method"):
        resolve_config("gafn", "diffusion")
    with pytest.raises(ConfigError, match="^method: unknown method"):
        resolve_config("tb-per-ls", "discrete")


def test_teacher_gate_lr_schedule_and_exploration_decay():
    cfg = resolve_config("teacher", "diffusion", iterations=10, eps=0.2, **FAST)
    tr = Trainer(small_env(), cfg)
    assert torch.isfinite(torch.tensor(tr.teacher_gate))
    lr0 = [g["lr"] for g in tr.opt_student.param_groups]
    lr_teacher0 = tr.opt_teacher.param_groups[0]["lr"]
    assert lr_teacher0 == pytest.approx(5 * lr0[0])
    assert tr.exploration("student") == pytest.approx(0.2) and tr.exploration("teacher") == 0.0
    tr.train()
    assert tr.exploration("student") == 0.0  # decayed to 0 after half the budget
    assert [g["lr"] for g in tr.opt_student.param_groups] == pytest.approx([lr * 0.01 for lr in lr0])
    assert tr.milestones_done == 2


def test_teacher_samples_enter_the_buffer_above_the_gate():
    cfg = resolve_config("teacher", "diffusion", iterations=6, **FAST)
    tr = Trainer(small_env(), cfg)
    tr.train()
    assert len(tr.buffer) > 0
    # everything but the ungated first Student batch passed the gate
    assert int((tr.buffer.log_reward <= tr.teacher_gate).sum()) <= cfg.batch_size


def test_mala_local_search_feeds_the_buffer_and_counts_energy_calls():
    cfg = resolve_config("tb-per-ls", "diffusion", iterations=5, ls_every=4, ls_iterations=10, **FAST)
    tr = Trainer(small_env(), cfg)
    tr.train()
    # the gate's initial Student batch, 3 on-policy batches (steps 0, 2, 4), one 10-step MALA run at step 4
    assert tr.reward_calls == 32 + 3 * 32 + 10 * 32


def test_manywell_trains_through_the_same_loop(tmp_path):
    cfg = resolve_config("teacher", "diffusion", iterations=4, **FAST)
    summary = Trainer(small_env("manywell", 4), cfg, tmp_path).train()
    assert summary["log_Z_true"] == pytest.approx(make_task({"name": "manywell", "dim": 4}).density.log_Z)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "adaptive_teacher.cli", *args], capture_output=True, text=True)


def _cli_json(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(list(args))
    assert exit_info.value.code == 0
    return json.loads(capsys.readouterr().out)


def test_cli_info_and_train_diffusion(tmp_path, capsys):
    info = _cli_json(capsys, "info", "--task", "manywell", "--dim", "32")
    assert info["dim"] == 32 and info["log_Z"] == pytest.approx(164.69567532, abs=1e-6)
    assert _cli_json(capsys, "info", "--task", "gmm25")["log_Z"] == 0.0
    proc = _cli(
        "train",
        "--task",
        "gmm25",
        "--method",
        "tb",
        "--iterations",
        "4",
        "--batch-size",
        "16",
        "--n-steps",
        "10",
        "--eval-samples",
        "32",
        "--final-eval-samples",
        "64",
        "--hidden",
        "16",
        "--out",
        str(tmp_path),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "config.json").read_text())["task"]["name"] == "gmm25"


@pytest.mark.parametrize(
    "args,option",
    [
        (["info", "--task", "manywell", "--dim", "3"], "--dim"),
        (["info", "--task", "gmm25", "--dim", "3"], "--dim"),
        (["info", "--task", "gmm25", "--t-scale", "-1"], "σ²"),
        (["train", "--task", "gmm25", "--method", "gafn"], "--method"),
        (["train", "--task", "gmm25", "--objective", "db"], "--objective"),
    ],
)
def test_cli_diffusion_errors(args, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err
