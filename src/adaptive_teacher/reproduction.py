"""The reproduction report: every claim of the paper, from committed sweep specs, next to our numbers.

``python -m adaptive_teacher.reproduction sweeps/*.toml --out docs/REPRODUCTION.md`` reads each spec's
``[reproduction]`` table (claim, source, metric, the paper's numbers, the comparisons that make the claim,
cost, note), finds the spec's runs where ``adaptive-teacher sweep`` puts them (only those: a number in the
report always belongs to a run the spec reproduces) and writes one section per claim: the command, a table
per task with the paper's number beside ours (mean ± std over the finished seeds), the curves, the hardware
and training time, and a verdict computed from the comparisons:

- *reproduced*: every comparison was run and holds on every task (means; a difference inside one std is
  flagged);
- *not reproduced*: at least one comparison that was run fails (which, and by how much);
- *partly run*: the comparisons that were run hold, others were not run;
- *not run*: no comparison could be made (the command and the cost are given).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptive_teacher.compare import _fmt, _task_label
from adaptive_teacher.errors import AdaptiveTeacherError, ConfigError
from adaptive_teacher.families import family_of_task
from adaptive_teacher.report import Group, RunRecord, collect_runs, plot_group_curves
from adaptive_teacher.run_dir import machine
from adaptive_teacher.sweep import Sweep, load_sweep, locate, task_slug
from adaptive_teacher.tasks import perfect_sampler_modes

CURVE_X = {"diffusion": "step"}  # other families: reward calls, as in the paper's figures
# The columns beside the claim's metric (a spec's ``columns`` overrides); the run's report has them all.
COLUMNS = {
    "discrete": ["l1", "log_Z_error"],
    "strings": ["onpolicy_modes", "top100_r", "top100_diversity", "l1"],
    "diffusion": ["delta_log_Z_elbo", "delta_log_Z_is", "eubo", "w2"],
}


def _columns(family_name: str, columns: list[tuple[str, str]], metric: str, chosen: list[str] | None) -> list:
    keep = chosen if chosen is not None else COLUMNS.get(family_name, [k for k, _ in columns])
    return [(k, t) for k, t in columns if k in keep and k != metric]


@dataclass
class Comparison:
    task: dict[str, Any]
    better: str
    than: str
    ours: tuple[float, float | None, int] | None  # mean, std, seeds of ``better``
    theirs: tuple[float, float | None, int] | None
    within: float | None = None  # a "close" rule: |ours − theirs| ≤ within·|theirs| instead of "better"

    @property
    def run(self) -> bool:
        return self.ours is not None and self.theirs is not None

    def holds(self, lower_is_better: bool) -> bool:
        assert self.ours is not None and self.theirs is not None
        if self.within is not None:
            return abs(self.ours[0] - self.theirs[0]) <= self.within * abs(self.theirs[0])
        return self.ours[0] < self.theirs[0] if lower_is_better else self.ours[0] > self.theirs[0]

    def relation(self, lower_is_better: bool) -> str:
        if self.within is not None:
            return (
                f"≈ (within {self.within:.0%})" if self.holds(lower_is_better) else f"≉ (not within {self.within:.0%})"
            )
        if self.holds(lower_is_better):
            return "<" if lower_is_better else ">"
        return "≥" if lower_is_better else "≤"

    def within_spread(self) -> bool:
        """The two means are closer than the larger of their std (a difference the seeds do not settle)."""
        assert self.ours is not None and self.theirs is not None
        spread = max(s for s in (self.ours[1], self.theirs[1], 0.0) if s is not None)
        return abs(self.ours[0] - self.theirs[0]) <= spread


def _mean_std(values: list[float]) -> tuple[float, float | None, int] | None:
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)


def _value(summary: dict[str, Any], metric: str) -> float | None:
    v = summary.get(metric)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def sweep_groups(sweep: Sweep) -> dict[str, dict[str, Group]]:
    """task slug → setting → its runs (finished or not) in the folders the sweep uses for the current spec."""
    by_dir: dict[Path, RunRecord] = {}
    for root in (sweep.out, sweep.records):
        if root is not None and root.is_dir():
            by_dir.update({r.path.resolve(): r for r in collect_runs(root, warn=lambda message: None)})
    groups: dict[str, dict[str, Group]] = {}
    for run in sweep.runs:
        try:
            path, _, _, _ = locate(run, sweep.record_dir(run.out))
        except AdaptiveTeacherError:
            continue  # a folder that cannot be matched: counted as not run
        record = by_dir.get(path.resolve())
        task = groups.setdefault(task_slug(run.task), {})
        group = task.setdefault(run.setting, Group(run.task, run.method, run.setting, {}, []))
        if record is not None:
            group.runs.append(record)
    return groups


def compare_claims(sweep: Sweep, groups: dict[str, dict[str, Group]]) -> list[Comparison]:
    """Every comparison of the spec's ``expect`` rules on every task of the sweep that has both settings."""
    spec = sweep.reproduction
    metric = spec.get("metric", "modes_found")
    out = []
    known = {name for settings in groups.values() for name in settings}
    for rule in spec.get("expect", []):
        if isinstance(rule, dict) and "close_to" in rule and "settings" in rule:  # {close_to, settings, within}
            reference, others, within = rule["close_to"], rule["settings"], float(rule.get("within", 0.25))
        elif isinstance(rule, dict) and "better" in rule and "than" in rule:  # {better = "teacher", than = [...]}
            reference, others, within = rule["better"], rule["than"], None
        else:
            raise ConfigError(
                f"{sweep.source}: [reproduction] expect: {rule!r} is not {{better, than}} or {{close_to, settings}}"
            )
        unknown = sorted({reference, *([others] if isinstance(others, str) else others)} - known)
        if unknown:  # a typo would silently drop a comparison and could turn a verdict into "reproduced"
            raise ConfigError(
                f"{sweep.source}: [reproduction] expect names {', '.join(unknown)}, which the spec does not run "
                f"(its settings: {', '.join(sorted(known))})"
            )
        for settings in groups.values():
            if reference not in settings:
                continue
            ref = _stats(settings[reference], metric)
            for other in [others] if isinstance(others, str) else others:
                if other not in settings:
                    continue
                theirs = _stats(settings[other], metric)
                task = settings[reference].task
                if within is None:
                    out.append(Comparison(task, reference, other, ref, theirs))
                else:
                    out.append(Comparison(task, other, reference, theirs, ref, within))
    return out


def _stats(group: Group, metric: str) -> tuple[float, float | None, int] | None:
    values = [_value(r.summary, metric) for r in group.finished if r.summary is not None]
    return _mean_std([v for v in values if v is not None])


def verdict(comparisons: list[Comparison], lower_is_better: bool) -> tuple[str, list[str]]:
    """(verdict, the lines that explain it) from the comparisons (see the module docstring)."""
    done = [c for c in comparisons if c.run]
    if not done:
        return "not run", []
    failed = [c for c in done if not c.holds(lower_is_better)]
    lines = []
    for c in done:
        assert c.ours is not None and c.theirs is not None
        sign = c.relation(lower_is_better)
        spread = " (within the seed spread)" if c.within_spread() else ""
        seeds = "" if min(c.ours[2], c.theirs[2]) >= 3 else f" [{c.ours[2]} vs {c.theirs[2]} seeds]"
        lines.append(
            f"{task_slug(c.task)}: {c.better} {c.ours[0]:.4g} {sign} {c.than} {c.theirs[0]:.4g}{spread}{seeds}"
        )
    if failed:
        return f"not reproduced ({len(failed)} of {len(done)} comparisons fail)", lines
    if len(done) < len(comparisons):
        return f"partly run: holds in the {len(done)} of {len(comparisons)} comparisons that were run", lines
    return "reproduced", lines


def _row(group: Group, paper: str, metric: str, columns: list[tuple[str, str]]) -> str:
    summaries = [r.summary for r in group.finished if r.summary is not None]
    cells = [_fmt([s.get(k) for s in summaries], one_decimal=k == "onpolicy_modes") for k, _ in columns]
    seeds = ", ".join(str(r.seed) for r in group.finished) or "–"
    unfinished = len(group.runs) - len(group.finished)
    seeds += f" (+{unfinished} unfinished)" if unfinished else ""
    train = sum(float(s.get("wall_s") or 0.0) for s in summaries)
    budget = _fmt([s.get("reward_calls") for s in summaries], budget=True, one_decimal=True)
    if not summaries:
        return f"| {group.label} | {paper or '–'} | not run | " + " | ".join("–" for _ in cells) + " | – | – | – |"
    ours = _fmt([s.get(metric) for s in summaries], one_decimal=metric == "modes_found")
    return (
        f"| {group.label} | {paper or '–'} | **{ours}** | "
        + " | ".join(cells)
        + f" | {seeds} | {budget} | {train / 60:.0f} |"
    )


def _counted(counts: dict[Any, int]) -> str:
    return ", ".join(f"{k} ({n} run{'s' if n != 1 else ''})" for k, n in sorted(counts.items(), key=str))


def _provenance(runs: list[RunRecord]) -> str:
    """Which code and hardware wrote the runs, from their config.json: the commit and the machine
    (``written_by``; runs written before it recorded them are counted as such), and the torch threads and
    device of each run (a seed repeats bit for bit only with the same ones)."""
    from adaptive_teacher.run_dir import CONFIG, read_json

    commits: dict[str, int] = {}
    machines: dict[str, int] = {}
    threads: dict[str, int] = {}
    unrecorded = resumed = 0
    for r in runs:
        saved = read_json(r.path / CONFIG, "run")
        written = saved.get("written_by") or {}
        commit = written.get("commit")
        if commit:
            commits[commit] = commits.get(commit, 0) + 1
        else:
            unrecorded += 1
        where = written.get("machine") or "not recorded"
        machines[where] = machines.get(where, 0) + 1
        config = saved.get("config") or {}
        how = f"{config.get('threads', '?')} on {config.get('device', 'cpu')}"
        threads[how] = threads.get(how, 0) + 1
        resumed += bool(saved.get("resumed_by"))
    parts = [f"{n} written at commit {c}" for c, n in sorted(commits.items())]
    if unrecorded:
        parts.append(f"{unrecorded} without a recorded commit")
    if resumed:
        parts.append(f"{resumed} resumed by other code or on another machine (config.json's resumed_by)")
    if not runs:
        return ""
    return f"Code: {'; '.join(parts)}. Machine: {_counted(machines)}. Torch threads: {_counted(threads)}."


def claim_section(sweep: Sweep, img_dir: Path, doc_dir: Path) -> tuple[str, str]:
    """The markdown section of one spec and its verdict."""
    spec = sweep.reproduction
    metric = spec.get("metric", "modes_found")
    lower = bool(spec.get("lower_is_better", False))
    paper: dict[str, str] = spec.get("paper", {})
    groups = sweep_groups(sweep)
    comparisons = compare_claims(sweep, groups)
    result, lines = verdict(comparisons, lower)
    source = sweep.source.as_posix() if sweep.source is not None else sweep.name
    text = [
        f"## {_heading(sweep)}",
        "",
        f"*Source:* {spec.get('source', '–')}. *Spec:* [`{source}`](../{source}). *Verdict:* **{result}**.",
        "",
        "```bash",
        f"adaptive-teacher sweep {source} --jobs 2   # finished runs are reused, interrupted ones resume",
        "```",
        "",
        f"*Cost:* {spec.get('cost', 'not measured')}.",
        "",
    ]
    total_runs = sum(len(g.runs) for s in groups.values() for g in s.values())
    finished = [r for s in groups.values() for g in s.values() for r in g.finished]
    expected = len(sweep.runs)
    train_h = sum(float((r.summary or {}).get("wall_s") or 0.0) for r in finished) / 3600
    text.append(
        f"{len(finished)} of {expected} runs finished ({total_runs - len(finished)} unfinished); "
        f"training time {train_h:.1f} h in all (evaluations excluded). {_provenance(finished)}"
    )
    text.append("")
    for slug, settings in groups.items():
        task = next(iter(settings.values())).task
        family = family_of_task(task)
        columns = _columns(family.name, family.columns, metric, spec.get("columns"))
        titles = "".join(f" {t} |" for _, t in columns)
        metric_title = dict(family.columns).get(metric, metric)
        text += [
            f"### {_task_label(task)}",
            "",
            f"| setting | paper | ours: {metric_title} |{titles} seeds | reward calls | train min (all seeds) |",
            "|---" * (len(columns) + 6) + "|",
        ]
        text += [_row(g, paper.get(name, ""), metric, columns) for name, g in settings.items()]
        text.append("")
        ran = [g for g in settings.values() if g.finished]
        if ran:
            key = metric if family.name == "diffusion" else "modes_found"  # the paper's figures
            name = f"repro_{_safe(sweep.name)}_{slug}_{key}.png"
            img_dir.mkdir(parents=True, exist_ok=True)
            n_modes = next((r.summary.get("n_modes") for g in ran for r in g.finished if r.summary), None)
            style: dict[str, Any] = {}
            if key == "modes_found":
                style = {"low": 0.0}
                if n_modes:
                    style.update(high=float(n_modes), reference=float(n_modes), reference_label=f"all {n_modes}")
                calls = [row.get("reward_calls") or 0 for g in ran for r in g.finished for row in r.metrics]
                style["reference_curve"] = perfect_sampler_modes(task, float(max(calls, default=0)))
            plot_group_curves(
                ran,
                key,
                img_dir / name,
                x=CURVE_X.get(family.name, "reward_calls"),
                title=f"{spec.get('claim', sweep.name)}\n{_task_label(task)}",
                ylabel=key.replace("_", " "),
                **style,
            )
            text += [f"![{key}, {_task_label(task)}]({os.path.relpath(img_dir / name, doc_dir)})", ""]
    if lines:
        text += ["Comparisons (means over the finished seeds):", ""] + [f"- {line}" for line in lines] + [""]
    if spec.get("note"):
        text += [str(spec["note"]), ""]
    return "\n".join(text), result


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _heading(sweep: Sweep) -> str:
    return str(sweep.reproduction.get("claim", sweep.description or sweep.name))


KEPT = re.compile(r"^\*Kept as written on ([^:*\n]+):.*?\*\n\n", flags=re.M | re.S)
AS_OF = re.compile(r" \(as of [^()]+\)$")
CELL = re.compile(r"(?<!\\)\|")  # a table cell boundary: a | that is not escaped


@dataclass
class WrittenReport:
    """What a report already written says: its date, each claim's section (heading → text, from its
    ``## `` line up to the next) and verdict (claim → the summary table's verdict)."""

    date: str
    sections: dict[str, str]
    verdicts: dict[str, str]

    @classmethod
    def read(cls, text: str) -> WrittenReport:
        generated = re.search(r" on (\d{4}-\d\d-\d\d), from the committed", text)
        head, *rest = text.split("\n## ")
        sections = {part.split("\n", 1)[0].strip(): "## " + part.rstrip("\n") + "\n" for part in rest}
        verdicts = {}
        for line in head.splitlines():
            cells = [c.strip().replace("\\|", "|") for c in CELL.split(line.strip())[1:-1]]
            if line.startswith("| ") and len(cells) == 2 and cells != ["claim", "verdict"]:
                verdicts[cells[0]] = cells[1]
        return cls(generated.group(1) if generated else "an earlier date", sections, verdicts)

    def finished(self, heading: str) -> int | None:
        """The number of finished runs the claim's section counts (None: no such section)."""
        found = re.search(r"^(\d+) of \d+ runs finished", self.sections.get(heading, ""), flags=re.M)
        return int(found.group(1)) if found else None


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _finished_here(sweep: Sweep) -> int:
    return sum(len(g.finished) for settings in sweep_groups(sweep).values() for g in settings.values())


def kept_section(sweep: Sweep, written: WrittenReport) -> tuple[str, str] | None:
    """A section of the written report whose runs are gone (a fresh clone without runs/, a spec whose records
    do not hold them all) would replace its numbers with fewer or 'not run': it is kept as written, with its
    figures and verdict, and says so (section, verdict). None: regenerate it from the runs found here."""
    heading = _heading(sweep).strip()
    had = written.finished(heading)
    if had is None:
        return None
    now = _finished_here(sweep)
    if now >= had:
        return None
    section = written.sections[heading]
    earlier = KEPT.search(section)
    date = earlier.group(1) if earlier else written.date
    section = KEPT.sub("", section, count=1)
    title, body = section.split("\n\n", 1)
    label = (
        f"*Kept as written on {date}: that report counted {had} finished runs of this spec, and {now} are in "
        f"runs/ and the spec's records now. Re-run the sweep (the command below) to regenerate this section; "
        f"`--allow-fewer` writes it from what is here.*"
    )
    verdict_then = AS_OF.sub("", written.verdicts.get(heading, "not run"))
    return f"{title}\n\n{label}\n\n{body}", f"{verdict_then} (as of {date})"


def write_reproduction(specs: list[Path], out: Path, img_dir: Path | None = None, allow_fewer: bool = False) -> str:
    """Write the report (``out``) and its figures (``img_dir``, default ``out``'s folder / img). A section of
    an existing ``out`` that counts more finished runs than are found now is kept as written (kept_section),
    unless ``allow_fewer``."""
    img_dir = img_dir or out.parent / "img"
    sweeps = [load_sweep(p) for p in specs]
    missing = [str(p) for p, s in zip(specs, sweeps, strict=True) if not s.reproduction]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: no [reproduction] table (claim, source, metric, expect)")
    written = WrittenReport.read(out.read_text()) if out.exists() and not allow_fewer else None
    sections, verdicts = [], []
    for sweep in sweeps:
        kept = kept_section(sweep, written) if written is not None else None
        section, result = kept or claim_section(sweep, img_dir, out.parent)
        sections.append(section)
        verdicts.append((sweep, result))
    today = datetime.date.today().isoformat()
    head = [
        "# Reproduction report",
        "",
        "Generated by `python -m adaptive_teacher.reproduction "
        + " ".join(p.as_posix() for p in specs)
        + f" --out {out.as_posix()}` on {today}, from the committed sweep specs in `sweeps/` and the run",
        "directories they produce (`runs/sweeps/...`, not in git) or, for a spec with `records`, the committed",
        "records of its finished runs (`results/sweeps/...`). Every number below comes from a run of the",
        "spec named in its section; verdicts are computed from the spec's comparisons (means over the",
        "finished seeds; a difference inside one std is flagged) and explained in its note. A section whose",
        "runs are not all here any more is kept as an earlier report wrote it, and says so (its verdict",
        "carries that report's date).",
        "",
        f"Machine that wrote this report: {machine()}. Each section names the machines its runs were trained on.",
        "",
        "| claim | verdict |",
        "|---|---|",
    ]
    head += [f"| {_cell(_heading(s))} | {_cell(v)} |" for s, v in verdicts]
    text = "\n".join(head) + "\n\n" + "\n".join(sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptive_teacher.reproduction", description=__doc__.split("\n")[0])
    parser.add_argument("specs", nargs="+", type=Path, help="sweep specs with a [reproduction] table")
    parser.add_argument("--out", type=Path, default=Path("docs/REPRODUCTION.md"))
    parser.add_argument("--img", type=Path, default=None, help="figures folder (default: OUT's folder / img)")
    parser.add_argument(
        "--allow-fewer",
        action="store_true",
        help="write every section from the runs found here, even where OUT's section counts more finished runs "
        "(default: keep such a section as written, labelled)",
    )
    args = parser.parse_args(argv)
    try:
        write_reproduction(args.specs, args.out, args.img, allow_fewer=args.allow_fewer)
    except AdaptiveTeacherError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Written {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
