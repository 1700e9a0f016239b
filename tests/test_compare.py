"""compare: reuse only for the identical config, failed runs after the table, Ctrl-C within seconds, no
orphaned workers; the tables and plots it writes."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adaptive_teacher.compare import compare, format_table, plan_run, run_config
from adaptive_teacher.errors import ConfigError, RunInterrupted, RunsFailed, TrainingDiverged
from adaptive_teacher.plots import mean_band, plot_diffusion_run, plot_discrete_run, plot_metric_vs_reward_calls
from adaptive_teacher.trainer import Trainer

TASK = {"name": "deceptive-grid", "dim": 2, "height": 8}
TINY = {"batch_size": 16, "n_evals": 2, "hidden": 32}


def _compare(out, methods=("tb",), seeds=(0,), reward_calls=320, lines=None, **options):
    """compare on the tiny task; its progress lines go to ``lines``."""
    lines = [] if lines is None else lines
    return compare(TASK, list(methods), list(seeds), reward_calls, out, log=lines.append, **{**TINY, **options})


# ---- reuse ----------------------------------------------------------------------------------------------
def test_a_finished_run_is_reused_only_for_the_identical_config(tmp_path):
    lines = []
    table = _compare(tmp_path, lines=lines)
    run = tmp_path / "tb" / "seed0"
    metrics = (run / "metrics.jsonl").read_text()
    assert "starting" in lines[0] and "finished in" in lines[-1]

    lines = []
    again = _compare(tmp_path, lines=lines)
    assert again == table and (run / "metrics.jsonl").read_text() == metrics
    assert "reused" in lines[0] and not any("starting" in line for line in lines)

    for options, difference in (({"reward_calls": 640}, "reward_calls: 320 → 640"), ({"lr": 1e-2}, "lr: 0.001 → 0.01")):
        with pytest.raises(RunsFailed) as failed:
            _compare(tmp_path, **options)
        message = str(failed.value)
        assert difference in message and str(run) in message and "tb seed 0" in message
        assert "another out directory" in message and "delete" in message
        assert (run / "metrics.jsonl").read_text() == metrics  # the earlier run is untouched
    assert _compare(tmp_path) == table


def test_plan_run_compares_fingerprints(tmp_path):
    cfg = run_config(TASK, "tb", 0, 320, 1, TINY)
    assert plan_run(TASK, cfg, tmp_path) == ("start", None)
    from adaptive_teacher.run_dir import fingerprint

    good = {"task": TASK, "config": cfg.to_dict()}  # no stored fingerprint: computed from the config
    (tmp_path / "config.json").write_text(json.dumps(good))
    (tmp_path / "metrics.jsonl").write_text("")
    assert plan_run(TASK, cfg, tmp_path) == ("restart", None)  # died before its first checkpoint
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert plan_run(TASK, cfg, tmp_path) == ("resume", None)
    (tmp_path / "summary.json").write_text(json.dumps({"modes_found": 1}))  # no fingerprint: never reused
    assert plan_run(TASK, cfg, tmp_path)[0] == "resume"
    summary = {"modes_found": 1, "fingerprint": fingerprint(TASK, cfg.to_dict())}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert plan_run(TASK, cfg, tmp_path) == ("reuse", summary)
    other = run_config(TASK, "tb", 0, 320, 4, {**TINY, "C": 5.0})  # threads do not count, C does
    with pytest.raises(ConfigError, match="C: 19.0 → 5.0"):
        plan_run(TASK, other, tmp_path)
    with pytest.raises(ConfigError, match="task: "):
        plan_run({**TASK, "height": 6}, cfg, tmp_path)


def test_a_run_that_stopped_before_its_first_checkpoint_starts_again(tmp_path):
    cfg = run_config(TASK, "tb", 0, 320, 1, TINY)
    run = tmp_path / "tb" / "seed0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"task": TASK, "config": cfg.to_dict()}))
    (run / "metrics.jsonl").write_text("")
    lines = []
    _compare(tmp_path, lines=lines)
    assert "again" in lines[0] and "finished in" in lines[-1]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


# ---- failures and interrupts in-process -----------------------------------------------------------------
def _break_seed_1(monkeypatch, error: BaseException) -> None:
    original = Trainer.train_one_step

    def step(self):
        if self.cfg.seed == 1 and self.step == 3:
            raise error
        return original(self)

    monkeypatch.setattr(Trainer, "train_one_step", step)


def test_a_diverged_run_keeps_the_table_of_the_others(tmp_path, monkeypatch):
    _break_seed_1(monkeypatch, TrainingDiverged("the Student loss became nan"))
    lines = []
    with pytest.raises(RunsFailed) as failed:
        _compare(tmp_path, seeds=(0, 1), lines=lines)
    message = str(failed.value)
    assert message.startswith("1 of 2 runs failed")
    assert f"tb seed 1 ({tmp_path / 'tb' / 'seed1'}): the Student loss became nan" in message
    table = (tmp_path / "results.md").read_text()
    assert failed.value.table == table and "| tb (1 of 2 seeds) |" in table
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 2
    assert (tmp_path / "modes_vs_reward_calls.png").exists()
    assert any("tb seed 1: FAILED" in line for line in lines)


def test_ctrl_c_in_process_is_a_run_interrupted_that_says_how_to_continue(tmp_path, monkeypatch):
    _break_seed_1(monkeypatch, KeyboardInterrupt())
    with pytest.raises(RunInterrupted) as stopped:
        _compare(tmp_path, seeds=(0, 1, 2))
    message = str(stopped.value)
    assert "1 of 3 runs finished" in message and "kept" in message and "same compare command" in message
    assert (tmp_path / "tb" / "seed1" / "checkpoint.pt").exists()


# ---- real processes -------------------------------------------------------------------------------------
def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _start_compare(out: Path, seeds: str, log: Path) -> subprocess.Popen:
    args = ["compare", "--dim", "2", "--height", "8", "--methods", "tb", "--seeds", seeds, "--jobs", "2"]
    args += ["--reward-calls", "5000000", "--n-evals", "2000", "--hidden", "32", "--out", str(out)]
    with open(log, "w") as err:
        # A background job of a non-interactive shell (CI) inherits SIGINT as ignored, and then Python installs
        # no KeyboardInterrupt handler: restore the default so the test's SIGINT means what Ctrl-C means.
        return subprocess.Popen(
            [sys.executable, "-m", "adaptive_teacher.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def _wait_for(what, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _pids(log: Path) -> dict[int, int]:
    """Run number → worker pid, from the progress lines '[k/N] ... (pid P)'."""
    return {int(k): int(p) for k, p in re.findall(r"^\[(\d+)/\d+\].*\(pid (\d+)\)$", log.read_text(), re.M)}


def test_ctrl_c_stops_compare_with_jobs_2_within_seconds(tmp_path):
    out, log = tmp_path / "cmp", tmp_path / "stderr.txt"
    proc = _start_compare(out, "0,1,2", log)
    try:
        ckpt = [out / "tb" / f"seed{s}" / "checkpoint.pt" for s in range(3)]
        _wait_for(lambda: len(_pids(log)) == 2 and ckpt[0].exists() and ckpt[1].exists())
        os.kill(_pids(log)[1], signal.SIGKILL)  # a worker dies (out of memory): reported, the next run starts
        _wait_for(lambda: len(_pids(log)) == 3 and ckpt[2].exists())
        assert "tb seed 0: FAILED: the worker process" in log.read_text()
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGINT)  # the parent only, as `kill -INT <pid>` does
        t0 = time.monotonic()
        code = proc.wait(timeout=20)
        took = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    err = log.read_text()
    assert code == 130, err
    assert took < 15, err
    assert "compare interrupted: 0 of 3 runs finished" in err and "same compare command" in err
    assert "Traceback" not in err
    assert not any(_running(pid) for pid in _pids(log).values())
    assert all(c.exists() for c in ckpt)


def test_workers_do_not_outlive_a_killed_parent(tmp_path):
    out, log = tmp_path / "cmp", tmp_path / "stderr.txt"
    proc = _start_compare(out, "0,1", log)
    try:
        ckpt = [out / "tb" / f"seed{s}" / "checkpoint.pt" for s in range(2)]
        _wait_for(lambda: len(_pids(log)) == 2 and all(c.exists() for c in ckpt))
        proc.kill()  # no cleanup possible in the parent
        proc.wait()
        pids = list(_pids(log).values())
        _wait_for(lambda: not any(_running(pid) for pid in pids), timeout=10)
    finally:
        proc.kill()
        proc.wait()
        for pid in _pids(log).values():
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    assert all(c.exists() for c in ckpt)


# ---- tables ---------------------------------------------------------------------------------------------
def test_tables_name_budget_seeds_and_spread_and_skip_plus_minus_for_one_seed():
    row = {"method": "tb", "seed": 0, "modes_found": 3, "l1": 0.41, "reward_calls": 320, "step": 20, "train_s": 1.23}
    one = format_table(TASK, ["tb"], [0], [row], "320 reward calls", n_modes=4)
    assert "±" not in one and "1 seed" in one and "320 reward calls per run" in one
    assert (
        "| reward calls | iterations | train s |" in one and "| tb | 3 | 0.410 |" in one and "| 320 | 20 | 1.2 |" in one
    )
    two = format_table(TASK, ["tb"], [0, 1], [row, {**row, "seed": 1, "modes_found": 4}], "320 reward calls", 4)
    assert "2 seeds" in two and "mean ± std" in two and "| tb | 3.5 ± 0.7 |" in two and "| 320 | 20 |" in two
    diffusion = {"name": "gmm25", "dim": 2, "n_steps": 100, "t_scale": 1.0}
    rows = [{"method": "tb", "seed": 0, "eubo": 0.5, "reward_calls": 6000, "step": 20, "train_s": 2.0}]
    table = format_table(diffusion, ["tb"], [0], rows, "20 iterations", log_Z_true=None)
    assert "reward calls" in table and "| 6000 |" in table and "log Z is unknown" in table


# ---- plots ----------------------------------------------------------------------------------------------
def test_the_band_is_clipped_to_the_feasible_range():
    ys = np.array([[0.0, 4.0, 1.0], [0.0, 4.0, 3.0], [3.0, 1.0, 2.0]])
    mean, lower, upper = mean_band(ys, low=0.0, high=4.0)
    assert np.allclose(mean, ys.mean(0))
    assert (lower >= 0).all() and (upper <= 4).all() and (lower <= mean).all() and (mean <= upper).all()
    assert lower[0] == 0.0 and upper[1] == 4.0  # mean ∓ std would leave [0, 4] here
    mean, lower, upper = mean_band(ys[:1], low=0.0, high=4.0)  # one seed: no band
    assert np.array_equal(lower, mean) and np.array_equal(upper, mean)


def _titles(monkeypatch) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    titles: list[str] = []
    set_title, suptitle = Axes.set_title, Figure.suptitle
    monkeypatch.setattr(Axes, "set_title", lambda self, t, *a, **k: titles.append(t) or set_title(self, t, *a, **k))
    monkeypatch.setattr(Figure, "suptitle", lambda self, t, *a, **k: titles.append(t) or suptitle(self, t, *a, **k))
    return titles


def test_run_plots_survive_missing_values_and_label_snapshots_by_their_step(tmp_path, monkeypatch):
    import torch

    titles = _titles(monkeypatch)
    history = [
        {"step": 0, "reward_calls": 0, "modes_found": 0, "n_modes": 4, "l1": None},
        {"step": 5, "reward_calls": 80},
        {"step": 10, "reward_calls": 160, "modes_found": 2, "n_modes": 4, "l1": 1.2},
    ]
    plot_discrete_run(tmp_path, history, title="grid · tb · seed 0")
    plot_discrete_run(tmp_path, [{"step": 0, "reward_calls": 0, "modes_found": None, "l1": None}], title="x")
    assert (tmp_path / "modes.png").stat().st_size > 1000 and "grid · tb · seed 0" in titles

    class NoSampler:
        has_sampler = False

    class Env:
        density = NoSampler()

    # After --resume the snapshots start at step 40 while history starts at 0: labels follow the snapshots.
    snapshots = [{"student": torch.randn(50, 3), "teacher": torch.randn(50, 3), "step": 40 + 10 * i} for i in range(4)]
    history = [{"step": 10 * i, "elbo": -1.0, "eubo": None, "log_Z_true": None} for i in range(8)]
    plot_diffusion_run(tmp_path, history, snapshots, Env(), title="user · teacher")
    assert (tmp_path / "samples.png").exists() and (tmp_path / "metrics.png").exists()
    assert "Student, step 70" in titles and "Teacher, step 40" in titles
    assert any("user · teacher" in t and "no exact sampler" in t for t in titles)


def test_comparison_plot_uses_iterations_and_draws_the_reference(tmp_path, monkeypatch):
    titles = _titles(monkeypatch)
    for s in (0, 1):
        run = tmp_path / "tb" / f"seed{s}"
        run.mkdir(parents=True)
        rows = [
            {"step": i, "reward_calls": 300 * i, "eubo": 1.0 + s if i else None, "log_Z_true": None} for i in range(3)
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from matplotlib.axes import Axes

    lines = []
    axhline, set_xlabel = Axes.axhline, Axes.set_xlabel
    monkeypatch.setattr(Axes, "axhline", lambda self, y, *a, **k: lines.append(y) or axhline(self, y, *a, **k))
    monkeypatch.setattr(Axes, "set_xlabel", lambda self, t, *a, **k: lines.append(t) or set_xlabel(self, t, *a, **k))
    path = tmp_path / "eubo.png"
    title = "EUBO\ngmm25, 2 iterations, 2 seeds"
    plot_metric_vs_reward_calls(tmp_path, ["tb"], [0, 1], "eubo", path, title, x="step", reference=0.0)
    assert path.stat().st_size > 1000 and 0.0 in lines and "iterations" in lines and titles[-1].startswith("EUBO")
