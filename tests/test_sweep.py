"""sweep: spec expansion and its errors, reuse / resume / new run on a changed config, failures that do not
stop the others, a killed sweep that finishes only what is missing, and the same summaries through Ray."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaptive_teacher import sweep as sweep_module
from adaptive_teacher.errors import ConfigError, RunsFailed
from adaptive_teacher.sweep import expand_sweep, load_sweep, run_sweep, select_runs, task_slug

GRID = {"name": "deceptive-grid", "dim": 2, "height": 8}
TINY = {"batch_size": 16, "n_evals": 2, "hidden": 32, "reward_calls": 320}
SLUG = "deceptive-grid-dim2-height8"
TIMING = ("wall_s", "eval_s")  # seconds differ between two runs of the same config


def _spec(methods=("tb", "teacher"), seeds=(0, 1), **extra):
    return {
        "options": dict(TINY),
        "product": [{"tasks": [GRID], "methods": list(methods), "seeds": list(seeds)}],
        **extra,
    }


def _quiet(lines):
    return lines.append


def _comparable(summary):
    return {k: v for k, v in summary.items() if k not in TIMING and not k.endswith("_s")}


# ---- the spec -------------------------------------------------------------------------------------------
def test_a_product_with_axes_and_explicit_runs_expands_to_one_folder_per_setting(tmp_path):
    raw = _spec(
        methods=["tb"],
        seeds=[0, 1],
        runs=[{"task": GRID, "method": "teacher", "seed": 3, "label": "short", "options": {"reward_calls": 160}}],
    )
    raw["product"].append({"tasks": [GRID], "methods": ["teacher"], "seeds": [0], "axes": {"C": [1.0, 19.0]}})
    raw["product"].append({"tasks": [GRID], "methods": ["tb"], "seeds": [0]})  # a duplicate of the first block
    raw["product"].append({"tasks": [GRID], "methods": ["teacher"], "seeds": [0], "axes": {"alpha": [0.0]}})
    sweep = expand_sweep(raw, out=tmp_path)
    folders = [str(r.out.relative_to(tmp_path)) for r in sweep.runs]
    assert folders == [
        f"{SLUG}/tb/seed0",
        f"{SLUG}/tb/seed1",
        f"{SLUG}/teacher-C1/seed0",
        f"{SLUG}/teacher-C19/seed0",
        f"{SLUG}/teacher-short/seed3",
    ]
    by_folder = dict(zip(folders, sweep.runs, strict=True))
    assert by_folder[f"{SLUG}/teacher-C1/seed0"].cfg.C == 1.0
    assert by_folder[f"{SLUG}/teacher-C19/seed0"].cfg.C == 19.0
    assert by_folder[f"{SLUG}/teacher-short/seed3"].cfg.reward_calls == 160
    assert all(r.cfg.hidden == 32 for r in sweep.runs)  # teacher-alpha0 is teacher-C19 under another name: once


def test_runs_without_a_budget_get_the_papers_budget_of_their_task(tmp_path):
    raw = {
        "product": [{"tasks": [{"name": "deceptive-grid", "dim": 4, "height": 16}], "methods": ["tb"], "seeds": [0]}]
    }
    (run,) = expand_sweep(raw, out=tmp_path).runs
    assert run.cfg.reward_calls == 96_000 and run.cfg.iterations is None
    assert task_slug(run.task) == "deceptive-grid-dim4-height16"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"produce": []}, "unknown key(s) produce"),
        ({"product": [{"tasks": [GRID], "methods": ["tb"]}]}, "'seeds' is missing"),
        (
            {"product": [{"tasks": [GRID], "methods": ["tb"], "seeds": [0], "options": {"lrr": 1}}]},
            "unknown option 'lrr'",
        ),
        ({"product": [{"tasks": [{"name": "nope"}], "methods": ["tb"], "seeds": [0]}]}, "unknown task 'nope'"),
        ({"product": [{"tasks": [GRID], "methods": ["tbb"], "seeds": [0]}]}, "unknown method 'tbb'"),
        ({"product": [{"tasks": [GRID], "methods": ["tb"], "seeds": ["0"]}]}, "list of ints"),
        ({"product": [{"tasks": [GRID], "methods": ["tb"], "seeds": [0], "axes": {"C": []}}]}, "non-empty list"),
        ({"options": {"lr": -1.0}, "product": [{"tasks": [GRID], "methods": ["tb"], "seeds": [0]}]}, "lr"),
        ({}, "no runs"),
        (
            {
                "product": [
                    {"tasks": [GRID], "methods": ["tb"], "seeds": [0]},
                    {"tasks": [GRID], "methods": ["tb"], "seeds": [0], "options": {"lr": 0.01}},
                ]
            },
            "has two configurations",
        ),
    ],
)
def test_a_bad_spec_is_a_config_error_that_names_the_problem(tmp_path, raw, expected):
    with pytest.raises(ConfigError, match=None) as e:
        expand_sweep(raw, out=tmp_path)
    assert expected in str(e.value)


def test_a_spec_file_that_is_not_toml_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_sweep(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_sweep(tmp_path / "missing.toml")


# ---- running --------------------------------------------------------------------------------------------
def test_finished_runs_are_reused_and_a_changed_config_is_a_new_run_beside_the_old(tmp_path):
    lines = []
    (planned,) = run_sweep(
        expand_sweep(_spec(methods=["tb"], seeds=[0]), out=tmp_path), log=_quiet(lines), dry_run=True
    )
    assert planned["status"] == "not run" and not any(tmp_path.iterdir())  # a dry run writes nothing
    assert any(f"would start in {tmp_path / SLUG / 'tb' / 'seed0'}" in line for line in lines)
    lines = []
    sweep = expand_sweep(_spec(methods=["tb"], seeds=[0]), out=tmp_path)
    (first,) = run_sweep(sweep, threads=1, log=_quiet(lines))
    run = tmp_path / SLUG / "tb" / "seed0"
    assert first["status"] == "finished" and Path(first["dir"]) == run
    metrics = (run / "metrics.jsonl").read_text()

    lines = []
    (again,) = run_sweep(expand_sweep(_spec(methods=["tb"], seeds=[0]), out=tmp_path), threads=1, log=_quiet(lines))
    assert again["summary"] == first["summary"] and (run / "metrics.jsonl").read_text() == metrics
    assert any("reused" in line for line in lines) and not any("starting" in line for line in lines)

    changed = _spec(methods=["tb"], seeds=[0])
    changed["options"]["lr"] = 0.01
    lines = []
    (new,) = run_sweep(expand_sweep(changed, out=tmp_path), threads=1, log=_quiet(lines))
    assert Path(new["dir"]).parent == run.parent and Path(new["dir"]).name.startswith("seed0-")
    assert json.loads((Path(new["dir"]) / "config.json").read_text())["config"]["lr"] == 0.01
    assert (run / "metrics.jsonl").read_text() == metrics  # the old run is untouched
    assert any("config changed" in line for line in lines)
    recorded = json.loads((tmp_path / "sweep-sweep.json").read_text())
    assert recorded["runs"][0]["dir"] == new["dir"] and recorded["runs"][0]["status"] == "finished"

    changed["options"]["lr"] = 0.02
    lines = []
    (planned,) = run_sweep(expand_sweep(changed, out=tmp_path), log=_quiet(lines), dry_run=True)
    assert planned["status"] == "not run" and planned["dir"] not in (str(run), new["dir"])
    assert not Path(planned["dir"]).exists() and json.loads((tmp_path / "sweep-sweep.json").read_text()) == recorded
    assert any("would start in" in line for line in lines) and any("config changed" in line for line in lines)

    # a folder named after the fingerprint the config had before some option existed is still found
    changed["options"]["lr"] = 0.01
    renamed = run.parent / "seed0-0badf00d"
    Path(new["dir"]).rename(renamed)
    lines = []
    (found,) = run_sweep(expand_sweep(changed, out=tmp_path), threads=1, log=_quiet(lines))
    assert Path(found["dir"]) == renamed and any("reused" in line for line in lines)


def test_a_failed_run_is_reported_and_the_others_finish(tmp_path, monkeypatch):
    from adaptive_teacher import compare as compare_module

    real = compare_module._execute

    def flaky(task, cfg, out, action, threads):
        if cfg.method == "tb" and cfg.seed == 1:
            raise RuntimeError("the oracle crashed")
        return real(task, cfg, out, action, threads)

    monkeypatch.setattr(compare_module, "_execute", flaky)
    lines = []
    with pytest.raises(RunsFailed) as failed:
        run_sweep(expand_sweep(_spec(), out=tmp_path), threads=1, log=_quiet(lines))
    assert "1 of 4 runs failed" in str(failed.value) and "the oracle crashed" in str(failed.value)
    assert any("tb seed 1: FAILED: RuntimeError: the oracle crashed" in line for line in lines)
    finished = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("summary.json"))
    assert finished == [f"{SLUG}/tb/seed0", f"{SLUG}/teacher/seed0", f"{SLUG}/teacher/seed1"]
    assert any("[4/4 done" in line for line in lines)


def _write_spec(path: Path, raw_spec: dict) -> None:
    def value(v):
        return (
            json.dumps(v)
            if not isinstance(v, dict)
            else "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        )

    lines = [f"{k} = {value(v)}" for k, v in raw_spec.items() if isinstance(v, str)]
    lines += ["[options]"] + [f"{k} = {value(v)}" for k, v in raw_spec["options"].items()]
    for block in raw_spec["product"]:
        lines.append("[[product]]")
        lines += [
            f"{k} = {value(v) if k != 'tasks' else '[' + ', '.join(value(t) for t in v) + ']'}"
            for k, v in block.items()
        ]
    path.write_text("\n".join(lines) + "\n")


def test_a_killed_sweep_started_again_finishes_only_the_missing_runs(tmp_path):
    spec = tmp_path / "spec.toml"
    raw = _spec(methods=["tb"], seeds=[0, 1, 2])
    raw["options"]["reward_calls"] = 4000  # long enough to be killed in the middle of the second run
    raw["options"]["n_evals"] = 20
    _write_spec(spec, raw)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "adaptive_teacher.cli", "sweep", str(spec), "--out", str(out), "--threads", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    runs = [out / SLUG / "tb" / f"seed{s}" for s in range(3)]
    try:
        deadline = time.monotonic() + 120
        while not ((runs[0] / "summary.json").exists() and (runs[1] / "checkpoint.pt").exists()):
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended or stalled"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # no cleanup at all: as if the machine went down
    finally:
        proc.kill()
        proc.wait()
    assert not (runs[1] / "summary.json").exists() and not runs[2].exists()
    first_summary = (runs[0] / "summary.json").read_text()

    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "tb seed 0: reused" in err and "tb seed 1: resuming" in err and "tb seed 2: starting" in err
    assert "3 runs, 1 finished earlier, 2 to run" in err
    assert (runs[0] / "summary.json").read_text() == first_summary  # not trained again
    assert all((r / "summary.json").exists() for r in runs)
    report = (out / "report" / "report.md").read_text()  # the sweep's report, written at its end
    assert "3 run directories (3 finished and counted)" in report and "Report:" in err


def test_local_and_ray_executors_give_identical_summaries(tmp_path):
    pytest.importorskip("ray")
    raw = _spec()
    local = run_sweep(expand_sweep(raw, out=tmp_path / "local"), jobs=1, threads=1, log=_quiet([]))
    lines = []
    ray = run_sweep(expand_sweep(raw, out=tmp_path / "ray"), threads=1, executor="ray", log=_quiet(lines))
    assert [r["status"] for r in ray] == ["finished"] * 4
    assert any("queued on Ray" in line for line in lines)
    assert [_comparable(r["summary"]) for r in local] == [_comparable(r["summary"]) for r in ray]
    for a, b in zip(local, ray, strict=True):
        rows_a = [_comparable(json.loads(x)) for x in (Path(a["dir"]) / "metrics.jsonl").read_text().splitlines()]
        rows_b = [_comparable(json.loads(x)) for x in (Path(b["dir"]) / "metrics.jsonl").read_text().splitlines()]
        assert rows_a == rows_b
    again = run_sweep(expand_sweep(raw, out=tmp_path / "ray"), threads=1, executor="ray", log=_quiet(lines))
    assert [r["summary"] for r in again] == [r["summary"] for r in ray]  # reused, not run again


def test_jobs_times_threads_may_not_exceed_the_cores(tmp_path):
    sweep = expand_sweep(_spec(), out=tmp_path)
    cores = sweep_module.available_cores()
    with pytest.raises(ConfigError, match="at most the number of cores"):
        run_sweep(sweep, jobs=cores, threads=2, log=_quiet([]))
    with pytest.raises(ConfigError, match="--executor must be one of local, ray"):
        run_sweep(sweep, executor="slurm", log=_quiet([]))


def _hold(path: Path) -> subprocess.Popen:
    """Another process that holds ``path``'s run lock for 30 s (it says 'held' once it has it)."""
    code = (
        "import sys, time\nfrom adaptive_teacher.run_dir import exclusive\n"
        "with exclusive(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(30)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_two_processes_never_train_in_the_same_directory(tmp_path):
    from adaptive_teacher.run_dir import exclusive

    run = tmp_path / "run"
    holder = _hold(run)
    try:
        with pytest.raises(ConfigError, match=rf"being trained by another process \(pid {holder.pid}\)"):
            with exclusive(run):
                pass
        sweep = expand_sweep(_spec(methods=["tb"], seeds=[0]), out=tmp_path / "s")
        busy = sweep.runs[0].out
        other = _hold(busy)
        try:
            with pytest.raises(RunsFailed, match="being trained by another process"):
                run_sweep(sweep, threads=1, log=_quiet([]))
        finally:
            other.kill()
            other.wait()
        assert not (busy / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    with exclusive(run):  # released when its holder died
        pass


class _FakeRef:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args


class _FakeRay:
    """Records what a Ray executor asks for; runs each task in-process when its result is fetched."""

    def __init__(self):
        self.requests, self.initialised, self.init_args = [], False, {}

    def is_initialized(self):
        return self.initialised

    def init(self, **kwargs):
        self.initialised, self.init_args = True, kwargs

    def shutdown(self):
        self.initialised = False

    def remote(self, fn):
        fake = self

        class Remote:
            def options(self, **request):
                fake.requests.append(request)
                return self

            def remote(self, *args):
                return _FakeRef(fn, args)

        return Remote()

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.fn(*ref.args)

    def cancel(self, ref, force=False):
        pass


def test_a_ray_task_asks_for_its_threads_and_a_gpu_for_cuda_runs(tmp_path, monkeypatch):
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    trained = []
    monkeypatch.setattr(
        sweep_module, "_execute", lambda task, cfg, out, action, threads: trained.append((cfg.device, threads)) or {}
    )
    sweep = expand_sweep(_spec(methods=["tb"], seeds=[0, 1]), out=tmp_path)
    sweep.runs[1].cfg.device = "cuda"  # as if --device cuda (no GPU needed: the fake Ray only records it)
    run_sweep(sweep, threads=1, executor="ray", address="auto", log=_quiet([]))
    assert fake.requests == [
        {"num_cpus": 1, "num_gpus": 0, "max_retries": 0},
        {"num_cpus": 1, "num_gpus": 1, "max_retries": 0},
    ]
    assert fake.init_args["address"] == "auto" and "num_cpus" not in fake.init_args  # a cluster sets its own
    assert "ADAPTIVE_TEACHER_DATA" in fake.init_args["runtime_env"]["env_vars"]
    assert trained == [("cpu", 1), ("cuda", 1)] and not fake.initialised  # shut down after the sweep


def test_the_local_executor_never_imports_ray_and_log_reaches_every_run(tmp_path):
    spec = tmp_path / "spec.toml"
    _write_spec(spec, _spec(methods=["tb"], seeds=[0]))
    code = (
        "import sys\nfrom adaptive_teacher.cli import run\n"
        f"run(['sweep', {str(spec)!r}, '--out', {str(tmp_path / 'out')!r}, '--threads', '1', '--no-report'])\n"
        "print('ray' in sys.modules, 'wandb' in sys.modules, 'tensorboard' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False False"
    bad = subprocess.run(
        [sys.executable, "-m", "adaptive_teacher.cli", "sweep", str(spec), "--log", "mlflow", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "'mlflow' is not a tracker" in bad.stderr


def test_sweep_device_trains_every_run_there_and_keeps_reusing_finished_ones(tmp_path, capsys):
    import torch

    from adaptive_teacher.cli import run as cli_run
    from adaptive_teacher.run_dir import read_json

    spec, out = tmp_path / "spec.toml", tmp_path / "out"
    raw = _spec(methods=["tb"], seeds=[0])
    raw["options"]["device"] = "cuda"  # a spec written for a GPU machine ...
    _write_spec(spec, raw)
    args = ["sweep", str(spec), "--out", str(out), "--threads", "1", "--no-report"]
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda: CUDA is not available"):
            cli_run(args + ["--dry-run"])
    assert cli_run(args + ["--device", "cpu"]) == 0  # ... runs here with --device cpu
    (config,) = out.rglob("config.json")
    assert read_json(config, "run")["config"]["device"] == "cpu"
    capsys.readouterr()
    assert cli_run(args + ["--device", "cpu", "--dry-run"]) == 0  # the device is not part of a run's identity
    assert "1 finished earlier, 0 to run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "block, expected",
    [
        ({"tasks": [], "methods": ["tb"], "seeds": [0]}, "tasks: expected a non-empty list"),
        ({"tasks": [GRID], "methods": ["tb"], "seeds": [0], "options": {"threads": 2}}, "set by the sweep command"),
        (
            {"tasks": [GRID], "methods": ["tb"], "seeds": [0], "options": {"C": 1.0}, "axes": {"C": [2.0]}},
            "both an axis",
        ),
    ],
)
def test_more_spec_mistakes_are_named(tmp_path, block, expected):
    with pytest.raises(ConfigError) as e:
        expand_sweep({"product": [block]}, out=tmp_path)
    assert expected in str(e.value)


def test_one_setting_is_one_configuration_and_integers_are_floats_where_the_field_is(tmp_path):
    two_configs = {
        "product": [
            {"tasks": [GRID], "methods": ["teacher"], "seeds": [0]},
            {"tasks": [GRID], "methods": ["teacher"], "seeds": [1], "options": {"C": 1.0}},
        ]
    }
    with pytest.raises(ConfigError, match="the setting teacher of deceptive-grid-dim2-height8 has two configurations"):
        expand_sweep(two_configs, out=tmp_path)
    (a,) = expand_sweep({"product": [{"tasks": [GRID], "methods": ["teacher"], "seeds": [0], "axes": {"C": [1]}}]}).runs
    (b,) = expand_sweep(
        {"product": [{"tasks": [GRID], "methods": ["teacher"], "seeds": [0], "axes": {"C": [1.0]}}]}
    ).runs
    assert a.out == b.out and a.cfg.C == b.cfg.C == 1.0 and isinstance(a.cfg.C, float)


def test_a_run_finished_by_another_sweep_after_planning_is_reused_not_retrained(tmp_path):
    from adaptive_teacher.compare import _execute

    (run,) = expand_sweep(_spec(methods=["tb"], seeds=[0]), out=tmp_path).runs
    first = _execute(run.task, run.cfg, str(run.out), "start", 1)
    summary = (run.out / "summary.json").read_text()
    again = _execute(run.task, run.cfg, str(run.out), "restart", 1)  # a stale plan: it must not wipe the run
    assert again == first and (run.out / "summary.json").read_text() == summary


def test_only_selects_runs_by_folder_and_a_pattern_that_selects_nothing_is_named(tmp_path):
    raw = _spec(methods=["tb", "teacher"], seeds=[0, 1])
    sweep = expand_sweep(raw, out=tmp_path)

    def folders(patterns):
        return [r.out.relative_to(tmp_path).as_posix() for r in select_runs(sweep, patterns).runs]

    assert folders([]) == folders([SLUG]) == [f"{SLUG}/{m}/seed{s}" for s in (0, 1) for m in ("tb", "teacher")]
    assert folders(["*/*/seed1"]) == [f"{SLUG}/tb/seed1", f"{SLUG}/teacher/seed1"]
    assert folders([f"{SLUG}/teacher", "*/tb/seed0"]) == [
        f"{SLUG}/tb/seed0",
        f"{SLUG}/teacher/seed0",
        f"{SLUG}/teacher/seed1",
    ]
    assert select_runs(sweep, ["*/tb"]).only == ("*/tb",)
    with pytest.raises(ConfigError, match=rf"--only 'gafn' matches none of the 4 runs.*{SLUG}/tb/seed0"):
        select_runs(sweep, ["*/tb", "gafn"])
    lines = []
    (planned,) = run_sweep(select_runs(sweep, ["*/teacher/seed1"]), log=_quiet(lines), dry_run=True)
    assert planned["dir"] == str(tmp_path / SLUG / "teacher" / "seed1") and any("--only" in line for line in lines)


def test_a_sweep_with_only_updates_its_runs_in_the_record_and_keeps_the_others(tmp_path):
    sweep = expand_sweep(_spec(methods=["tb"], seeds=[0, 1]), out=tmp_path)
    record = tmp_path / "sweep-sweep.json"
    (tmp_path / "sweep-sweep.json").write_text(
        json.dumps({"runs": [{"run": "old", "dir": str(tmp_path / SLUG / "tb" / "seed0"), "status": "finished"}]})
    )
    (done,) = run_sweep(select_runs(sweep, ["*/seed1"]), threads=1, log=_quiet([]))
    runs = json.loads(record.read_text())["runs"]
    assert [r["dir"] for r in runs] == [str(tmp_path / SLUG / "tb" / "seed0"), done["dir"]]
    assert runs[0]["run"] == "old" and runs[1]["status"] == "finished"
    assert json.loads(record.read_text())["only"] == ["*/seed1"]


def test_the_eta_expects_each_unfinished_run_to_take_as_long_as_finished_runs_of_its_setting():
    from adaptive_teacher.compare import _Run

    def run(method, wall_s=None, error=None):
        summary = None if wall_s is None else {"wall_s": wall_s}
        return _Run(0, method, 0, Path("."), summary=summary, error=error)

    runs = [
        run("qm9-beta20 tb", 1000.0),
        run("qm9-beta20 tb", 2000.0),
        run("qm9-beta20 teacher", 4000.0),
        run("tfbind8-beta20 tb", 100.0),
        run("qm9-beta20 tb"),  # expected 1500 s: its setting's mean
        run("qm9-beta20 gafn"),  # no finished gafn on qm9: the task's mean, 7000 / 3
        run("seh-beta6 tb"),  # an unseen task: the mean of all, 7100 / 4
        run("qm9-beta20 teacher", error="interrupted"),  # not counted
    ]
    want = 1500.0 + 7000.0 / 3 + 7100.0 / 4
    assert sweep_module.eta_seconds(runs, parallel=1) == pytest.approx(want)
    assert sweep_module.eta_seconds(runs, parallel=2) == pytest.approx(want / 2)
    assert sweep_module.eta_seconds(runs, parallel=8) == pytest.approx(want / 3)  # 3 runs left: at most 3 at once
    assert sweep_module.eta_seconds(runs[4:], parallel=1) is None  # nothing finished yet


# ---- records --------------------------------------------------------------------------------------------
def test_finished_runs_are_recorded_and_a_fresh_clone_reuses_the_records_instead_of_training(tmp_path, monkeypatch):
    import shutil

    from adaptive_teacher.reproduction import sweep_groups

    monkeypatch.chdir(tmp_path)
    raw = _spec(methods=["tb"], seeds=[0], out="runs/s", records="results/s")
    lines = []
    (first,) = run_sweep(expand_sweep(raw), threads=1, log=_quiet(lines))
    record = tmp_path / "results" / "s" / SLUG / "tb" / "seed0"
    assert sorted(p.name for p in record.iterdir()) == ["config.json", "metrics.jsonl", "summary.json"]
    assert json.loads((record / "summary.json").read_text()) == first["summary"]
    assert any(f"recorded in {Path('results/s') / SLUG / 'tb' / 'seed0'}" in line for line in lines)

    shutil.rmtree(tmp_path / "runs")  # a fresh clone: the checkpoints are gone, the committed records are not
    lines = []
    (again,) = run_sweep(expand_sweep(raw), threads=1, log=_quiet(lines))
    assert again["summary"] == first["summary"] and Path(again["dir"]) == Path("results/s") / SLUG / "tb" / "seed0"
    assert any("its record in" in line for line in lines) and not any("starting" in line for line in lines)
    assert not (tmp_path / "runs" / "s" / SLUG).exists()  # nothing trained
    (group,) = sweep_groups(expand_sweep(raw))[SLUG].values()
    assert [r.summary for r in group.finished] == [first["summary"]]  # the report reads the record

    changed = _spec(methods=["tb"], seeds=[0], out="runs/s", records="results/s")
    changed["options"]["lr"] = 0.01  # another configuration: the record is not it
    lines = []
    (new,) = run_sweep(expand_sweep(changed), threads=1, log=_quiet(lines))
    assert Path(new["dir"]) == Path("runs/s") / SLUG / "tb" / "seed0"
    assert not any("its record in" in line for line in lines)
    # the first configuration's record is kept; the new run is recorded beside it, by its fingerprint
    assert json.loads((record / "summary.json").read_text()) == first["summary"]
    (beside,) = record.parent.glob("seed0-*")
    assert json.loads((beside / "summary.json").read_text()) == new["summary"]
    assert json.loads((beside / "config.json").read_text())["config"]["lr"] == 0.01
    shutil.rmtree(tmp_path / "runs")
    lines = []
    (found,) = run_sweep(expand_sweep(changed), threads=1, log=_quiet(lines))  # and found there again
    assert found["summary"] == new["summary"] and Path(found["dir"]).name == beside.name
    assert not any("starting" in line or "recorded in" in line for line in lines)


def test_a_run_finished_before_records_were_on_is_recorded_when_the_sweep_reuses_it(tmp_path, monkeypatch):
    from adaptive_teacher.records import write_record

    monkeypatch.chdir(tmp_path)
    raw = _spec(methods=["tb"], seeds=[0], out="runs/s", records="results/s")
    (first,) = run_sweep(expand_sweep(raw, records=False), threads=1, log=_quiet([]))
    assert not (tmp_path / "results").exists()
    lines = []
    run_sweep(expand_sweep(raw), threads=1, log=_quiet(lines))  # nothing to train: recorded at planning
    record = Path("results/s") / SLUG / "tb" / "seed0"
    assert any(f"recorded in {record}" in line for line in lines)
    assert json.loads((record / "summary.json").read_text()) == first["summary"]
    (record / "metrics.jsonl").write_text("")  # an existing record of the same config is kept as it is
    assert write_record(first["dir"], record) == "kept" and (record / "metrics.jsonl").read_text() == ""
    (record / "metrics.jsonl").unlink()  # an incomplete record is not a finished run
    import shutil

    shutil.rmtree("runs")
    lines = []
    (again,) = run_sweep(expand_sweep(raw), threads=1, log=_quiet(lines), dry_run=True)
    assert again["status"] == "not run" and any("would start" in line for line in lines)


def test_records_belong_to_the_specs_own_root_and_a_run_that_has_not_finished_has_none(tmp_path):
    from adaptive_teacher.records import write_record

    raw = _spec(methods=["tb"], seeds=[0], out=str(tmp_path / "runs"), records=str(tmp_path / "results"))
    assert expand_sweep(raw).records == tmp_path / "results"
    assert expand_sweep(raw, out=tmp_path / "elsewhere").records is None  # --out elsewhere: no records
    assert expand_sweep(raw, records=False).records is None
    for inside in (raw["out"], str(tmp_path / "runs" / "records"), str(tmp_path)):
        with pytest.raises(ConfigError, match="separate folders"):
            expand_sweep({**raw, "records": inside})
    with pytest.raises(ConfigError, match="'records' is empty"):
        expand_sweep({**raw, "records": " "})
    with pytest.raises(ConfigError, match="has not finished"):
        write_record(tmp_path, tmp_path / "record")
    (first,) = run_sweep(expand_sweep(raw), threads=1, log=_quiet([]))
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "summary.json").write_text("{}")  # files of a run of unknown configuration: never replaced
    with pytest.raises(ConfigError, match="no config.json"):
        write_record(first["dir"], stray)
    assert (stray / "summary.json").read_text() == "{}" and sorted(p.name for p in stray.iterdir()) == ["summary.json"]


@pytest.mark.parametrize(
    ("flags", "recorded"),
    [([], True), (["--no-records"], False), (["--out", "elsewhere"], False), (["--out", "o", "--records", "r"], True)],
)
def test_the_records_flags_of_the_sweep_command(tmp_path, monkeypatch, flags, recorded):
    from adaptive_teacher import cli

    monkeypatch.chdir(tmp_path)
    _write_spec(tmp_path / "s.toml", _spec(methods=["tb"], seeds=[0], out="runs/s", records="results/s"))
    assert cli.run(["sweep", "s.toml", "--threads", "1", "--no-report", *flags]) == 0
    where = Path("r" if "--records" in flags else "results/s")
    assert (where / SLUG / "tb" / "seed0" / "summary.json").exists() == recorded
    if not recorded:
        assert not Path("results").exists() and not Path("r").exists()
