"""Run several methods × seeds (in parallel processes) and write results.csv, results.md and a plot."""

from __future__ import annotations

import csv
import json
import math
import statistics
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from adaptive_teacher.config import resolve_config
from adaptive_teacher.errors import AdaptiveTeacherError

# (metric key, column title) per task family
COLUMNS = {
    "discrete": [
        ("modes_found", "modes found"),
        ("l1", "L1 (Σ)"),
        ("l1_mean", "L1 (mean)"),
        ("log_Z_error", "abs(log Z error)"),
    ],
    "diffusion": [
        ("delta_log_Z", "Δlog Z (ELBO)"),
        ("delta_log_Z_is", "Δlog Z^RW"),
        ("eubo", "EUBO"),
        ("w2", "W2"),
        ("elbo", "ELBO"),
    ],
}


def _family(task: dict[str, Any]) -> str:
    from adaptive_teacher.tasks import DIFFUSION_TASKS

    return "diffusion" if task.get("name") in DIFFUSION_TASKS else "discrete"


def _run_one(
    task: dict[str, Any],
    method: str,
    seed: int,
    reward_calls: int | None,
    out: str,
    options: dict[str, Any],
    threads: int,
) -> dict[str, Any]:
    import torch

    from adaptive_teacher.tasks import make_task
    from adaptive_teacher.trainer import Trainer

    done = Path(out) / "summary.json"
    if done.exists():  # finished earlier: reuse (delete the run directory to redo it)
        summary = json.loads(done.read_text())
        if summary.get("method") == method and summary.get("seed") == seed and summary.get("task") == task:
            return summary
    if (Path(out) / "checkpoint.pt").exists() and (Path(out) / "config.json").exists():
        saved = json.loads((Path(out) / "config.json").read_text())
        if saved["task"] == task and saved["config"]["method"] == method and saved["config"]["seed"] == seed:
            return Trainer.resume(out).train()  # interrupted earlier: continue from its last checkpoint

    torch.set_num_threads(threads)
    budget = {} if reward_calls is None else {"reward_calls": reward_calls}
    cfg = resolve_config(method, _family(task), seed=seed, progress=False, threads=threads, **budget, **options)
    return Trainer(make_task(task), cfg, out).train()


def _fmt(values: list[float]) -> str:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "–"
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    if 0 < abs(mean) < 0.01:
        return f"{mean:.2e} ± {std:.1e}"
    digits = 1 if abs(mean) >= 10 else 3
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def compare(
    task: dict[str, Any],
    methods: list[str],
    seeds: list[int],
    reward_calls: int | None,
    out: str | Path,
    jobs: int = 1,
    threads: int = 1,
    **options: Any,
) -> str:
    """Returns the markdown table; files go to ``out``. Each run uses ``threads`` torch threads (1 is fastest
    for these small networks, and anything more oversubscribes the cores when ``jobs`` > 1)."""
    for m in methods:
        resolve_config(m, _family(task), **options)  # fail fast on a bad method or option
    family = _family(task)
    columns = COLUMNS[family]
    keys = [k for k, _ in columns]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(m, s, str(out / m / f"seed{s}")) for m in methods for s in seeds]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(_run_one, task, m, s, reward_calls, d, options, threads) for m, s, d in runs]
            try:
                summaries = [f.result() for f in futures]
            except BrokenProcessPool:
                raise AdaptiveTeacherError(
                    f"a worker process died (killed or out of memory); finished runs in {out} are kept and reused, "
                    f"interrupted ones can be continued with 'adaptive-teacher train --resume {out}/<method>/seed<S>'"
                ) from None
    else:
        summaries = [_run_one(task, m, s, reward_calls, d, options, threads) for m, s, d in runs]
    rows = [
        {"method": m, "seed": s, **{k: summ.get(k) for k in ("reward_calls", "step", "wall_s", *keys)}}
        for (m, s, _), summ in zip(runs, summaries, strict=True)
    ]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    n_modes = summaries[0].get("n_modes")
    budget = f"{reward_calls} reward calls" if reward_calls is not None else f"{options.get('iterations')} iterations"
    header = f"Task {json.dumps(task)}, {budget}, seeds {','.join(map(str, seeds))}"
    header += "; mean ± std over seeds"
    header += (
        f"; {n_modes} modes in total." if n_modes is not None else f"; exact log Z {summaries[0].get('log_Z_true')}."
    )
    lines = [
        header,
        "",
        "| method | " + " | ".join(title for _, title in columns) + " | iterations | wall s |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        cells = [_fmt([r[k] for r in sel]) for k in (*keys, "step", "wall_s")]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table)
    from adaptive_teacher.plots import plot_metric_vs_reward_calls

    if family == "discrete":
        title = f"Modes found ({n_modes} in total)"
        plot_metric_vs_reward_calls(out, methods, seeds, "modes_found", out / "modes_vs_reward_calls.png", title)
    else:
        title = "EUBO (closer to log Z is better)"
        plot_metric_vs_reward_calls(out, methods, seeds, "eubo", out / "eubo_vs_reward_calls.png", title)
    return table
