"""The biochemical string tasks with a reward table (QM9, TFBind8) on the prepend/append MDP, and their data.

Data: the folder described by ``shared/data/README.md`` (QM9, sEH, TFBind8, L14-RNA; plain text and ``.npz``
read with ``allow_pickle=False``). Where it is, in order: the ``data_dir`` argument; the environment variable
``ADAPTIVE_TEACHER_DATA``; ``<repository root>/../shared/data`` (found from this file's location, when it
exists); ``../shared/data`` relative to the working directory. Every file is checked once per process
against the README's size and sha256; a missing, altered or malformed file is a DataError naming the file and
the variable.

Reward (the README's reference reward, Kim et al.'s code): with r(x) = max(raw(x), 0.001),

    R(x) = r(x)^β · scale,   scale = R_max / max_x r(x)^β   (R_max = 100 on QM9, 10 on TFBind8),

plus the official code's floor (``reward_floor=True``): R + 1e-12 on QM9, max(R, 1e-20) on TFBind8 (they
change log Z by < 1e-8 but bound log R from below: at β = 20 the QM9 reward of r = 0.001 is 1.6e-83).
β defaults to Kim et al.'s ``settings.yaml`` (20 on both); LS-GFN and Shen et al. use 5 (QM9) and 3 (TFBind8).
Modes: QM9 the 805 strings of ``qm9/modes.txt`` (the top 0.5 % by raw reward), TFBind8 the 328 strings of
``tfbind8/modes.txt`` (a greedy Hamming-distance > 1 selection among the top ~1,130; official ``0123``
encoding). A terminal string x (read left to right, as the env stores it) is row Σ_j x_j·A^(L−1−j) of
``rewards.npz``.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adaptive_teacher.envs.strings import PrependAppendStrings
from adaptive_teacher.errors import ConfigError, DataError, option

DATA_ENV_VAR = "ADAPTIVE_TEACHER_DATA"
RAW_FLOOR = 0.001  # max(raw, 0.001): the README's (and the official code's) scale_reward_min

# relative path -> (bytes, sha256), from shared/data/README.md
MANIFEST: dict[str, tuple[int, str]] = {
    "qm9/blocks.json": (483, "ca6909c766d5a8698da18b861f469a9dcc717000569d13e878bbfadfafb77f8d"),
    "qm9/rewards.npz": (893_573, "98aa001713348ff9e4e9a2f1272b8ee37462da0dbdbbda28d3190d487a99d16e"),
    "qm9/modes.txt": (4_830, "9baa329991b46d079daad0582c0efd17708385bf65e17362577131bbe546c4ea"),
    "seh/blocks.json": (1_017, "39c716f17ac51bbb36ed99d2c02934b0d78b2800c1f4197e1b782f63937bb6dc"),
    "seh/gbr_trees.npz": (58_692, "4140642571f0de1e1a94a0811fdc4890e0de4e6097272aba1decb838a87354ff"),
    "seh/modes.txt": (903, "4cd2f57375c50531ea292d9a15999581ad7b1f4a0ab32ce221402008d707fc9e"),
    "seh/true_samples_beta6.txt": (14_336, "de0870abc94839b5182fa4ca2f3f213b349dd6fcb6c2ed03212115e2f4c85ce4"),
    "seh/true_samples_scaled_beta6.txt": (14_336, "b36bd48da21305dc7d94627cd4d87bc6d5b12038265fd07a8488a9c738f0064e"),
    "tfbind8/rewards.npz": (341_613, "baf67ff1c98d985efdc3ee7e888f3fa0b922178958f7b4dcfe7473bed3d6547d"),
    "tfbind8/modes.txt": (2_952, "893342a82be3cb6c5bb6594c3b2c06c81d243fcd0424b9b5ff67d605fba5bcf3"),
    "rna/L14_RNA1_info.csv": (5_044, "53bb004f80eb3c05e78fba258ad4b07ecd4db6142dc28055682541e8a954956a"),
    "rna/L14_RNA2_info.csv": (5_035, "d5ca89b6c84839e052a5a131d2f5bd69a35348d9a3eab006b69e04a40ad03015"),
    "rna/L14_RNA3_info.csv": (5_090, "c9ddcfed96ce57507024502a20ac4c8d557d6e1287604a5a01169db4c435103e"),
    "rna/L14_RNA1_modes.txt": (134_505, "d9a672fc02274ecbe390a283533e5dae0fb9faacf98d0b097c94ee5b7b96036a"),
    "rna/L14_RNA2_modes.txt": (126_030, "88b85caedd80ae6bba418a41e99fab6c4938f3b183e1611457f4e9c9dec79c02"),
    "rna/L14_RNA3_modes.txt": (111_000, "da52fe9791b5f2d6d966349da52da8bfc896ac26294fe3fec1b802b5029910bd"),
    "rna/L14_RNA1_true_samples_beta40.txt": (
        30_720,
        "e0cca408f5434ff335045f6a213f64f44f7e2a8d51cc4b415ca5239de3d5ec60",
    ),
}
_VERIFIED: dict[Path, tuple[int, int]] = {}  # resolved path -> (size, mtime_ns) when its sha256 was checked


# ---- the data folder ---------------------------------------------------------------------------------------
def default_data_dir() -> Path:
    """``$ADAPTIVE_TEACHER_DATA``, else ``<repository root>/../shared/data`` if it exists, else ``../shared/data``
    relative to the working directory (which need not exist: loading then names the missing file)."""
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    beside_repo = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"  # src/adaptive_teacher/ -> root
    if beside_repo.is_dir():
        return beside_repo.resolve()
    return Path.cwd() / ".." / "shared" / "data"


def data_path(rel: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The checked path of the data file ``rel`` (e.g. ``"qm9/rewards.npz"``): it exists and, when the README
    lists it, has the listed size and sha256 (checked once per process and file). DataError otherwise."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    path = root / rel
    where = f"set {DATA_ENV_VAR} to the data folder (the one holding qm9/ and tfbind8/)"
    if not path.is_file():
        raise DataError(f"data file {rel} not found at {path} ({where}; see shared/data/README.md)")
    if rel in MANIFEST:
        stat = path.stat()
        real = path.resolve()
        if _VERIFIED.get(real) != (stat.st_size, stat.st_mtime_ns):
            size, sha = MANIFEST[rel]
            data = path.read_bytes()
            got = hashlib.sha256(data).hexdigest()
            if len(data) != size or got != sha:
                raise DataError(
                    f"data file {path} is not the expected {rel}: {len(data)} bytes, sha256 {got[:16]}…, expected "
                    f"{size} bytes, sha256 {sha[:16]}… (a damaged or different copy; {where})"
                )
            _VERIFIED[real] = (stat.st_size, stat.st_mtime_ns)
    return path


def _load_npz(rel: str, data_dir: str | os.PathLike[str] | None) -> dict[str, np.ndarray]:
    path = data_path(rel, data_dir)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 -- any failure to read the archive is the same error for the user
        raise DataError(f"data file {path} is malformed: {type(e).__name__}: {e} ({DATA_ENV_VAR})") from e


def _read_lines(rel: str, data_dir: str | os.PathLike[str] | None) -> list[str]:
    path = data_path(rel, data_dir)
    try:
        return path.read_text(encoding="ascii").splitlines()
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"data file {path} is malformed: {type(e).__name__}: {e} ({DATA_ENV_VAR})") from e


# ---- the tasks ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableTaskInfo:
    """What defines one table task (constants of shared/data/README.md and Kim et al.'s settings.yaml)."""

    name: str
    folder: str
    alphabet: str  # the one-character symbols of to_strings / from_strings (index order)
    mode_alphabet: str  # the encoding of modes.txt
    length: int
    n_modes: int
    r_max: float
    beta: float  # Kim et al.'s settings.yaml
    betas: tuple[float, ...]  # the β values with reference constants in the README
    floor_add: float  # official code: R + floor_add ...
    floor_min: float  # ... or max(R, floor_min)
    hidden: int  # SSR width of Kim et al.'s settings.yaml


TABLE_TASKS: dict[str, TableTaskInfo] = {
    "qm9": TableTaskInfo(
        "qm9", "qm9", "0123456789a", "0123456789a", 5, 805, 100.0, 20.0, (20.0, 5.0), 1e-12, 0.0, 1024
    ),
    "tfbind8": TableTaskInfo("tfbind8", "tfbind8", "ACGT", "0123", 8, 328, 10.0, 20.0, (20.0, 3.0), 0.0, 1e-20, 128),
}


class StringTableTask(PrependAppendStrings):
    """A string task whose raw reward is a table over all A^L strings (QM9, TFBind8): R as in the module
    docstring, modes from a list. Build one with ``make_string_task`` / ``qm9`` / ``tfbind8``.

    Attributes: ``name``, ``beta``, ``r_max``, ``reward_floor``, ``scale`` and ``log_scale``, ``raw`` (float64
    [A^L], table order), ``log_reward_table`` (log R per row), ``mode_rows``; ``paper_hidden`` is the SSR width.
    """

    def __init__(self, info: TableTaskInfo, raw: Tensor, mode_rows: Tensor, beta: float, reward_floor: bool = True):
        super().__init__(len(info.alphabet), info.length, None, alphabet=info.alphabet)
        if not (math.isfinite(beta) and beta > 0):
            raise ConfigError(f"{option('beta')} must be a positive number (got {beta})")
        self.info, self.name = info, info.name
        self.beta, self.r_max, self.reward_floor = float(beta), info.r_max, bool(reward_floor)
        self.paper_hidden = info.hidden
        self.raw = raw.to(torch.float64)
        log_r = self.raw.clamp(min=RAW_FLOOR).log()
        top = float(log_r.max())
        self.log_scale = math.log(self.r_max) - self.beta * top
        self.scale = math.exp(self.log_scale)
        rel = self.beta * (log_r - top)  # log (r / max r)^β <= 0
        reward, log_reward = self.r_max * rel.exp(), math.log(self.r_max) + rel  # exactly R_max at the max
        if self.reward_floor:
            if info.floor_add:
                reward = reward + info.floor_add
            if info.floor_min:
                reward = reward.clamp(min=info.floor_min)
            log_reward = reward.log()
        self.log_reward_table, self._reward_table = log_reward, reward
        self.mode_rows = mode_rows
        self._mode_table = torch.zeros(len(raw), dtype=torch.bool)
        self._mode_table[mode_rows] = True
        self.n_modes = len(mode_rows)

    def reward(self, x: Tensor) -> Tensor:
        return self._reward_table[self.terminal_index(x)]

    def log_reward(self, x: Tensor) -> Tensor:
        """log R(x) from the float64 table (no exp/log round trip; every entry is finite by construction)."""
        return self.log_reward_table[self.terminal_index(x)]

    def raw_reward(self, x: Tensor) -> Tensor:
        """r(x) = max(raw(x), 0.001), float64: the unscaled score the papers report (e.g. the mean of samples)."""
        return self.raw[self.terminal_index(x)].clamp(min=RAW_FLOOR)

    def is_mode(self, x: Tensor) -> Tensor:
        return self._mode_table[self.terminal_index(x)]

    def log_partition(self) -> float:
        return float(torch.logsumexp(self.log_reward_table, 0))

    def constants(self) -> dict[str, float]:
        """The README's reference constants at this β, from the table in float64: logZ_raw = log Σ r^β,
        logZ_scaled = logZ_raw + log scale, E[r] = Σ r^(β+1) / Σ r^β, scale, and the target mass on the modes
        (all without the official floor, as the README computes them)."""
        log_r = self.raw.clamp(min=RAW_FLOOR).log()
        log_z_raw = float(torch.logsumexp(self.beta * log_r, 0))
        e_r = math.exp(float(torch.logsumexp((self.beta + 1) * log_r, 0)) - log_z_raw)
        mass = math.exp(float(torch.logsumexp(self.beta * log_r[self.mode_rows], 0)) - log_z_raw)
        return {
            "logZ_raw": log_z_raw,
            "logZ_scaled": log_z_raw + self.log_scale,
            "expected_r": e_r,
            "scale": self.scale,
            "mode_mass": mass,
        }

    def task_spec(self) -> dict[str, Any]:
        """What rebuilds this task (``make_string_task(**spec)``): the data folder is not part of it (the files
        are identified by their sha256)."""
        return {"name": self.name, "beta": self.beta, "reward_floor": self.reward_floor}


def make_string_task(
    name: str,
    beta: float | None = None,
    reward_floor: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
) -> StringTableTask:
    """QM9 (``"qm9"``) or TFBind8 (``"tfbind8"``) with β (default: Kim et al.'s 20) from the data folder."""
    if name not in TABLE_TASKS:
        raise ConfigError(f"{option('task')}: unknown string task {name!r}; choose one of {', '.join(TABLE_TASKS)}")
    info = TABLE_TASKS[name]
    a, n = len(info.alphabet), info.length
    rel = f"{info.folder}/rewards.npz"
    z = _load_npz(rel, data_dir)
    path = data_path(rel, data_dir)
    if not {"x", "y", "alphabet"} <= set(z):
        raise DataError(f"data file {path} is malformed: it lacks x, y or alphabet (has {sorted(z)}; {DATA_ENV_VAR})")
    x, y = z["x"], z["y"]
    if str(z["alphabet"]) != info.alphabet or y.shape != (a**n,) or x.shape != (a**n, n):
        raise DataError(
            f"data file {path} is malformed: expected alphabet {info.alphabet!r}, y [{a**n}], x [{a**n}, {n}]; got "
            f"{str(z['alphabet'])!r}, y {list(y.shape)}, x {list(x.shape)} ({DATA_ENV_VAR})"
        )
    raw = torch.from_numpy(np.asarray(y, dtype=np.float64))
    rows = torch.arange(a**n)
    want = (rows[:, None] // a ** torch.arange(n - 1, -1, -1)) % a
    if not torch.equal(torch.from_numpy(x.astype(np.int64)), want) or not bool(torch.isfinite(raw).all()):
        raise DataError(f"data file {path} is malformed: rows are not in base-{a} order or y is not finite")
    mode_rel = f"{info.folder}/modes.txt"
    lines = _read_lines(mode_rel, data_dir)
    code = {ch: i for i, ch in enumerate(info.mode_alphabet)}
    if (
        len(lines) != info.n_modes
        or len(set(lines)) != len(lines)
        or any(len(s) != n or not set(s) <= set(code) for s in lines)
    ):
        raise DataError(
            f"data file {data_path(mode_rel, data_dir)} is malformed: expected {info.n_modes} distinct strings of "
            f"length {n} over {info.mode_alphabet!r}, one a line ({DATA_ENV_VAR})"
        )
    digits = torch.tensor([[code[ch] for ch in s] for s in lines], dtype=torch.long).view(-1, n)
    mode_rows = (digits * a ** torch.arange(n - 1, -1, -1)).sum(-1)
    return StringTableTask(info, raw, mode_rows, info.beta if beta is None else float(beta), reward_floor)


def qm9(
    beta: float = 20.0, reward_floor: bool = True, data_dir: str | os.PathLike[str] | None = None
) -> StringTableTask:
    """QM9 as 5 blocks of 11 (Shen et al., 2023): R_max 100, β 20 (Kim et al.) or 5 (LS-GFN, Shen et al.)."""
    return make_string_task("qm9", beta, reward_floor, data_dir)


def tfbind8(
    beta: float = 20.0, reward_floor: bool = True, data_dir: str | os.PathLike[str] | None = None
) -> StringTableTask:
    """TFBind8 (DNA 8-mers, SIX6 binding): R_max 10, β 20 (Kim et al.) or 3 (LS-GFN, Shen et al.)."""
    return make_string_task("tfbind8", beta, reward_floor, data_dir)


__all__ = [
    "DATA_ENV_VAR",
    "MANIFEST",
    "TABLE_TASKS",
    "StringTableTask",
    "TableTaskInfo",
    "data_path",
    "default_data_dir",
    "make_string_task",
    "qm9",
    "tfbind8",
]
