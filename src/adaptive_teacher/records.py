"""Run records: the small, committable copy of a finished run that keeps a result when ``runs/`` is gone.

A run directory under ``runs/`` holds checkpoints of tens of MB and is ignored by git, so a fresh clone (or a
new machine) has none of the runs that the reproduction report and the results pages were written from. A
*record* is the part of a finished run that a result needs: ``config.json`` (task, config, fingerprint,
provenance), ``summary.json`` and ``metrics.jsonl`` (the curves), a few tens of kB. A sweep whose spec names
a ``records`` folder (the committed specs: ``results/sweeps/<name>``) copies every finished run there, and
treats a record of the identical configuration as a finished run: it is reused, never retrained, and the
reproduction report reads it like any run. A record is read-only data: no checkpoint, never resumed.

A record is never replaced by a run of another configuration (that is an error that names both), and an
existing record of the same configuration is kept as it is (the first finished run is the one reported).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from adaptive_teacher.errors import ConfigError
from adaptive_teacher.run_dir import CONFIG, METRICS, SUMMARY, is_run_dir, read_config, read_summary

RECORD_FILES = (CONFIG, SUMMARY, METRICS)


def is_record(path: str | Path) -> bool:
    """Whether ``path`` holds a complete record (config, summary and metrics of a finished run)."""
    p = Path(path)
    return all((p / name).is_file() for name in RECORD_FILES)


def write_record(run: str | Path, record: str | Path) -> str:
    """Copy the record files of the finished run ``run`` into ``record``. Returns ``"written"`` or ``"kept"``
    (a record of the same configuration was there already). A run that has not finished, or a record folder
    that holds another configuration, is a ConfigError; nothing is overwritten."""
    run, record = Path(run), Path(record)
    summary = read_summary(run)
    if summary is None or not (run / METRICS).is_file():
        raise ConfigError(f"{run}: the run has not finished (no {SUMMARY}), so it has no record to keep")
    want = read_config(run)["fingerprint"]
    if is_run_dir(record) and not (record / CONFIG).exists():
        raise ConfigError(
            f"{record} holds files of a run but no {CONFIG}, so its configuration is unknown; the files are "
            f"kept: move or delete them to record {run} there"
        )
    if (record / CONFIG).exists():
        theirs = read_config(record)["fingerprint"]
        if theirs != want:
            raise ConfigError(
                f"{record} holds the record of another configuration (fingerprint {theirs}, this run {want}); "
                f"the record is kept: move or delete it to record {run} there"
            )
        if is_record(record):
            return "kept"
    record.mkdir(parents=True, exist_ok=True)
    for name in (METRICS, CONFIG, SUMMARY):  # the summary last: a half-written record never looks finished
        tmp = record / f".{name}.tmp"
        try:
            shutil.copyfile(run / name, tmp)
            os.replace(tmp, record / name)
        finally:
            tmp.unlink(missing_ok=True)
    return "written"
