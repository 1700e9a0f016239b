"""report: runs under a root grouped by task and configuration, mean ± std over finished seeds, the
unfinished and damaged runs reported, the figures drawn from the right values."""

import argparse
import csv
import json
import re
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest

from adaptive_teacher.compare import _fmt, compare
from adaptive_teacher.errors import ConfigError, DataError
from adaptive_teacher.report import (
    Group,
    ReportWarning,
    RunRecord,
    add_arguments,
    collect_runs,
    command,
    format_markdown,
    group_runs,
    plot_group_curves,
    summary_table,
    write_report,
)
from adaptive_teacher.trainer import Trainer

GRID = {"name": "deceptive-grid", "dim": 2, "height": 8}
TINY = {"batch_size": 16, "n_evals": 2, "hidden": 32}
GMM = {"name": "gmm25", "n_steps": 5}
TINY_GMM = {"iterations": 4, "batch_size": 16, "hidden": 16, "n_evals": 2, "eval_samples": 32, "final_eval_samples": 64}


def _quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """tb and teacher × seeds 0, 1; teacher with C = 1 (seed 0); tb seed 2 unfinished (no summary); a damaged
    config.json; tb on 25GMM × seeds 0, 1."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "_plot", lambda self: None)  # the per-run figures: most of the time, not needed
        compare(GRID, ["tb", "teacher"], [0, 1], 320, root / "grid", log=_quiet, **TINY)
        compare(GRID, ["tb"], [2], 320, root / "grid", log=_quiet, **TINY)
        compare(GRID, ["teacher"], [0], 320, root / "grid-c1", log=_quiet, C=1.0, **TINY)
        compare(GMM, ["tb"], [0, 1], None, root / "gmm", log=_quiet, **TINY_GMM)
    (root / "grid" / "tb" / "seed2" / "summary.json").unlink()
    broken = root / "broken" / "tb" / "seed0"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text('{"task": {"name": ')
    return root


@pytest.fixture(scope="module")
def report(tree) -> Path:
    """write_report(tree) into its default directory, tree/report."""
    with pytest.warns(ReportWarning):
        return write_report(tree)


def _records(root: Path) -> list[RunRecord]:
    with pytest.warns(ReportWarning) as caught:
        records = collect_runs(root)
    messages = [str(w.message) for w in caught]
    assert (
        len(messages) == 1 and str(root / "broken" / "tb" / "seed0") in messages[0] and "not valid JSON" in messages[0]
    )
    return records


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _by_label(groups: list[Group], task: dict) -> dict[str, Group]:
    return {g.label: g for g in groups if g.task["name"] == task["name"]}


# ---- collecting and grouping ----------------------------------------------------------------------------
def test_runs_are_grouped_by_configuration_and_the_unfinished_are_not_counted(tree):
    records = _records(tree)
    assert len(records) == 8 and not any("broken" in str(r.path) for r in records)
    groups = group_runs(records)
    grid = _by_label(groups, GRID)
    assert list(grid) == ["tb", "teacher (C=1)", "teacher (C=19)"]  # family order, then the options by value
    tb, c1, c19 = grid["tb"], grid["teacher (C=1)"], grid["teacher (C=19)"]
    assert (c1.options, c19.options, tb.options) == ({"C": 1.0}, {"C": 19.0}, {})
    assert tb.seeds == [0, 1] and c19.seeds == [0, 1] and c1.seeds == [0]
    assert [r.seed for r in tb.unfinished] == [2] and tb.unfinished[0].progress == (20, 320)
    assert "seed" not in tb.setting and "threads" not in tb.setting and tb.setting["method"] == "tb"
    gmm = _by_label(groups, GMM)["tb"]
    assert gmm.seeds == [0, 1] and gmm.budget_x == "step" and gmm.family.name == "diffusion"


def _record(path: str, seed: int, summary: dict | None = None, **config) -> RunRecord:
    cfg = {"method": "teacher", "seed": seed, "family": "discrete", "reward_calls": 320, "C": 19.0, **config}
    return RunRecord(Path(path), dict(GRID), cfg, "", summary, [])


def test_labels_are_compact_deterministic_and_unique():
    records = [
        _record("a/0", 0, {"modes_found": 1}, threads=4),  # threads never change a result: same group
        _record("a/1", 1, {"modes_found": 2}, threads=1),
        _record("b/0", 0, {"modes_found": 3}, C=5.0),
        _record("c/0", 0, {"modes_found": 4}, lr=0.1, alpha=0.5, eps=0.01),  # fields the others lack
        _record("d/0", 0, {"modes_found": 5}, C=5.0),  # seed 0 of b/0 again
    ]
    with pytest.warns(ReportWarning, match="d/0 repeats seed 0 of b/0"):
        groups = group_runs(records)
    # A field a config lacks (written before it existed) is at its TrainConfig default, as --resume reads it.
    assert [g.label for g in groups] == [
        "teacher (alpha=0, C=5, +2 more)",  # alpha and C tell the groups apart; eps and lr differ too
        "teacher (alpha=0, C=19, +2 more)",
        "teacher (alpha=0.5, C=19, +2 more)",
    ]
    assert [g.seeds for g in groups] == [[0], [0, 1], [0]]  # the repeated seed counts once
    assert groups[2].options == {"alpha": 0.5, "C": 19.0, "eps": 0.01, "lr": 0.1}
    assert groups[1].options == {"alpha": 0.0, "C": 19.0, "eps": 0.0, "lr": 0.001}
    assert [g.label for g in group_runs(list(reversed(records[:4])))] == [g.label for g in groups]
    table = format_markdown(groups)
    assert "`teacher (alpha=0.5, C=19, +2 more)`: alpha=0.5, C=19, eps=0.01, lr=0.1" in table
    rows = summary_table(groups)
    assert [r["modes_found__mean"] for r in rows] == [3.0, 1.5, 4.0]
    assert [r["modes_found__std"] for r in rows] == [None, statistics.stdev([1, 2]), None]
    two = group_runs(records[:3])  # C alone tells these apart
    assert [g.label for g in two] == ["teacher (C=5)", "teacher (C=19)"] and two[0].options == {"C": 5.0}


def test_a_renamed_metric_and_a_summary_of_another_configuration(tmp_path):
    run = tmp_path / "old" / "tb"
    run.mkdir(parents=True)
    task = {"name": "gmm25", "dim": 2, "n_steps": 5, "t_scale": 5.0}
    config = {"method": "tb", "seed": 0, "family": "diffusion", "iterations": 4, "reward_calls": 16000}
    (run / "config.json").write_text(json.dumps({"task": task, "config": config}))  # written before fingerprints
    rows = [{"step": 0, "delta_log_Z": 6.0, "elbo": -6.0}, {"step": 4, "delta_log_Z": 5.0, "elbo": -5.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{damaged\n")
    (run / "summary.json").write_text(json.dumps({**rows[-1], "wall_s": 1.0}))
    (record,) = collect_runs(tmp_path)
    assert [r["delta_log_Z_elbo"] for r in record.metrics] == [6.0, 5.0] and record.summary["delta_log_Z_elbo"] == 5.0
    (run / "summary.json").write_text(json.dumps({**rows[-1], "fingerprint": "0" * 16}))
    with pytest.warns(ReportWarning, match="belongs to another configuration"):
        (record,) = collect_runs(tmp_path)
    assert record.summary is None and "another configuration" in record.problem


# ---- the report -----------------------------------------------------------------------------------------
def test_results_csv_holds_the_mean_and_std_of_the_summaries(tree, report):
    out = report
    rows = {(r["task"].split()[0], r["label"]): r for r in _csv(out / "results.csv")}
    assert set(rows) == {
        ("deceptive-grid", "tb"),
        ("deceptive-grid", "teacher (C=1)"),
        ("deceptive-grid", "teacher (C=19)"),
        ("gmm25", "tb"),
    }
    expected = {
        ("deceptive-grid", "tb"): [tree / "grid" / "tb" / f"seed{s}" for s in (0, 1)],
        ("deceptive-grid", "teacher (C=19)"): [tree / "grid" / "teacher" / f"seed{s}" for s in (0, 1)],
        ("deceptive-grid", "teacher (C=1)"): [tree / "grid-c1" / "teacher" / "seed0"],
        ("gmm25", "tb"): [tree / "gmm" / "tb" / f"seed{s}" for s in (0, 1)],
    }
    keys = {
        "deceptive-grid": ["modes_found", "l1", "log_Z_error", "reward_calls", "step", "wall_s"],
        "gmm25": ["delta_log_Z_elbo", "eubo", "elbo", "reward_calls", "step", "wall_s"],
    }
    checked = 0
    for (task, label), runs in expected.items():
        row, summaries = rows[(task, label)], [_summary(r) for r in runs]
        assert row["n_seeds"] == str(len(runs)) and row["seeds"] == " ".join(str(s["seed"]) for s in summaries)
        for key in keys[task]:
            name = "train_s" if key == "wall_s" else key
            values = [s[key] for s in summaries]
            assert float(row[f"{name}__mean"]) == statistics.fmean(values), (label, key)
            if len(values) > 1:
                assert float(row[f"{name}__std"]) == statistics.stdev(values), (label, key)
                checked += statistics.stdev(values) > 0
            else:
                assert row[f"{name}__std"] == ""  # never "± 0" for one seed
    assert checked >= 4  # real spreads, not only zeros
    assert rows[("deceptive-grid", "tb")]["n_unfinished"] == "1"
    assert json.loads(rows[("deceptive-grid", "teacher (C=1)")]["options"]) == {"C": 1.0}

    runs = _csv(out / "runs.csv")
    assert len(runs) == 8 and not any("broken" in r["path"] for r in runs)
    (open_run,) = [r for r in runs if r["finished"] == "False"]
    assert (open_run["path"], open_run["seed"], open_run["counted"]) == (str(Path("grid/tb/seed2")), "2", "False")
    c1 = next(r for r in runs if r["label"] == "teacher (C=1)")
    assert float(c1["modes_found"]) == _summary(tree / "grid-c1" / "teacher" / "seed0")["modes_found"]


def test_report_md_tables_unfinished_runs_figures_and_skipped(tree, report):
    out = report
    md = (out / "report.md").read_text()
    tb = [_summary(tree / "grid" / "tb" / f"seed{s}") for s in (0, 1)]
    row = next(line for line in md.splitlines() if line.startswith("| tb |") and "(0, 1)" in line)
    mean, std = statistics.fmean(s["l1"] for s in tb), statistics.stdev(s["l1"] for s in tb)
    assert f"| {_fmt([s['l1'] for s in tb])} |" in row and "| 2 (0, 1) | 320 | 20 |" in row
    assert _fmt([s["l1"] for s in tb]) == f"{mean:.3f} ± {std:.3f}"  # compare's convention for values in [0.01, 10)
    assert "| teacher (C=1) |" in md and "| 1 (0) |" in md
    assert "Unfinished runs (not counted):" in md and f"`tb` seed 2: `{Path('grid/tb/seed2')}`: step 20, 320" in md
    assert "## Skipped or set aside" in md and "broken" in md
    images = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert "deceptive-grid_dim-2_height-8_modes_found.png" in images
    assert {f"gmm25_dim-2_n_steps-5_t_scale-5_{k}.png" for k in ("elbo", "eubo", "delta_log_Z_elbo")} <= set(images)
    for name in images:
        assert (out / name).stat().st_size > 5000 and all(c.isalnum() or c in "._-" for c in name)


def test_the_report_directory_is_never_read_as_runs(tree, report):
    assert report == tree / "report" and (report / "results.csv").exists()
    assert len(collect_runs(tree, warn=_quiet)) == 8
    copy = report / "copy"
    shutil.copytree(tree / "grid" / "tb" / "seed0", copy)  # even a run copied into a report is not picked up
    try:
        assert len(collect_runs(tree, warn=_quiet)) == 8
        assert len(collect_runs(tree, warn=_quiet, exclude=[tree / "gmm"])) == 6
    finally:
        shutil.rmtree(copy)


def test_curves_are_the_mean_and_band_of_the_finished_seeds(tree, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    drawn, bands = {}, {}
    plot, fill = Axes.plot, Axes.fill_between

    def record_plot(self, x, y, *a, **k):
        drawn[k.get("label")] = (np.asarray(x), np.asarray(y))
        return plot(self, x, y, *a, **k)

    def record_fill(self, x, lower, upper, *a, **k):
        bands[len(bands)] = (np.asarray(lower), np.asarray(upper))
        return fill(self, x, lower, upper, *a, **k)

    monkeypatch.setattr(Axes, "plot", record_plot)
    monkeypatch.setattr(Axes, "fill_between", record_fill)
    groups = group_runs(collect_runs(tree, warn=_quiet))
    gmm = [g for g in groups if g.task["name"] == "gmm25"]
    path = tmp_path / "elbo.png"
    plot_group_curves(gmm, "elbo", path, x="step", title="ELBO")
    xs, ys = drawn["tb"]
    last = [
        json.loads((tree / "gmm" / "tb" / f"seed{s}" / "metrics.jsonl").read_text().splitlines()[-1]) for s in (0, 1)
    ]
    assert xs[-1] == 4 and ys[-1] == pytest.approx(statistics.fmean(r["elbo"] for r in last))
    lower, upper = bands[0]
    spread = statistics.stdev(r["elbo"] for r in last)
    assert upper[-1] - lower[-1] == pytest.approx(2 * spread) and spread > 0
    assert path.stat().st_size > 5000

    grid = [g for g in groups if g.task["name"] == "deceptive-grid"]
    plot_group_curves(grid, "modes_found", tmp_path / "modes.png", title="modes", include_unfinished=True)
    assert set(drawn) >= {"tb", "teacher (C=1) (1 seed)", "teacher (C=19) (2 seeds)"}  # tb: 3 seeds with seed 2


# ---- errors and the command line ------------------------------------------------------------------------
def test_errors_name_the_path_and_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'missing'} does not exist; give the directory")):
        write_report(tmp_path / "missing")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path}: no run directories found")):
        write_report(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("[]")
    with pytest.warns(ReportWarning, match="expected an object"), pytest.raises(DataError, match="1 damaged"):
        write_report(tmp_path)
    assert not (tmp_path / "report").exists()


def test_command_prints_the_tables_and_where_the_files_went(tree, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(tree), "--out", str(tmp_path / "r")])
    assert command(args) == 0
    captured = capsys.readouterr()
    assert "## deceptive-grid dim=2 height=8" in captured.out and "| teacher (C=1) |" in captured.out
    assert f"Report: {tmp_path / 'r' / 'report.md'}" in captured.out
    assert "adaptive-teacher: warning: skipped" in captured.err and "broken" in captured.err
