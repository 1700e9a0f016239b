"""A markdown table of a ``compare`` directory of string-task runs: modes found at 12.5 / 25 / 50 / 100 % of the
budget (the paper's "discovers modes faster" claim), then the final metrics, mean ± std over seeds.

    python benchmarks/results_table.py runs/tfbind8-paper tb,teacher,tb-per,teacher-per,gafn [--plot modes.png]

``--plot`` also draws modes found against reward calls for those methods (mean and ±1 std over seeds), with
every mode and, on enumerable tasks, a perfect sampler's expected curve as references.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

FRACTIONS = (0.125, 0.25, 0.5, 1.0)
FINAL = (
    ("onpolicy_modes", 1),
    ("top100_r", 3),
    ("top100_diversity", 2),
    ("mean_r", 3),
    ("log_Z_is", 2),
    ("eubo", 2),
    ("pearson", 2),
    ("l1", 3),
    ("mode_mass", 3),
)


def mean_std(values: list, digits: int) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{statistics.mean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}"


def table(root: Path, methods: list[str]) -> str:
    header = ["method", "seeds", *(f"modes @ {f:.1%}".replace(".0%", "%") for f in FRACTIONS)]
    header += [k for k, _ in FINAL] + ["train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in methods:
        runs = sorted((root / m).glob("seed*/summary.json"))
        if not runs:
            continue
        summaries = [json.loads(r.read_text()) for r in runs]
        histories = [[json.loads(line) for line in open(r.parent / "metrics.jsonl")] for r in runs]
        budget = summaries[0]["reward_calls_budget"]
        cells = [m, str(len(runs))]
        for f in FRACTIONS:
            found = [[r for r in h if r["reward_calls"] <= f * budget][-1]["modes_found"] for h in histories]
            cells.append(mean_std(found, 1))
        cells += [mean_std([s.get(k) for s in summaries], d) for k, d in FINAL]
        cells.append(mean_std([s["wall_s"] for s in summaries], 0))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(root: Path, methods: list[str], path: Path, title: str) -> None:
    from adaptive_teacher.plots import plot_metric_vs_reward_calls
    from adaptive_teacher.run_dir import read_config, read_summary
    from adaptive_teacher.tasks import perfect_sampler_modes

    seeds = {m: sorted(int(d.name[4:]) for d in (root / m).glob("seed*") if d.name[4:].isdigit()) for m in methods}
    seeds = {m: [s for s in ss if read_summary(root / m / f"seed{s}") is not None] for m, ss in seeds.items()}
    finished = [read_summary(root / m / f"seed{s}") or {} for m, ss in seeds.items() for s in ss]
    first = next((root / m / f"seed{ss[0]}" for m, ss in seeds.items() if ss), None)
    if first is None:
        raise SystemExit(f"--plot: no finished run of {', '.join(methods)} under {root}")
    n_modes = finished[0].get("n_modes")
    best = max(s.get("modes_found") or 0 for s in finished)
    calls = max(float(s.get("reward_calls") or 0) for s in finished)
    if n_modes is not None and best < n_modes / 4:  # the line of every mode would flatten the curves: name it instead
        title, n_modes = f"{title} (of {n_modes} modes)", None
    plot_metric_vs_reward_calls(
        root,
        methods,
        seeds,
        "modes_found",
        path,
        title,
        low=0.0,
        high=None if n_modes is None else float(n_modes),
        reference=None if n_modes is None else float(n_modes),
        reference_label=f"all {n_modes} modes",
        ylabel="modes found",
        reference_curve=perfect_sampler_modes(read_config(first)["task"], calls),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a directory of <method>/seed<S> runs")
    parser.add_argument("methods", help="comma-separated methods (folder names)")
    parser.add_argument("--plot", type=Path, default=None, help="also write this modes-vs-calls figure (default: none)")
    parser.add_argument("--title", default="", help="the figure's title (default: none)")
    args = parser.parse_args()
    methods = args.methods.split(",")
    print(table(args.root, methods))
    if args.plot is not None:
        plot(args.root, methods, args.plot, args.title)
