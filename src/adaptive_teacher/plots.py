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


def plot_diffusion_run(out: Path, history: list[dict], snapshots: list[dict], env) -> None:
    """samples.png: Student (top) and Teacher (bottom) samples over training on the target's density
    (first two coordinates); metrics.png: ELBO, importance-weighted log Ẑ and EUBO against iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if snapshots:
        picks = sorted({0, len(snapshots) // 3, (2 * len(snapshots)) // 3, len(snapshots) - 1})
        rows = 2 if any("teacher" in snapshots[i] for i in picks) else 1
        fig, axes = plt.subplots(rows, len(picks), figsize=(3 * len(picks), 3 * rows), squeeze=False)
        target = env.density.sample(2000)[:, :2].numpy()
        lim = float(np.abs(target).max()) * 1.3
        for j, i in enumerate(picks):
            for r, who in enumerate(("student", "teacher")[:rows]):
                ax = axes[r, j]
                ax.scatter(target[:, 0], target[:, 1], s=2, c="lightgray", label="target")
                pts = snapshots[i].get(who)
                if pts is not None:
                    pts = pts.numpy()
                    ax.scatter(pts[:, 0], pts[:, 1], s=2, c="C0" if who == "student" else "C3", label=who)
                ax.set_xlim(-lim, lim)
                ax.set_ylim(-lim, lim)
                ax.set_title(f"{who}, step {history[min(i, len(history) - 1)]['step']}", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
        fig.tight_layout()
        fig.savefig(out / "samples.png", dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in history]
    for key in ("elbo", "log_Z_is", "eubo"):
        vals = [r.get(key) for r in history]
        if any(v is not None for v in vals):
            ax.plot(steps, [np.nan if v is None else v for v in vals], label=key)
    if history and history[0].get("log_Z_true") is not None:
        ax.axhline(history[0]["log_Z_true"], color="k", ls="--", lw=1, label="log Z")
    ax.set_xlabel("iteration")
    ax.set_ylabel("nats")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=110)
    plt.close(fig)
