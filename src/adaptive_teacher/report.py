"""report: every run directory under a root as one table per task and the paper's curves.

Runs are found by their ``config.json`` anywhere under the root and grouped by task spec and by config (all
fields but ``seed`` and the ones that never change a result): runs of different configurations are never
averaged together. A group is labelled by its method and the options that tell it from the other groups of
the same task and method (``teacher (C=1)``, ``teacher (C=19)``). Only finished runs (with ``summary.json``)
count in the statistics; unfinished ones are listed with their progress. A damaged run directory is reported
and skipped.

``write_report(root)`` writes ``root/report/``: ``results.csv`` (one row per group: mean and sample std over
the seeds), ``runs.csv`` (one row per run), ``report.md`` (the tables and the figures) and per task the curves
of the paper's figures (modes found for grid and string tasks; ELBO, EUBO and Δlog Z for diffusion tasks).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import statistics
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptive_teacher.compare import BUDGET_COLUMNS, BUDGETS, ONE_DECIMAL, _fmt, _task_label
from adaptive_teacher.config import comparable_config
from adaptive_teacher.errors import ConfigError, DataError
from adaptive_teacher.families import REGISTRY, TaskFamily, family_of_task, get_family
from adaptive_teacher.run_dir import (
    CONFIG,
    NOT_FINGERPRINTED,
    fingerprint,
    is_run_dir,
    read_config,
    read_metrics,
    read_summary,
)

__all__ = [
    "Group",
    "ReportWarning",
    "RunRecord",
    "add_arguments",
    "collect_runs",
    "command",
    "format_markdown",
    "group_runs",
    "plot_group_curves",
    "runs_table",
    "summary_table",
    "write_report",
]

REPORT_DIR = "report"  # write_report's default output, under the root
# A report directory holds this file; collect_runs never looks inside such a directory.
REPORT_MARKER = ".adaptive-teacher-report"
# Metrics renamed since older runs were written: old key -> current key (applied when only the old one is there).
LEGACY_KEYS = {"delta_log_Z": "delta_log_Z_elbo"}
# Config fields that never tell groups apart: the seed varies within a group, the rest never changes a result.
NOT_GROUPED = ("seed", *NOT_FINGERPRINTED)
MAX_LABEL_OPTIONS = 2  # options named in a label; more are counted ("+2 more") and listed under the table
_MISSING = object()  # a field that one config lacks (a run written by an older version)

Warn = Callable[[str], None]


class ReportWarning(UserWarning):
    """A run directory under the root is damaged or ambiguous; it is skipped (or its summary set aside)."""


def _warn_default(message: str) -> None:
    warnings.warn(message, ReportWarning, stacklevel=3)


# ---- runs -----------------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """One run directory as read back: its task spec, config, fingerprint, summary (None while unfinished)
    and metrics rows (renamed metrics under their current keys, see LEGACY_KEYS)."""

    path: Path
    task: dict
    config: dict
    fingerprint: str
    summary: dict | None
    metrics: list[dict]
    problem: str | None = None  # why a summary.json was set aside (damaged, or of another configuration)

    @property
    def method(self) -> str:
        return str(self.config.get("method"))

    @property
    def seed(self) -> int | None:
        seed = self.config.get("seed")
        return seed if isinstance(seed, int) else None

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def family(self) -> TaskFamily:
        return _family(self.task, self.config)

    @property
    def setting(self) -> dict:
        """The config without the seed and the fields that never change a result: what the group shares. A
        config written before some fields existed has them at their defaults (as ``train --resume`` reads it),
        and options inert for the run are at their defaults too (``config.comparable_config``)."""
        return {k: v for k, v in comparable_config(self.config).items() if k not in NOT_GROUPED}

    @property
    def budget_x(self) -> str:
        """``step`` for a budget in iterations, else ``reward_calls``: the x axis of its curves."""
        return "step" if self.config.get("iterations") is not None else "reward_calls"

    @property
    def progress(self) -> tuple[Any, Any]:
        """(step, reward calls) of the last metrics row; (None, None) before the first evaluation."""
        last = self.metrics[-1] if self.metrics else {}
        return last.get("step"), last.get("reward_calls")

    @property
    def result(self) -> dict:
        """The summary of a finished run, else the last metrics row (the run's values so far)."""
        if self.summary is not None:
            return self.summary
        return self.metrics[-1] if self.metrics else {}


def _family(task: dict, config: dict) -> TaskFamily:
    name = config.get("family")
    return get_family(name) if isinstance(name, str) else family_of_task(task)


def _current_keys(row: dict) -> dict:
    """``row`` with renamed metrics (LEGACY_KEYS) also under their current key."""
    out = dict(row)
    for old, new in LEGACY_KEYS.items():
        if old in out and out.get(new) is None:
            out[new] = out[old]
    return out


def _read_run(path: Path, warn: Warn) -> RunRecord | None:
    try:
        saved = read_config(path)
    except DataError as e:
        warn(f"skipped {path}: {e}")
        return None
    task, config = saved["task"], saved["config"]
    if not isinstance(config.get("method"), str):
        warn(f"skipped {path}: {path / CONFIG} names no method (config.method); the run configuration is damaged")
        return None
    try:
        _family(task, config)
    except ConfigError as e:
        warn(f"skipped {path}: {e}")
        return None
    summary, problem = None, None
    try:
        summary = read_summary(path)
    except DataError as e:
        problem = str(e)
    if summary is not None and summary.get("fingerprint") not in (None, saved["fingerprint"]):
        problem = (
            f"{path / 'summary.json'} belongs to another configuration (fingerprint {summary.get('fingerprint')}, "
            f"config.json {saved['fingerprint']}), copied from another run or left from before the run changed; "
            "it is not counted (restore the run's own summary, or run it again)"
        )
        summary = None
    if problem is not None:
        warn(f"{path}: counted as unfinished: {problem}")
    return RunRecord(
        path=path,
        task=task,
        config=config,
        fingerprint=saved["fingerprint"],
        summary=None if summary is None else _current_keys(summary),
        metrics=[_current_keys(r) for r in read_metrics(path) if isinstance(r, dict)],
        problem=problem,
    )


def collect_runs(root: str | Path, *, warn: Warn | None = None, exclude: Iterable[str | Path] = ()) -> list[RunRecord]:
    """Every run directory under ``root`` (recursively; ``root`` itself included), sorted by path: each directory
    holding ``config.json``. A damaged one is reported through ``warn`` (default: a ReportWarning) with its path
    and the reason, and skipped. Hidden directories, report directories and ``exclude`` are not searched."""
    root = Path(root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise ConfigError(
            f"{root} {what}; give the directory that holds the run directories (a train --out, a compare --out, "
            "or a folder above several)"
        )
    warn = warn or _warn_default
    skip = {Path(p).resolve() for p in exclude}
    records = []
    for here, dirs, files in os.walk(root):
        path = Path(here)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and (path / d).resolve() not in skip
            and not (path / d / REPORT_MARKER).exists()
            and not (path / d).is_symlink()
        )
        if CONFIG in files:
            record = _read_run(path, warn)
            if record is not None:
                records.append(record)
        elif is_run_dir(path):
            warn(f"skipped {path}: it holds files of a run but no {CONFIG}, so its configuration is unknown")
    return sorted(records, key=lambda r: str(r.path))


# ---- groups ---------------------------------------------------------------------------------------------
@dataclass
class Group:
    """The runs of one task spec and one configuration (all but the seed), over seeds. ``setting``: the config
    they share (without ``seed`` and the fields that never change a result); ``options``: those of its fields
    that tell this group from the other groups of the same task and method (named in ``label``)."""

    task: dict
    method: str
    label: str
    setting: dict
    runs: list[RunRecord]
    options: dict = field(default_factory=dict)

    @property
    def family(self) -> TaskFamily:
        return _family(self.task, self.runs[0].config)

    @property
    def fingerprint(self) -> str:
        """sha256 of the task spec and the setting (as run_dir.fingerprint; the same for every seed)."""
        return fingerprint(self.task, self.setting)

    @property
    def finished(self) -> list[RunRecord]:
        """The runs that count: finished, one per seed (the first by path when a seed was run twice)."""
        seen: set[int] = set()
        out = []
        for r in self.runs:
            if r.finished and (r.seed is None or r.seed not in seen):
                out.append(r)
                if r.seed is not None:
                    seen.add(r.seed)
        return out

    @property
    def duplicates(self) -> list[RunRecord]:
        """Finished runs of a seed that another finished run of this group already has (not counted)."""
        counted = {id(r) for r in self.finished}
        return [r for r in self.runs if r.finished and id(r) not in counted]

    @property
    def unfinished(self) -> list[RunRecord]:
        return [r for r in self.runs if not r.finished]

    @property
    def seeds(self) -> list[int | None]:
        """The seeds of the finished runs that count."""
        return [r.seed for r in self.finished]

    @property
    def budget_x(self) -> str:
        return self.runs[0].budget_x

    @property
    def budget_text(self) -> str:
        s = self.setting
        if s.get("iterations") is not None:
            return f"{s['iterations']} iterations"
        return f"{s.get('reward_calls')} reward calls"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=list)


def _task_key(task: dict) -> str:
    return _canonical(task)


def _value_text(v: Any) -> str:
    if v is _MISSING:
        return "–"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)  # exact: 19, 0.001, 1e-07
    if isinstance(v, str):
        return v
    if isinstance(v, list | tuple):
        return ",".join(_value_text(x) for x in v)
    return json.dumps(v)


def _natural(text: str) -> list[Any]:
    """Sort key that orders the numbers in a label by value ("C=5" before "C=19")."""
    return [
        (0, float(t), "") if re.fullmatch(r"\d+(\.\d+)?", t) else (1, 0.0, t)
        for t in re.split(r"(\d+(?:\.\d+)?)", text)
    ]


def _labels(settings: list[dict], method: str) -> list[tuple[str, dict]]:
    """(label, distinguishing options) for the settings of one task and method (in this order). Differing options
    are taken in order (those every config has, then those some lack), each one that separates groups still
    alike, until all are apart; a label names at most MAX_LABEL_OPTIONS and counts the rest ("+2 more")."""
    if len(settings) == 1:
        return [(method, {})]
    keys = sorted(set().union(*settings))
    normal = [{k: _canonical(s[k]) if k in s else None for k in keys} for s in settings]
    differing = [k for k in keys if len({n[k] for n in normal}) > 1]
    # Options every config has first (real choices), then fields some configs lack (older versions).
    differing.sort(key=lambda k: (any(k not in s for s in settings), k.lower(), k))
    named: list[str] = []
    pairs = [(i, j) for i in range(len(settings)) for j in range(i + 1, len(settings))]
    for k in differing:
        if any(normal[i][k] != normal[j][k] for i, j in pairs):
            named.append(k)
            pairs = [(i, j) for i, j in pairs if normal[i][k] == normal[j][k]]
        if not pairs:
            break
    shown = named[:MAX_LABEL_OPTIONS]
    more = len(differing) - len(shown)
    out = []
    for s in settings:
        parts = [f"{k}={_value_text(s.get(k, _MISSING))}" for k in shown] + ([f"+{more} more"] if more else [])
        options = {k: s.get(k) for k in differing}  # None: not set (or set to None)
        out.append((f"{method} ({', '.join(parts)})", options))
    labels = [lab for lab, _ in out]
    return [
        (f"{lab} [{fingerprint({}, s)[:6]}]" if labels.count(lab) > 1 else lab, opts)
        for (lab, opts), s in zip(out, settings, strict=True)
    ]


def _family_rank(family: TaskFamily) -> int:
    names = list(REGISTRY)
    return names.index(family.name) if family.name in names else len(names)


def _method_rank(family: TaskFamily, method: str) -> tuple[int, str]:
    methods = family.methods
    return (methods.index(method), "") if method in methods else (len(methods), method)


def group_runs(records: Sequence[RunRecord], *, warn: Warn | None = None) -> list[Group]:
    """Group the runs by (task spec, config without ``seed`` and the unfingerprinted fields), labelled (see
    Group). Sorted by task, then method (in the family's order), then label. A seed run twice in the same
    group is reported through ``warn`` and counted once."""
    warn = warn or _warn_default
    by_key: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        by_key.setdefault((_task_key(r.task), _canonical(r.setting)), []).append(r)
    per_method: dict[tuple[str, str], list[tuple[str, list[RunRecord]]]] = {}
    for (task_key, setting_key), runs in by_key.items():
        per_method.setdefault((task_key, runs[0].method), []).append((setting_key, runs))
    groups = []
    for (_, method), members in per_method.items():
        members.sort(key=lambda m: m[0])
        settings = [runs[0].setting for _, runs in members]
        for (label, options), (_, runs) in zip(_labels(settings, method), members, strict=True):
            runs = sorted(runs, key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, str(r.path)))
            groups.append(Group(runs[0].task, method, label, runs[0].setting, runs, options))
    groups.sort(
        key=lambda g: (
            _family_rank(g.family),
            str(g.task.get("name")),
            _task_key(g.task),
            _method_rank(g.family, g.method),
            _natural(g.label),
        )
    )
    for g in groups:
        for dup in g.duplicates:
            kept = next(r for r in g.finished if r.seed == dup.seed)
            warn(
                f"{dup.path} repeats seed {dup.seed} of {kept.path} (the same task and configuration); "
                "only the first is counted"
            )
    return groups


def _by_task(groups: Sequence[Group]) -> list[list[Group]]:
    tasks: dict[str, list[Group]] = {}
    for g in groups:
        tasks.setdefault(_task_key(g.task), []).append(g)
    return list(tasks.values())


# ---- tables ---------------------------------------------------------------------------------------------
def _columns(family: TaskFamily) -> list[tuple[str, str, str]]:
    """(summary key, csv name, title) of a family's table: its metrics, then the budget and train time."""
    return [(k, k, t) for k, t in family.columns] + BUDGET_COLUMNS


def _numbers(values: Iterable[Any]) -> list[float]:
    """The numeric values, NaN and None left out (as compare's cells)."""
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)]


def _mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """Mean and sample std of the numeric values (std None for fewer than two: never 0 for one seed)."""
    vals = _numbers(values)
    if not vals:
        return None, None
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None


def _seeds_text(seeds: Sequence[int | None], sep: str = ", ") -> str:
    return sep.join("?" if s is None else str(s) for s in seeds)


def summary_table(groups: Sequence[Group]) -> list[dict]:
    """One row per group (results.csv): task, method, label, options, seeds, and for every column of the
    family and the budget ``<name>__mean`` and ``<name>__std`` (sample std) over the finished seeds."""
    rows = []
    for g in groups:
        row: dict[str, Any] = {
            "task": _task_label(g.task),
            "task_spec": _canonical(g.task),
            "family": g.family.name,
            "method": g.method,
            "label": g.label,
            "options": _canonical(g.options),
            "fingerprint": g.fingerprint,
            "budget": g.budget_text,
            "n_seeds": len(g.finished),
            "seeds": _seeds_text(g.seeds, " "),
            "n_unfinished": len(g.unfinished),
        }
        summaries = [r.summary or {} for r in g.finished]
        for key, name, _ in _columns(g.family):
            row[f"{name}__mean"], row[f"{name}__std"] = _mean_std(s.get(key) for s in summaries)
        rows.append(row)
    return rows


def runs_table(groups: Sequence[Group], root: str | Path | None = None) -> list[dict]:
    """One row per run (runs.csv): path (relative to ``root`` when given), task, method, label, seed, whether
    it finished and counts, its progress and its metrics (the summary's, or the last metrics row's so far)."""
    rows = []
    for g in groups:
        counted = {id(r) for r in g.finished}
        for r in g.runs:
            res = r.result
            row: dict[str, Any] = {
                "path": _relative(r.path, root),
                "task": _task_label(g.task),
                "family": g.family.name,
                "method": g.method,
                "label": g.label,
                "seed": r.seed,
                "finished": r.finished,
                "counted": id(r) in counted,
                "fingerprint": r.fingerprint,
                "problem": r.problem or "",
            }
            row.update({name: res.get(key) for key, name, _ in _columns(g.family)})
            rows.append(row)
    return rows


def _relative(path: Path, root: str | Path | None) -> str:
    if root is None:
        return str(path)
    try:
        return str(path.resolve().relative_to(Path(root).resolve())) or "."
    except ValueError:
        return str(path)


def _first(groups: Sequence[Group], key: str) -> Any:
    """The first non-None ``key`` among the summaries and metrics of the groups' runs (n_modes, log_Z_true)."""
    for g in groups:
        for r in g.runs:
            for row in ([r.summary] if r.summary else []) + r.metrics[::-1]:
                if row.get(key) is not None:
                    return row[key]
    return None


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _section(groups: Sequence[Group], figures: Sequence[tuple[str, str]], root: str | Path | None) -> str:
    family, task = groups[0].family, groups[0].task
    columns = _columns(family)
    has = {key for g in groups for r in g.finished for key, _, _ in columns if (r.summary or {}).get(key) is not None}
    shown = [c for c in columns if c[0] in has or c[0] in BUDGETS]
    n_done = sum(len(g.finished) for g in groups)
    n_open = sum(len(g.unfinished) for g in groups)
    text = f"Task spec `{_canonical(task)}` ({family.name} family): {len(groups)} group"
    text += f"{'s' if len(groups) != 1 else ''}, {n_done} finished run{'s' if n_done != 1 else ''}"
    text += f" ({n_open} unfinished, not counted). " if n_open else ". "
    text += (
        "Each cell is the mean ± std (sample standard deviation) over the finished seeds of the group, a value "
        "alone for one seed; train s is the time spent training (evaluations excluded)."
    )
    n_modes, log_Z = _first(groups, "n_modes"), _first(groups, "log_Z_true")
    if n_modes is not None:
        text += f" {n_modes} modes in total."
    elif log_Z is not None:
        text += f" Exact log Z {log_Z:.4f}."
    elif family.name == "diffusion":
        text += " The exact log Z is unknown."
    hidden = [t for k, _, t in columns if k not in has and k not in BUDGETS]
    if hidden:
        text += f" No run has {', '.join(hidden)}."
    lines = [f"## {_task_label(task)}", "", text, ""]
    titles = [t for _, _, t in shown]
    budget_at = next(i for i, c in enumerate(shown) if c[0] in BUDGETS)
    titles.insert(budget_at, "seeds")
    lines += ["| method | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    for g in groups:
        summaries = [r.summary or {} for r in g.finished]
        cells = [
            _fmt([s.get(key) for s in summaries], budget=key in BUDGETS, one_decimal=key in ONE_DECIMAL)
            for key, _, _ in shown
        ]
        seeds = f"{len(g.finished)} ({_seeds_text(g.seeds)})" if g.finished else "0"
        cells.insert(budget_at, seeds)
        lines.append(f"| {_cell(g.label)} | " + " | ".join(cells) + " |")
    lines.append("")
    truncated = [g for g in groups if any(f"{k}=" not in g.label for k in g.options)]
    if truncated:
        lines.append("Options of the groups whose label names only some:")
        lines.append("")
        for g in truncated:
            opts = ", ".join(f"{k}={_value_text(g.setting.get(k, _MISSING))}" for k in g.options)
            lines.append(f"- `{g.label}`: {opts}")
        lines.append("")
    unfinished = [(g, r) for g in groups for r in g.unfinished]
    if unfinished:
        lines.append("Unfinished runs (not counted):")
        lines.append("")
        for g, r in unfinished:
            step, calls = r.progress
            where = (
                f"step {step}, {calls} reward calls of {g.budget_text}"
                if step is not None
                else f"no evaluation yet ({g.budget_text})"
            )
            note = f"; {r.problem}" if r.problem else ""
            lines.append(f"- `{g.label}` seed {r.seed}: `{_relative(r.path, root)}`: {where}{note}")
        lines.append("")
    dups = [(g, r) for g in groups for r in g.duplicates]
    if dups:
        lines.append("Repeated seeds (not counted again):")
        lines.append("")
        lines += [f"- `{g.label}` seed {r.seed}: `{_relative(r.path, root)}`" for g, r in dups]
        lines.append("")
    for title, name in figures:
        lines += [f"![{title}]({name})", ""]
    return "\n".join(lines)


def format_markdown(
    groups: Sequence[Group],
    figures: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    root: str | Path | None = None,
) -> str:
    """Markdown: per task a section with one table row per group (label, the family's columns as mean ± std over
    the finished seeds, the seeds, reward calls, iterations, train s), the unfinished runs and ``figures``
    (task spec JSON, sorted keys -> [(title, image file)])."""
    figures = figures or {}
    sections = [_section(ts, figures.get(_task_key(ts[0].task), ()), root) for ts in _by_task(groups)]
    return "\n".join(sections)


# ---- figures --------------------------------------------------------------------------------------------
def plot_group_curves(
    groups: Sequence[Group],
    key: str,
    path: str | Path,
    x: str = "reward_calls",
    title: str = "",
    *,
    include_unfinished: bool = False,
    low: float | None = None,
    high: float | None = None,
    reference: float | None = None,
    reference_label: str | None = None,
    ylabel: str | None = None,
    reference_curve: tuple[Sequence[float], Sequence[float], str] | None = None,
) -> None:
    """``key`` against ``x`` (``reward_calls`` or ``step``), one line per group (labelled by its label): the mean
    over its finished runs (and the unfinished ones with ``include_unfinished``) with the ±1 std band shaded,
    clipped to [low, high]; ``reference`` draws a dashed horizontal line (the number of modes, the true log Z),
    ``reference_curve`` a dotted one (x, y, label)."""
    from adaptive_teacher.plots import plot_curves

    labels = [g.label for g in groups]
    runs = {
        # Groups of several tasks: the same label (method) twice is told apart by its task.
        (g.label if labels.count(g.label) == 1 else f"{g.label} · {_task_label(g.task)}"): [
            r.metrics for r in g.finished + (g.unfinished if include_unfinished else [])
        ]
        for g in groups
    }
    plot_curves(
        runs,
        key,
        Path(path),
        title,
        x=x,
        low=low,
        high=high,
        reference=reference,
        reference_label=reference_label,
        ylabel=ylabel,
        reference_curve=reference_curve,
    )


# (metric, title, y label) of the paper's curves per family; other families plot their summary metric.
FIGURES: dict[str, list[tuple[str, str, str]]] = {
    "discrete": [("modes_found", "Modes found", "modes found")],
    "strings": [("modes_found", "Modes found (among all online samples)", "modes found")],
    "diffusion": [
        ("elbo", "ELBO (a lower bound on log Z; closer to log Z is better)", "ELBO (nats)"),
        ("eubo", "EUBO (an upper bound on log Z; closer to log Z is better)", "EUBO (nats)"),
        ("delta_log_Z_elbo", "Δlog Z = log Z − ELBO (lower is better)", "Δlog Z (nats)"),
        ("delta_log_Z_is", "Δlog Z (IS) = log Z − log Ẑ (IS)", "Δlog Z, IS (nats)"),
    ],
}


def _slug(task: dict) -> str:
    parts = [str(task.get("name"))] + [
        f"{k}-{_value_text(v)}" for k, v in task.items() if k != "name" and v is not None
    ]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts)).strip("-.") or "task"


def _task_figures(groups: Sequence[Group], out: Path, slug: str) -> list[tuple[str, str]]:
    family, task = groups[0].family, groups[0].task
    specs = FIGURES.get(family.name) or [(family.summary_metric, family.summary_metric.replace("_", " "), "")]
    runs = [r for g in groups for r in g.finished]
    x = "step" if runs and all(r.budget_x == "step" for r in runs) else "reward_calls"
    if family.name == "diffusion":
        x = "step"
    n_modes, log_Z = _first(groups, "n_modes"), _first(groups, "log_Z_true")
    seeds = max((len(g.finished) for g in groups), default=0)
    context = f"{_task_label(task)}, {len(groups)} group{'s' if len(groups) != 1 else ''}"
    context += ", 1 seed each" if seeds == 1 else f", up to {seeds} seeds each (mean ± 1 std)"
    made = []
    for key, title, ylabel in specs:
        if not any(r.get(key) is not None for run in runs for r in run.metrics):
            continue
        name = f"{slug}_{key}.png"
        style: dict[str, Any] = {"ylabel": ylabel or None}
        if key in ("modes_found", "onpolicy_modes"):
            style.update(low=0.0)
            if n_modes is not None:
                title += f" (of {n_modes})"
                style.update(high=float(n_modes), reference=float(n_modes), reference_label=f"all {n_modes} modes")
        elif key in ("elbo", "eubo", "log_Z_is") and log_Z is not None:
            style.update(reference=float(log_Z), reference_label=f"true log Z = {log_Z:.3f}")
        elif key.startswith("delta_log_Z"):
            style.update(reference=0.0, reference_label="0 (exact)")
        plot_group_curves(groups, key, out / name, x=x, title=f"{title}\n{context}", **style)
        made.append((title, name))
    return made


# ---- the report -----------------------------------------------------------------------------------------
def _write_csv(path: Path, rows: list[dict]) -> None:
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names, restval="")
        writer.writeheader()
        writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])


def write_report(root: str | Path, out: str | Path | None = None, *, warn: Warn | None = None) -> Path:
    """Write the report of every run under ``root`` into ``out`` (default ``root/report``): results.csv (one
    row per group), runs.csv (one row per run), report.md (tables and figures) and per task the figures'
    png files. Returns ``out``. A root without runs is a DataError; damaged runs are reported and skipped."""
    root = Path(root)
    out = Path(out) if out is not None else root / REPORT_DIR
    notes: list[str] = []
    report_warn = warn or _warn_default

    def note(message: str) -> None:
        notes.append(message)
        report_warn(message)

    records = collect_runs(root, warn=note, exclude=[out])
    if not records:
        skipped = f" ({len(notes)} damaged run directories were skipped, see the warnings)" if notes else ""
        raise DataError(
            f"{root}: no run directories found (none holds a readable {CONFIG}){skipped}; give the directory "
            "that holds the runs (a train --out, a compare --out, or a folder above several)"
        )
    groups = group_runs(records, warn=note)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / REPORT_MARKER).write_text("written by adaptive-teacher report; never read as a run\n")
    except OSError as e:
        raise ConfigError(f"{out}: cannot write the report there ({e.strerror or e}); choose another --out") from None
    figures: dict[str, list[tuple[str, str]]] = {}
    used: dict[str, str] = {}
    for ts in _by_task(groups):
        key = _task_key(ts[0].task)
        slug = _slug(ts[0].task)
        if used.get(slug, key) != key:  # two specs with the same safe name
            slug += "_" + hashlib.sha256(key.encode()).hexdigest()[:6]
        used[slug] = key
        figures[key] = _task_figures(ts, out, slug)
    _write_csv(out / "results.csv", summary_table(groups))
    _write_csv(out / "runs.csv", runs_table(groups, root))
    n_done = sum(len(g.finished) for g in groups)
    head = [
        f"# Report of {root}",
        "",
        f"{len(records)} run directories ({n_done} finished and counted), {len(groups)} groups over "
        f"{len(figures)} task{'s' if len(figures) != 1 else ''}. Runs are grouped by task spec and configuration "
        "(all but the seed); runs of different configurations are never averaged. results.csv has one row per "
        "group, runs.csv one per run.",
        "",
    ]
    body = format_markdown(groups, figures, root)
    tail = ["## Skipped or set aside", ""] + [f"- {n}" for n in notes] + [""] if notes else []
    (out / "report.md").write_text("\n".join([*head, body, *tail]))
    return out


# ---- command line ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``adaptive-teacher report``: RUNS_DIR and ``--out``."""
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="directory searched (recursively) for run directories")
    parser.add_argument("--out", default=None, metavar="DIR", help="where the report goes (default: RUNS_DIR/report)")


def command(args: argparse.Namespace) -> int:
    """``adaptive-teacher report``: write the report, print its tables and where the files went."""

    def warn(message: str) -> None:
        print(f"adaptive-teacher: warning: {message}", file=sys.stderr)

    out = write_report(args.runs_dir, args.out, warn=warn)
    print((out / "report.md").read_text())
    pngs = sorted(p.name for p in out.glob("*.png"))
    print(
        f"Report: {out / 'report.md'}  Tables: {out / 'results.csv'}, {out / 'runs.csv'}  Figures: {len(pngs)} in {out}"
    )
    return 0
