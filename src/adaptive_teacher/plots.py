"""Plots: a metric against the budget over seeds (compare, report), and the per-run figures the trainer writes.

Every figure says what it shows in its title (task, budget, seeds), keeps its legend off the curves, and
survives metrics rows with missing keys or None values (a task without modes, a target without exact log Z
or exact samples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_teacher.run_dir import read_metrics

__all__ = [
    "mean_band",
    "plot_curves",
    "plot_diffusion_run",
    "plot_discrete_run",
    "plot_metric_vs_reward_calls",
    "read_metrics",
]

X_LABELS = {"reward_calls": "reward calls", "step": "iterations"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _value(v: Any) -> float:
    return float(v) if isinstance(v, int | float) else np.nan


def mean_band(
    ys: np.ndarray, low: float | None = None, high: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds (axis 0) and the band mean ± 1 std (sample std; no width for one seed), the band
    clipped to the feasible range [low, high] (e.g. modes in [0, n_modes])."""
    ys = np.atleast_2d(np.asarray(ys, dtype=float))
    mean = ys.mean(0)
    std = ys.std(0, ddof=1) if len(ys) > 1 else np.zeros_like(mean)
    lower, upper = mean - std, mean + std
    if low is not None:
        lower, upper = np.maximum(lower, low), np.maximum(upper, low)
    if high is not None:
        lower, upper = np.minimum(lower, high), np.minimum(upper, high)
    return mean, lower, upper


def _curve(rows: list[dict], x: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    pts = [(_value(r.get(x)), _value(r.get(key))) for r in rows]
    pts = [(a, b) for a, b in pts if np.isfinite(a) and np.isfinite(b)]
    if not pts:
        return None
    xs, ys = np.array(pts).T
    order = np.argsort(xs, kind="stable")
    return xs[order], ys[order]


# Legends go below the axes (never over the curves); savefig(bbox_inches="tight") keeps them in the file.
_BELOW = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "frameon": False, "fontsize": 8}


def _legend_below(ax) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(**_BELOW, ncol=min(4, len(handles)))


def plot_metric_vs_reward_calls(
    root: Path,
    methods: list[str],
    seeds: list[int] | dict[str, list[int]],
    key: str,
    path: Path,
    title: str = "",
    *,
    x: str = "reward_calls",
    low: float | None = None,
    high: float | None = None,
    reference: float | None = None,
    reference_label: str | None = None,
    ylabel: str | None = None,
    reference_curve: ReferenceCurve | None = None,
) -> None:
    """plot_curves for the runs in ``root/<method>/seed<S>`` (compare's layout), one line per method.
    ``seeds`` may map each method to the seeds to draw (the runs that finished)."""
    per_method = seeds if isinstance(seeds, dict) else {m: list(seeds) for m in methods}
    runs = {m: [Path(root) / m / f"seed{s}" for s in per_method.get(m, [])] for m in methods}
    plot_curves(
        runs,
        key,
        path,
        title,
        x=x,
        low=low,
        high=high,
        reference=reference,
        reference_label=reference_label,
        ylabel=ylabel,
        reference_curve=reference_curve,
    )


RunCurves = str | Path | Sequence[dict]  # a run directory, or the metrics rows of one run
ReferenceCurve = tuple[Sequence[float], Sequence[float], str]  # (x, y, label): a dotted black line


def plot_curves(
    runs: Mapping[str, Sequence[RunCurves]],
    key: str,
    path: Path,
    title: str = "",
    *,
    x: str = "reward_calls",
    low: float | None = None,
    high: float | None = None,
    reference: float | None = None,
    reference_label: str | None = None,
    ylabel: str | None = None,
    reference_curve: ReferenceCurve | None = None,
) -> None:
    """``key`` against ``x`` (``reward_calls``, or ``step`` for budgets in iterations), one line per label of
    ``runs`` (label -> its runs: run directories or metrics rows): the mean over the runs and a band of ±1 std
    clipped to [low, high]. ``reference`` draws a dashed horizontal line (the number of modes, the true log Z),
    ``reference_curve`` a dotted one (the modes a perfect sampler finds)."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    data = {}
    for label, members in runs.items():
        rows = [read_metrics(r) if isinstance(r, str | Path) else list(r) for r in members]
        curves = [_curve(rs, x, key) for rs in rows]
        data[label] = [c for c in curves if c is not None]
    counts = [len(c) for c in data.values() if c]
    n = max(counts, default=0)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    many = len(data) > 10  # beyond the 10 default colours: tab20, its 10 dark colours then the 10 light ones
    for i, (m, curves) in enumerate(data.items()):
        if not curves:
            continue
        color = plt.get_cmap("tab20")((2 * i) % 20 + (i // 10) % 2) if many else f"C{i % 10}"  # dark ones first
        grid = np.linspace(min(c[0][0] for c in curves), max(c[0][-1] for c in curves), 200)
        ys = np.array([np.interp(grid, cx, cy) for cx, cy in curves])
        mean, lower, upper = mean_band(ys, low, high)
        label = m if len(curves) == n else f"{m} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
        (line,) = ax.plot(grid, mean, color=color, label=label)
        if len(curves) > 1:
            ax.fill_between(grid, lower, upper, color=line.get_color(), alpha=0.2, lw=0)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=reference_label or f"{reference:g}")
    if reference_curve is not None:
        ax.plot(reference_curve[0], reference_curve[1], color="k", ls=":", lw=1.2, label=reference_curve[2])
    handles, labels = ax.get_legend_handles_labels()
    extra = []
    if n > 1:
        what = f"shaded: ±1 std over {n} seeds" + ("" if len(set(counts)) == 1 else " (or fewer)")
        if low is not None or high is not None:
            what += f", clipped to [{'−∞' if low is None else f'{low:g}'}, {'∞' if high is None else f'{high:g}'}]"
        handles.append(Patch(color="gray", alpha=0.3, lw=0))
        labels.append(what)
    elif n == 1:
        handles.append(Patch(color="none"))
        labels.append("1 seed: no band")
    if handles:
        longest = max(len(t) for t in labels[:-1] or labels)  # the band's note may take a row of its own
        ncol = min(1 if longest > 45 else 2 if longest > 28 else 3, len(handles))
        # Outside the layout: a long legend hangs below the figure instead of squeezing the axes onto the x label.
        legend = ax.legend(handles, labels, **_BELOW, ncol=ncol)
        legend.set_in_layout(False)
        extra.append(legend)
    if not counts:
        ax.text(0.5, 0.5, f"no run has {key} values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(X_LABELS.get(x, x.replace("_", " ")))
    ax.set_ylabel(ylabel or key.replace("_", " "))
    if low is not None and high is not None:
        ax.set_ylim(low, high + 0.05 * (high - low))
    elif low is not None:
        ax.set_ylim(bottom=low)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight", bbox_extra_artists=extra)
    plt.close(fig)


def plot_discrete_run(out_dir: Path, history: list[dict], title: str) -> None:
    """modes.png of one discrete run: modes found (when the task has modes) and the exact L1 to the target
    (when it could be computed) against reward calls, one panel each."""
    plt = _pyplot()
    n_modes = next((r["n_modes"] for r in history if r.get("n_modes") is not None), None)
    panels = []
    modes = _curve(history, "reward_calls", "modes_found")
    if modes is not None and n_modes is not None:
        panels.append(("modes", modes))
    l1 = _curve(history, "reward_calls", "l1")
    if l1 is not None:
        panels.append(("l1", l1))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.0 * max(1, len(panels)), 3.8), squeeze=False)
    for ax, (kind, (xs, ys)) in zip(axes[0], panels, strict=False):
        if kind == "modes":
            ax.plot(xs, ys, marker=".", color="C0", label="modes found")
            ax.axhline(n_modes, color="k", ls="--", lw=1, label=f"all {n_modes} modes")
            ax.set_ylim(0, n_modes * 1.05 + 0.5)
            ax.set_ylabel("modes found")
            ax.set_title(f"Modes found (of {n_modes})", fontsize=10)
            ax.legend(**{**_BELOW, "bbox_to_anchor": (0.5, -0.18)}, ncol=2)
        else:
            ax.plot(xs, ys, marker=".", color="C1")
            ax.set_ylim(0, float(ys.max()) * 1.08 if ys.max() > 0 else 1.0)
            ax.set_ylabel("L1 (Σ over terminal states)")
            ax.set_title("L1 distance to the target (lower is better)", fontsize=10)
        ax.set_xlabel("reward calls")
        ax.grid(alpha=0.3)
    if not panels:
        axes[0, 0].text(
            0.5,
            0.5,
            "nothing to plot: this task has no known modes and no exact L1",
            ha="center",
            va="center",
            transform=axes[0, 0].transAxes,
        )
        axes[0, 0].set_axis_off()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "modes.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_string_run(out_dir: Path, history: list[dict], evaluator: Any, env: Any, title: str) -> None:
    """A biochemical run: modes.png (modes found among every online sample, the paper's Figure 5 curve, beside
    the on-policy modes among the evaluation samples, and the top-100 mean raw reward) and, for the molecule
    tasks, top_molecules.png, the best block-chain molecules found drawn with RDKit (without RDKit the run
    says how to get it)."""
    import sys

    plt = _pyplot()
    n_modes = next((r["n_modes"] for r in history if r.get("n_modes") is not None), None)
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8), squeeze=False)
    ax = axes[0, 0]
    for key, label, style in (("modes_found", "among all online samples", "-"), ("onpolicy_modes", "on-policy", ":")):
        curve = _curve(history, "reward_calls", key)
        if curve is not None:
            ax.plot(*curve, style, marker=".", label=label)
    if n_modes is not None:
        ax.axhline(n_modes, color="k", ls="--", lw=1, label=f"all {n_modes} modes")
    exact = getattr(evaluator, "exact", None)
    found = _curve(history, "reward_calls", "modes_found")
    if exact is not None and n_modes and found is not None:
        from adaptive_teacher.metrics.exact import exact_sampler_curve

        reference = exact_sampler_curve(env, float(found[0][-1]), evaluator=exact)
        if reference is not None:
            ax.plot(reference[0], reference[1], "k:", lw=1.2, label=reference[2])
    ax.set_xlabel("reward calls")
    ax.set_ylabel("modes found")
    ax.set_title("Modes discovered", fontsize=10)
    ax.legend(**{**_BELOW, "bbox_to_anchor": (0.5, -0.18)}, ncol=3)
    ax.grid(alpha=0.3)
    ax = axes[0, 1]
    top = next((k for k in (history[-1] if history else {}) if k.startswith("top") and k.endswith("_r")), None)
    curve = _curve(history, "reward_calls", top) if top else None
    if curve is not None:
        ax.plot(*curve, marker=".", color="C2")
    ax.set_xlabel("reward calls")
    ax.set_ylabel("mean r = max(raw, 0.001)")
    ax.set_title(f"Mean raw reward of the {top[3:-2] if top else ''} best x found", fontsize=10)
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "modes.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    tracker = getattr(evaluator, "tracker", None)
    if getattr(getattr(env, "info", None), "molecule", False) and tracker is not None:
        if tracker.top_states is None:
            return
        from adaptive_teacher import chem

        if not chem.has_rdkit():
            print(
                f"adaptive-teacher: note: no picture of the top molecules ({chem.RDKIT_MISSING_MESSAGE})",
                file=sys.stderr,
            )
            return
        strings = env.to_strings(tracker.top_states)
        raw = env.raw_reward(tracker.top_states).tolist()
        chem.draw_top_molecules(
            strings, raw, Path(out_dir) / "top_molecules.png", n=16, task=env.name, title=f"{title} · r shown"
        )


def _xy(points: Any) -> np.ndarray:
    """Samples as an [n, 2] float array (the first two coordinates; a 1-D target gets y = 0)."""
    if hasattr(points, "detach"):
        points = points.detach().cpu().numpy()
    arr = np.asarray(points, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.shape[1] == 1:
        arr = np.concatenate([arr, np.zeros_like(arr)], axis=1)
    return arr[:, :2]


def plot_diffusion_run(out: Path, history: list[dict], snapshots: list[dict], env, title: str = "") -> None:
    """samples.png: Student (top) and Teacher (bottom) samples over training on exact target samples (when
    the target has an exact sampler; first two coordinates); metrics.png: ELBO, importance-weighted log Ẑ and
    EUBO against iterations, with the true log Z when it is known."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    out = Path(out)
    colors = {"student": "C0", "teacher": "C3"}
    if snapshots:
        picks = sorted({0, len(snapshots) // 3, (2 * len(snapshots)) // 3, len(snapshots) - 1})
        whos = ["student"] + (["teacher"] if any(snapshots[i].get("teacher") is not None for i in picks) else [])
        fig, axes = plt.subplots(len(whos), len(picks), figsize=(3 * len(picks), 3 * len(whos) + 0.8), squeeze=False)
        target = None
        if getattr(env.density, "has_sampler", True):
            target = _xy(env.density.sample(2000))
        if target is not None and len(target):
            lim = float(np.abs(target).max()) * 1.3
        else:
            drawn = [_xy(snapshots[i][w]) for i in picks for w in whos if snapshots[i].get(w) is not None]
            pts = np.concatenate(drawn) if drawn else np.zeros((1, 2))
            pts = pts[np.isfinite(pts).all(1)]
            lim = float(np.percentile(np.abs(pts), 99.5)) * 1.3 if len(pts) else 1.0
        lim = lim if np.isfinite(lim) and lim > 0 else 1.0
        for j, i in enumerate(picks):
            snap = snapshots[i]
            step = snap.get("step")
            if step is None:  # snapshots written before they carried their step
                step = history[min(i, len(history) - 1)].get("step", i) if history else i
            for r, who in enumerate(whos):
                ax = axes[r, j]
                if target is not None:
                    ax.scatter(target[:, 0], target[:, 1], s=2, c="lightgray", rasterized=True)
                if snap.get(who) is not None:
                    pts = _xy(snap[who])
                    ax.scatter(pts[:, 0], pts[:, 1], s=2, c=colors[who], rasterized=True)
                ax.set_xlim(-lim, lim)
                ax.set_ylim(-lim, lim)
                ax.set_title(f"{who.capitalize()}, step {step}", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])

        def dot(color: str, label: str) -> Line2D:
            return Line2D([], [], ls="", marker="o", ms=5, color=color, label=label)

        handles = ([dot("lightgray", "target (exact samples)")] if target is not None else []) + [
            dot(colors[w], f"{w.capitalize()} samples") for w in whos
        ]
        suptitle = "Samples over training (first two coordinates)"
        if target is None:
            suptitle += "; the target has no exact sampler, so no target samples"
        fig.suptitle(f"{title}\n{suptitle}" if title else suptitle, fontsize=10)
        fig.tight_layout()
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), frameon=False)
        fig.savefig(out / "samples.png", dpi=110, bbox_inches="tight")
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    steps = [_value(r.get("step", i)) for i, r in enumerate(history)]
    labels = {"elbo": "ELBO (lower bound)", "log_Z_is": "IS log Ẑ", "eubo": "EUBO (upper bound)"}
    for key, label in labels.items():
        vals = [_value(r.get(key)) for r in history]
        if any(np.isfinite(v) for v in vals):
            ax.plot(steps, vals, marker=".", label=label)
    log_Z = next((r["log_Z_true"] for r in history if r.get("log_Z_true") is not None), None)
    if log_Z is not None:
        ax.axhline(log_Z, color="k", ls="--", lw=1, label=f"true log Z = {log_Z:.3f}")
    if not history:
        ax.text(0.5, 0.5, "no evaluations yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("iteration")
    ax.set_ylabel("nats")
    what = "Estimates of log Z" + ("" if log_Z is not None else " (the true log Z is unknown)")
    ax.set_title(f"{title}\n{what}" if title else what, fontsize=10)
    _legend_below(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
