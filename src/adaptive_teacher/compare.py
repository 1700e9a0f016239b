"""Run several methods × seeds (in parallel processes) and write results.csv, results.md and a plot."""

from __future__ import annotations

import csv
import json
import math
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from adaptive_teacher.config import resolve_config

TABLE_KEYS = ("modes_found", "l1", "l1_mean", "log_Z_error")


def _run_one(
    task: dict[str, Any],
    method: str,
    seed: int,
    reward_calls: int,
    out: str,
    options: dict[str, Any],
    threads: int,
) -> dict[str, Any]:
    import torch

    from adaptive_teacher.tasks import make_task
    from adaptive_teacher.trainer import Trainer

    torch.set_num_threads(threads)
    cfg = resolve_config(method, reward_calls=reward_calls, seed=seed, progress=False, **options)
    return Trainer(make_task(task), cfg, out).train()


def _fmt(values: list[float]) -> str:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "–"
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    digits = 1 if abs(mean) >= 10 else 3
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def compare(
    task: dict[str, Any],
    methods: list[str],
    seeds: list[int],
    reward_calls: int,
    out: str | Path,
    jobs: int = 1,
    **options: Any,
) -> str:
    """Returns the markdown table; files go to ``out``."""
    for m in methods:
        resolve_config(m, **options)  # fail fast on a bad method or option
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(m, s, str(out / m / f"seed{s}")) for m in methods for s in seeds]
    threads = 1 if jobs > 1 else 0
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(_run_one, task, m, s, reward_calls, d, options, threads) for m, s, d in runs]
            summaries = [f.result() for f in futures]
    else:
        import torch

        summaries = [_run_one(task, m, s, reward_calls, d, options, torch.get_num_threads()) for m, s, d in runs]
    rows = [
        {"method": m, "seed": s, **{k: summ.get(k) for k in ("reward_calls", "wall_s", *TABLE_KEYS)}}
        for (m, s, _), summ in zip(runs, summaries, strict=True)
    ]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    n_modes = summaries[0].get("n_modes")
    lines = [
        f"Task {json.dumps(task)}, {reward_calls} reward calls, seeds {','.join(map(str, seeds))}; "
        f"mean ± std over seeds; {n_modes} modes in total.",
        "",
        "| method | modes found | L1 (Σ) | L1 (mean) | abs(log Z error) | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        cells = [_fmt([r[k] for r in sel]) for k in (*TABLE_KEYS, "wall_s")]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table)
    from adaptive_teacher.plots import plot_metric_vs_reward_calls

    plot_metric_vs_reward_calls(
        out,
        methods,
        seeds,
        "modes_found",
        out / "modes_vs_reward_calls.png",
        title=f"Modes found ({n_modes} in total)",
    )
    return table
