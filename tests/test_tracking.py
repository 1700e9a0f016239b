"""Experiment tracking (--log tensorboard,wandb): a mirror of metrics.jsonl, never part of a run's identity."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import adaptive_teacher as at
from adaptive_teacher import run_dir, tracking
from adaptive_teacher.cli import main as cli_main
from adaptive_teacher.config import TrainConfig, resolve_config, validate
from adaptive_teacher.envs import DeceptiveGrid
from adaptive_teacher.errors import ConfigError, DataError
from adaptive_teacher.trainer import Trainer

SMALL = {"hidden": 32, "n_evals": 2, "progress": False}
TASK = {"name": "deceptive-grid", "dim": 2, "height": 8}


def _train(out: Path, log: str, reward_calls: int = 320, **options) -> at.TrainResult:
    return at.train(DeceptiveGrid(2, 8), "tb", reward_calls=reward_calls, out=out, log=log, **{**SMALL, **options})


def _events(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``log_dir``, as TensorBoard reads them (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _assert_mirrors(events: dict[str, list[tuple[int, float]]], rows: list[dict], x: str, prefix: str = "") -> None:
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in tracking.scalars(row).items():
            if not (prefix and key == x):
                expected.setdefault(prefix + key, []).append((row[x], value))
    assert set(events) == set(expected)
    for tag, points in expected.items():
        assert [s for s, _ in events[tag]] == [s for s, _ in points], tag
        assert [v for _, v in events[tag]] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-6), tag


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """wandb offline, silent, and with its own settings/cache folders inside the test's tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var, sub in (("WANDB_DIR", "wandb-dir"), ("WANDB_CONFIG_DIR", "wandb-config"), ("WANDB_CACHE_DIR", "cache")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)


# ---- the option ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,names",
    [("none", ()), ("tensorboard", ("tensorboard",)), ("wandb, tensorboard", ("wandb", "tensorboard"))],
)
def test_log_names_the_trackers(value, names):
    assert tracking.parse_log(value) == names
    validate(resolve_config("tb", log=value))


@pytest.mark.parametrize("value", ["foo", "", "none,wandb", "tensorboard,", "TensorBoard"])
def test_an_unknown_tracker_names_the_value_and_the_allowed_ones(value):
    with pytest.raises(ConfigError, match="log .*tensorboard, wandb") as info:
        validate(resolve_config("tb", log=value))
    assert repr(value) in str(info.value)


def test_cli_log_foo_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--dim", "2", "--height", "8", "--log", "foo", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "adaptive-teacher: error: --log 'foo': 'foo' is not a tracker; use none, or a comma-separated list of "
        "tensorboard, wandb (e.g. tensorboard,wandb)"
    )
    assert not (tmp_path / "run").exists()


def test_log_does_not_change_the_fingerprint_and_old_configs_read_back(tmp_path):
    cfg = resolve_config("teacher", reward_calls=320, **SMALL).to_dict()
    tracked = {**cfg, "log": "tensorboard,wandb"}
    assert run_dir.fingerprint(TASK, tracked) == run_dir.fingerprint(TASK, cfg)
    assert run_dir.config_differences(cfg, tracked) == []
    old = {k: v for k, v in cfg.items() if k != "log"}  # a run directory written before the option existed
    assert run_dir.fingerprint(TASK, old) == run_dir.fingerprint(TASK, cfg)
    run_dir.write_json(tmp_path / run_dir.CONFIG, {"task": TASK, "config": old, "fingerprint": "0" * 16})
    with pytest.raises(DataError, match="fingerprint"):
        run_dir.read_config(tmp_path)  # a stored fingerprint is still checked
    run_dir.write_json(
        tmp_path / run_dir.CONFIG, {"task": TASK, "config": old, "fingerprint": run_dir.fingerprint(TASK, old)}
    )
    saved = run_dir.read_config(tmp_path)
    assert saved["fingerprint"] == run_dir.fingerprint(TASK, cfg)
    assert TrainConfig.from_dict(saved["config"]).log == "none"


def test_log_needs_a_run_directory():
    with pytest.raises(ConfigError, match="log tensorboard: .*run directory"):
        at.train(DeceptiveGrid(2, 8), "tb", reward_calls=320, log="tensorboard", **SMALL)


def test_nothing_is_imported_without_log(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        import adaptive_teacher as at
        from adaptive_teacher.envs import DeceptiveGrid
        at.train(DeceptiveGrid(2, 8), "tb", reward_calls=160, out=sys.argv[1], hidden=32, n_evals=1, progress=False)
        print([m for m in ("tensorboard", "wandb", "torch.utils.tensorboard") if m in sys.modules])
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert (tmp_path / "run" / run_dir.SUMMARY).exists()


@pytest.mark.parametrize("name,module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_a_missing_package_is_a_clear_error_before_anything_is_written(name, module, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    with pytest.raises(tracking.TrackingError) as info:
        _train(tmp_path / "run", f"{name}")
    assert str(info.value) == (
        f"log {name} needs the '{name}' package: pip install 'adaptive-teacher[{name}]' (or drop {name} from log)"
    )
    assert isinstance(info.value, ConfigError)
    assert not run_dir.is_run_dir(tmp_path / "run")  # the same command works once the package is installed


# ---- a tracker that fails mid-run ------------------------------------------------------------------------


class _Recorder:
    def __init__(self, name: str, fail_at: int | None = None):
        self.name, self.fail_at, self.steps, self.closed = name, fail_at, [], 0

    def log(self, row, step):
        if step == self.fail_at:
            raise OSError("disk full")
        self.steps.append(step)

    def close(self):
        self.closed += 1


def test_a_failing_tracker_is_dropped_with_one_warning(capsys):
    bad, good = _Recorder("wandb", fail_at=1), _Recorder("tensorboard")
    trackers = tracking.Trackers([bad, good])
    for step in range(4):
        trackers.log({"step": step}, step)
    trackers.close()
    assert bad.steps == [0] and good.steps == [0, 1, 2, 3] and (bad.closed, good.closed) == (1, 1)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "adaptive-teacher: warning: wandb tracking failed at step 1 (disk full); the run continues without it "
        "(metrics.jsonl has every row)"
    ]


def test_a_tracker_failing_mid_run_does_not_lose_the_run(tmp_path, monkeypatch, capsys):
    def broken(self, row, step):
        if step > 0:
            raise RuntimeError("event file gone")

    monkeypatch.setattr(tracking.TensorBoardTracker, "log", broken)
    res = _train(tmp_path, "tensorboard")
    assert len(run_dir.read_metrics(tmp_path)) == 3 and (tmp_path / run_dir.SUMMARY).exists()
    assert res.summary["reward_calls"] == 320
    assert capsys.readouterr().err.count("tensorboard tracking failed") == 1


# ---- TensorBoard -----------------------------------------------------------------------------------------


def test_tensorboard_mirrors_metrics_jsonl_by_step_and_by_reward_calls(tmp_path):
    res = _train(tmp_path, "tensorboard")
    rows = run_dir.read_metrics(tmp_path)
    assert len(rows) == 3 and rows == res.history
    assert any(v is None for v in rows[0].values())  # e.g. the loss before any step: left out
    _assert_mirrors(_events(tmp_path / "tensorboard"), rows, "step")
    _assert_mirrors(_events(tmp_path / "tensorboard" / "by_reward_calls"), rows, "reward_calls", "by_reward_calls/")
    saved = run_dir.read_config(tmp_path)
    assert saved["config"]["log"] == "tensorboard"
    assert saved["fingerprint"] == run_dir.fingerprint(saved["task"], {**saved["config"], "log": "none"})
    assert saved["fingerprint"] == res.summary["fingerprint"]


def test_tensorboard_continues_on_resume_and_starts_afresh_on_overwrite(tmp_path):
    _train(tmp_path, "tensorboard")
    Trainer.resume(tmp_path, reward_calls=640).train()
    rows = run_dir.read_metrics(tmp_path)
    assert [r["reward_calls"] for r in rows] == [0, 160, 320, 640]
    _assert_mirrors(_events(tmp_path / "tensorboard"), rows, "step")  # the checkpoint's row once, not twice
    _assert_mirrors(_events(tmp_path / "tensorboard" / "by_reward_calls"), rows, "reward_calls", "by_reward_calls/")
    at.train(DeceptiveGrid(2, 8), "tb", reward_calls=160, out=tmp_path, overwrite=True, log="tensorboard", **SMALL)
    _assert_mirrors(_events(tmp_path / "tensorboard"), run_dir.read_metrics(tmp_path), "step")


def test_cli_resume_may_turn_tracking_on_and_gets_the_earlier_rows(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--dim", "2", "--height", "8", "--method", "tb", "--hidden", "32", "--n-evals", "2", "--no-progress"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", *args, "--reward-calls", "320", "--out", str(out)])
    assert exit_info.value.code == 0 and not (out / "tensorboard").exists()
    saved = json.loads((out / run_dir.CONFIG).read_text())
    del saved["config"]["log"]  # as a run directory written before the option existed
    run_dir.write_json(out / run_dir.CONFIG, saved)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--resume", str(out), "--log", "tensorboard", "--no-progress"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    _assert_mirrors(_events(out / "tensorboard"), run_dir.read_metrics(out), "step")
    resumed = run_dir.read_config(out)
    assert resumed["config"]["log"] == "tensorboard" and resumed["fingerprint"] == saved["fingerprint"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--resume", str(out), "--log", "foo"])
    assert exit_info.value.code == 2 and "--log 'foo'" in capsys.readouterr().err


# ---- Weights & Biases ------------------------------------------------------------------------------------


def _wandb_runs(out: Path, run_id: str) -> list[Path]:
    return sorted((out / "wandb").glob(f"offline-run-*-{run_id}"))


def test_wandb_writes_an_offline_run_that_a_resume_continues(tmp_path, wandb_env):
    out = tmp_path / "run"
    res = _train(out, "wandb")
    run_id = json.loads((out / tracking.TRACKING_FILE).read_text())["wandb_id"]
    assert run_id.startswith(res.summary["fingerprint"] + "-")
    (first,) = _wandb_runs(out, run_id)
    data = (first / f"run-{run_id}.wandb").read_bytes()
    for text in ("modes_found", "log_Z", "deceptive-grid-dim2-height8-tb-seed0", res.summary["fingerprint"]):
        assert text.encode() in data, text
    assert not any((tmp_path / "wandb-dir").rglob("*.wandb"))  # dir=out wins over WANDB_DIR

    Trainer.resume(out, reward_calls=640).train()
    assert json.loads((out / tracking.TRACKING_FILE).read_text())["wandb_id"] == run_id
    runs = _wandb_runs(out, run_id)
    assert len(runs) == 2 and (runs[-1] / f"run-{run_id}.wandb").stat().st_size > 0

    _train(out, "wandb", overwrite=True)  # a replaced run is a new wandb run
    assert json.loads((out / tracking.TRACKING_FILE).read_text())["wandb_id"] != run_id


def test_an_unknown_wandb_mode_is_a_clear_error(tmp_path, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(tracking.TrackingError, match="WANDB_MODE='bogus' is not a wandb mode; set online, offline"):
        _train(tmp_path / "run", "tensorboard,wandb")
    assert not run_dir.is_run_dir(tmp_path / "run")
