"""The reproduction report: verdicts from a spec's comparisons, numbers only from the spec's own runs."""

import json
from pathlib import Path

from adaptive_teacher import run_dir
from adaptive_teacher.reproduction import KEPT, Comparison, WrittenReport, verdict, write_reproduction
from adaptive_teacher.sweep import load_sweep, run_sweep

GRID = {"name": "deceptive-grid", "dim": 2, "height": 8}
SPEC = """
name = "tiny-claim"
[options]
batch_size = 16
n_evals = 2
hidden = 32
reward_calls = 320
[[product]]
tasks = [{ name = "deceptive-grid", dim = 2, height = 8 }]
methods = ["tb", "teacher"]
seeds = [0, 1]
[[product]]
tasks = [{ name = "deceptive-grid", dim = 2, height = 8 }]
methods = ["gafn"]
seeds = [0]
[reproduction]
claim = "The Teacher beats TB and GAFN on L1"
source = "a test"
metric = "l1"
lower_is_better = true
paper = { tb = "1.5" }
expect = [{ better = "teacher", than = ["tb", "gafn"] }]
cost = "seconds"
note = "A note written after looking at the runs."
"""


def _c(ours, theirs):
    return Comparison(GRID, "teacher", "tb", ours, theirs)


def test_the_verdict_follows_the_comparisons():
    assert verdict([], False) == ("not run", [])
    assert verdict([_c(None, (1.0, None, 1))], False)[0] == "not run"
    result, lines = verdict([_c((5.0, 0.5, 3), (2.0, 0.5, 3))], False)
    assert result == "reproduced" and lines == ["deceptive-grid-dim2-height8: teacher 5 > tb 2"]
    result, lines = verdict([_c((5.0, 0.5, 3), (2.0, 0.5, 3)), _c((1.0, None, 1), (3.0, None, 1))], False)
    assert result == "not reproduced (1 of 2 comparisons fail)" and "teacher 1 ≤ tb 3 [1 vs 1 seeds]" in lines[1]
    result, lines = verdict([_c((5.0, 0.5, 3), (2.0, 0.5, 3)), _c(None, (3.0, None, 1))], False)
    assert result == "partly run: holds in the 1 of 2 comparisons that were run"
    result, lines = verdict([_c((2.1, 0.5, 3), (2.0, 0.2, 3))], False)
    assert result == "reproduced" and "within the seed spread" in lines[0]
    assert verdict([_c((1.0, None, 3), (2.0, None, 3))], True)[0] == "reproduced"  # lower is better
    close = Comparison(GRID, "teacher-C1", "teacher", (40.0, 2.0, 3), (45.0, 3.0, 3), within=0.25)
    far = Comparison(GRID, "teacher-C99", "teacher", (20.0, 2.0, 3), (45.0, 3.0, 3), within=0.25)
    result, lines = verdict([close, far], False)
    assert result == "not reproduced (1 of 2 comparisons fail)"
    assert "teacher-C1 40 ≈ (within 25%) teacher 45" in lines[0] and "teacher-C99 20 ≉ (not within 25%)" in lines[1]


def test_the_report_uses_only_the_specs_runs_and_computes_its_verdict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "sweeps" / "tiny.toml"
    spec.parent.mkdir()
    spec.write_text(SPEC)
    sweep = load_sweep(spec, out=None)
    only_tb_and_teacher = load_sweep(spec)
    only_tb_and_teacher.runs = [r for r in sweep.runs if r.method != "gafn"]
    records = run_sweep(only_tb_and_teacher, threads=1, log=lambda line: None)
    l1 = {}
    for r in records:
        l1.setdefault(r["summary"]["method"], []).append(r["summary"]["l1"])
    # A run of another config in the sweep's folder tree must not be counted.
    stray = Path(records[0]["dir"]).parent.parent / "stray" / "seed0"
    stray.mkdir(parents=True)
    for name in ("config.json", "summary.json", "metrics.jsonl"):
        (stray / name).write_text((Path(records[0]["dir"]) / name).read_text())

    out = tmp_path / "docs" / "REPRODUCTION.md"
    text = write_reproduction([Path("sweeps/tiny.toml")], out)
    teacher, tb = sum(l1["teacher"]) / 2, sum(l1["tb"]) / 2
    expected = "not reproduced (1 of 1 comparisons fail)" if teacher >= tb else "partly run"
    assert f"| The Teacher beats TB and GAFN on L1 | {expected}" in text
    assert "| gafn | – | not run |" in text and "| tb | 1.5 |" in text
    assert "4 of 5 runs finished" in text and "A note written after looking at the runs." in text
    assert "adaptive-teacher sweep sweeps/tiny.toml" in text
    images = list((tmp_path / "docs" / "img").glob("repro_tiny-claim_*.png"))
    assert len(images) == 1 and f"](img/{images[0].name})" in text
    assert "stray" not in text
    json.loads((tmp_path / "runs" / "sweeps" / "tiny-claim" / "sweep-tiny-claim.json").read_text())

    machine = run_dir.machine()
    assert f"Machine: {machine} (4 runs). Torch threads: 1 on cpu (4 runs)." in text

    # A fresh clone without the runs would write 'not run' over the numbers: the section is kept as written,
    # labelled, with its verdict and figures; a second report keeps the first date and label, once.
    import shutil

    shutil.rmtree(tmp_path / "runs")
    mtime = images[0].stat().st_mtime_ns
    written = text.split("\n## ", 1)[1]
    today = text.split(" on ", 1)[1][:10]
    out.write_text(text.replace(f" on {today}, from the committed", " on 2000-01-02, from the committed"))
    for _ in range(2):  # the label keeps the date of the report the section was written in
        again = write_reproduction([Path("sweeps/tiny.toml")], out)
        assert again.count("*Kept as written on ") == 1 and images[0].stat().st_mtime_ns == mtime
        assert "*Kept as written on 2000-01-02: that report counted 4 finished runs of this spec, and 0 are" in again
        assert f"| The Teacher beats TB and GAFN on L1 | {expected}" in again and again.count("(as of ") == 1
        assert "(as of 2000-01-02) |" in again and f" on {today}, from the committed" in again
        assert again.split("\n## ", 1)[1].replace(KEPT.search(again).group(0), "") == written
    out.write_text(text.replace(f" on {today}, from the committed", ", from the committed"))  # no date
    for _ in range(2):
        again = write_reproduction([Path("sweeps/tiny.toml")], out)
        assert again.count("*Kept as written on an earlier date: ") == 1 and again.count("(as of ") == 1
    assert "0 of 5 runs finished" in write_reproduction([Path("sweeps/tiny.toml")], out, allow_fewer=True)
    assert "Kept as written" not in out.read_text() and "(as of " not in out.read_text()


def test_a_written_report_is_read_back_with_escaped_pipes_and_without_a_date():
    text = (
        "# Reproduction report\n\n| claim | verdict |\n|---|---|\n| A \\| B beats C | reproduced |\n\n"
        "## A | B beats C\n\n*Source:* x.\n\n3 of 4 runs finished (1 unfinished).\n"
    )
    written = WrittenReport.read(text)
    assert written.verdicts == {"A | B beats C": "reproduced"} and written.finished("A | B beats C") == 3
    assert written.date == "an earlier date" and written.finished("another claim") is None
