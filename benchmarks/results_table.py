"""A markdown table of a ``compare`` directory of string-task runs: modes found at 12.5 / 25 / 50 / 100 % of the
budget (the paper's "discovers modes faster" claim), then the final metrics, mean ± std over seeds.

    python benchmarks/results_table.py runs/tfbind8-paper tb,teacher,tb-per,teacher-per,gafn
"""

from __future__ import annotations

import json
import statistics
import sys
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


if __name__ == "__main__":
    print(table(Path(sys.argv[1]), sys.argv[2].split(",")))
