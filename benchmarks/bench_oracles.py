#!/usr/bin/env python
"""Throughput of the biochemical reward oracles: the sEH tree proxy, L14-RNA binding, the QM9/TFBind8 tables.

    .venv/bin/python benchmarks/bench_oracles.py            # about a minute on 2 CPU cores
    .venv/bin/python benchmarks/bench_oracles.py --quick    # about 20 s

For batch sizes 32 and 2048 of uniformly random strings it times one call of

* ``sEH proxy``: ``oracles.SEHProxy()(x)`` on a long tensor [m, 6]; with ``verify.py`` next to the data
  (``shared/data``) also the README's numpy reference ``verify.seh_predict`` on the same strings;
* ``RNA1 binding``: ``oracles.RNABinding(1, workers=w)(x)`` for w = 1 and 2 (a warm-up call starts the
  workers first; their start-up is reported separately). Random 14-mers are all distinct, so every string is
  folded;
* ``QM9 table`` / ``TFBind8 table``: ``biochem.make_string_task(name).reward(x)``.

It prints a markdown table: the median time per call over the repeats and strings per second. The data are
found as the library finds them (``ADAPTIVE_TEACHER_DATA``, else ``../shared/data``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from adaptive_teacher import biochem, oracles

BATCHES = (32, 2048)


def time_call(fn: Callable[[], Any], repeats: int, min_seconds: float) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` rounds, each of enough calls to last ``min_seconds``."""
    fn()  # warm-up
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    inner = max(1, int(min_seconds / max(once, 1e-9)))
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        rounds.append((time.perf_counter() - start) / inner)
    return statistics.median(rounds)


def load_verify() -> Any | None:
    """The data bundle's verify.py (its numpy sEH reference), if it sits next to the data."""
    path = biochem.default_data_dir() / "verify.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("bundle_verify", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds (about 20 s)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    repeats, min_seconds = (3, 0.05) if args.quick else (5, 0.3)
    gen = torch.Generator().manual_seed(args.seed)
    rows: list[tuple[str, int, str, float]] = []  # oracle, batch, workers, seconds per call

    seh = oracles.SEHProxy()
    verify = load_verify()
    trees = None
    if verify is not None:
        with np.load(biochem.data_path("seh/gbr_trees.npz"), allow_pickle=False) as z:
            trees = {k: z[k] for k in z.files}
    for m in BATCHES:
        x = torch.randint(0, 18, (m, 6), generator=gen)
        rows.append(("sEH proxy", m, "-", time_call(lambda x=x: seh(x), repeats, min_seconds)))
        if verify is not None:
            strings = seh.strings(x)
            assert np.array_equal(verify.seh_predict(strings, trees), seh(x).numpy()), "not bit-identical"
            ref = time_call(lambda s=strings: verify.seh_predict(s, trees), max(1, repeats // 2), min_seconds)
            rows.append(("sEH numpy reference (verify.py)", m, "-", ref))

    startup = 0.0
    for workers in (1, 2):
        oracle = oracles.RNABinding(1, workers=workers)
        warm = torch.randint(0, 4, (64, 14), generator=gen)
        start = time.perf_counter()
        oracle(warm)  # starts the workers (if any)
        first = time.perf_counter() - start
        start = time.perf_counter()
        oracle(warm)
        if workers > 1:
            startup = first - (time.perf_counter() - start)
        with oracle:
            for m in BATCHES:
                x = torch.randint(0, 4, (m, 14), generator=gen)
                reps = 1 if (args.quick and m > 32) else repeats
                secs = time_call(lambda x=x, o=oracle: o(x), reps, min_seconds if m <= 32 else 0.0)
                rows.append(("RNA1 binding", m, str(workers), secs))

    for name in ("qm9", "tfbind8"):
        task = biochem.make_string_task(name)
        for m in BATCHES:
            x = torch.randint(0, task.alphabet_size, (m, task.length), generator=gen)
            secs = time_call(lambda x=x, t=task: t.reward(x), repeats, min_seconds)
            rows.append(({"qm9": "QM9", "tfbind8": "TFBind8"}[name] + " table", m, "-", secs))

    rna = importlib.util.find_spec("RNA")
    vienna = getattr(importlib.import_module("RNA"), "__version__", "?") if rna else "absent"
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, ViennaRNA "
        f"{vienna}, {os.cpu_count()} CPUs (load average {load:.2f} at the start), torch threads {args.threads}"
        + (", --quick" if args.quick else "")
    )
    print()
    print("| oracle | batch | workers | ms / call | strings / s |")
    print("|---|---:|---:|---:|---:|")
    for oracle_name, m, workers, secs in rows:
        print(f"| {oracle_name} | {m} | {workers} | {secs * 1e3:.3f} | {m / secs:,.0f} |")
    print()
    print(f"Starting 2 RNA workers (once, on first use; not in the table): {startup:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
