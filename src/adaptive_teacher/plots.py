"""Plots: a metric against reward calls, mean ± std over seeds, one line per method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_metric_vs_reward_calls(
    root: Path, methods: list[str], seeds: list[int], key: str, path: Path, title: str = ""
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        curves = [read_metrics(root / m / f"seed{s}") for s in seeds]
        curves = [c for c in curves if c]
        if not curves:
            continue
        grid = np.linspace(0, max(c[-1]["reward_calls"] for c in curves), 100)
        ys = np.array([np.interp(grid, [r["reward_calls"] for r in c], [r[key] or 0 for r in c]) for c in curves])
        mean, std = ys.mean(0), ys.std(0)
        ax.plot(grid, mean, label=m)
        ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("reward calls")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
