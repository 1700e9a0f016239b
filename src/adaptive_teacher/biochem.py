"""The biochemical string tasks on the prepend/append MDP (QM9, sEH, TFBind8, L14-RNA1/2/3), and their data.

Data: the folder described by ``shared/data/README.md`` (QM9, sEH, TFBind8, L14-RNA; plain text and ``.npz``
read with ``allow_pickle=False``). Where it is, in order: the ``data_dir`` argument; the environment variable
``ADAPTIVE_TEACHER_DATA``; ``<repository root>/../shared/data`` (found from this file's location, when it
exists); ``../shared/data`` relative to the working directory. Every file is checked once per process
against the README's size and sha256; a missing, altered or malformed file is a DataError naming the file and
the variable.

Raw scores: QM9 and TFBind8 from their exhaustive tables, sEH from the gradient-boosted-tree proxy,
L14-RNA from ViennaRNA duplex energies (``oracles.py``). Reward (the README's reference reward, Kim et al.'s
code): with r(x) = max(raw(x), 0.001),

    R(x) = r(x)^β · scale,   scale = R_max / max_x r(x)^β   (R_max = 100 on QM9, 10 on the others),

plus the official code's floor (``reward_floor=True``): R + 1e-12 on QM9 and RNA, max(R, 1e-32) on sEH,
max(R, 1e-20) on TFBind8 (they change log Z by < 1e-8 but bound log R from below: at β = 20 the QM9 reward of
r = 0.001 is 1.6e-83). β defaults to Kim et al.'s ``settings.yaml`` (QM9 20, sEH 6, TFBind8 20, RNA 40);
LS-GFN and Shen et al. use 5 / 6 / 3 / 8. max_x r is the table's maximum, the proxy's 7.033253064721926 (sEH,
at ``ag550c``) and 10 / scale(β = 1) of the task's ``info.csv`` (RNA). Modes: the shipped mode sets
(805 / 129 / 328 / 8,967, 8,402, 7,400). A terminal string x (read left to right, as the env stores it) is row
Σ_j x_j·A^(L−1−j) of ``rewards.npz``.

Devices: the tables (raw scores, log R, modes) are tensor attributes, moved by ``task.to(device)`` (device.py);
the sEH proxy moves its tree tables with them; the RNA oracle folds on the CPU and answers on the device of x.
Data are read on the CPU; exact target samples are drawn with a seeded CPU generator (the same strings on
every device) and returned on the task's device.
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
from adaptive_teacher.errors import ConfigError, DataError, RewardError, option

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
        expected = f", expected sha256 {MANIFEST[rel][1]}" if rel in MANIFEST else ""
        raise DataError(f"data file {rel} not found at {path}{expected} ({where}; see shared/data/README.md)")
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
                    f"{size} bytes, sha256 {sha} (a damaged or different copy; {where})"
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
class TaskInfo:
    """What defines one biochemical task (shared/data/README.md and Kim et al.'s discovery settings.yaml)."""

    name: str
    folder: str
    alphabet: str  # the one-character symbols of to_strings / from_strings (index order)
    mode_alphabet: str  # the encoding of the mode file
    mode_file: str
    length: int
    n_modes: int
    r_max: float
    beta: float  # Kim et al.'s settings.yaml
    betas: tuple[float, ...]  # the β values with reference constants in the README
    floor_add: float  # official code: R + floor_add ...
    floor_min: float  # ... or max(R, floor_min)
    hidden: int  # SSR width of Kim et al.'s settings.yaml
    eps: float  # ε-exploration of the Student's (and Teacher's) online batches
    rounds: int  # training rounds (one online batch of 32 each)
    eval_every: int  # rounds between evaluations
    ls_back_steps: int  # k of the back-and-forth local search
    molecule: bool = False  # a chain of molecular building blocks (diversity by Tanimoto, molecule pictures)
    guide_mix: float = 0.5  # guided TB: target_mix_backpolicy_weight of settings.yaml
    guide_temperature: float = 1.0  # guided TB: guide_sampling_temperature of settings.yaml
    guide_offline: str = "resample"  # guided TB: offline_style of settings.yaml (guide_resamples_traj)
    true_samples: tuple[tuple[float, str], ...] = ()  # (β, file) of shipped exact target samples


def _rna(t: int, n_modes: int) -> TaskInfo:
    return TaskInfo(
        f"rna{t}", "rna", "UCGA", "UCGA", f"rna/L14_RNA{t}_modes.txt", 14, n_modes, 10.0, 40.0, (40.0, 8.0),
        1e-12, 0.0, 128, 0.01, 2000, 50, 7, guide_mix=0.25, guide_temperature=3.0, guide_offline="score_back",
        true_samples=((40.0, "rna/L14_RNA1_true_samples_beta40.txt"),) if t == 1 else (),
    )  # fmt: skip


TASKS: dict[str, TaskInfo] = {
    "qm9": TaskInfo(
        "qm9", "qm9", "0123456789a", "0123456789a", "qm9/modes.txt", 5, 805, 100.0, 20.0, (20.0, 5.0),
        1e-12, 0.0, 1024, 0.01, 1000, 20, 3, molecule=True,
    ),
    "seh": TaskInfo(
        "seh", "seh", "0123456789abcdefgh", "0123456789abcdefgh", "seh/modes.txt", 6, 129, 10.0, 6.0, (6.0,),
        0.0, 1e-32, 1024, 0.05, 2000, 50, 3, molecule=True,
        true_samples=((6.0, "seh/true_samples_beta6.txt"),),
    ),
    "tfbind8": TaskInfo(
        "tfbind8", "tfbind8", "ACGT", "0123", "tfbind8/modes.txt", 8, 328, 10.0, 20.0, (20.0, 3.0),
        0.0, 1e-20, 128, 0.01, 2000, 50, 3, guide_mix=0.25, guide_temperature=3.0, guide_offline="score_back",
    ),
    "rna1": _rna(1, 8967),
    "rna2": _rna(2, 8402),
    "rna3": _rna(3, 7400),
}  # fmt: skip
TABLE_TASKS = ("qm9", "tfbind8")
SAMPLES_PER_ROUND = 32  # one online batch of Kim et al.'s discovery code: its reward calls per round


def task_config_defaults(name: str | None) -> dict[str, Any]:
    """The training options a built-in task sets for itself (Kim et al.'s settings.yaml): the SSR width, ε, the
    local search's k, the evaluation interval (as evaluations per run), how often the exact metrics run, and
    guided TB's target mix and guide temperature.
    {} for any other name."""
    if name not in TASKS:
        return {}
    info = TASKS[name]
    return {
        "hidden": info.hidden,
        "eps": info.eps,
        "ls_back_steps": info.ls_back_steps,
        "n_evals": info.rounds // info.eval_every,
        # Every 5th evaluation (10 of 50, and the last) on QM9 at width 1024, from when the DP cost ~20 s on
        # top of an evaluation; since the evaluator tabulates P_F anyway it is free, but the default is kept so
        # that runs stay comparable (their fingerprints include it): --exact-every 1 for L1 at every evaluation
        "exact_every": 5 if info.hidden >= 1024 and name in TABLE_TASKS else 1,
        "guide_mix": info.guide_mix,
        "guide_temperature": info.guide_temperature,
        "guide_offline": info.guide_offline,
    }


def default_rounds(name: str) -> int:
    return TASKS[name].rounds


def _reward_scale(info: TaskInfo, beta: float, log_max_raw: float) -> float:
    """log scale = log R_max − β·log max_x r(x): R is exactly R_max at the best x."""
    return math.log(info.r_max) - beta * log_max_raw


class BiochemTask(PrependAppendStrings):
    """A biochemical string task: R(x) from the raw score as in the module docstring, modes from the shipped
    set, diversity (Hamming, or Tanimoto on molecules with RDKit), exact target samples where known.

    Attributes: ``name``, ``info``, ``beta``, ``r_max``, ``reward_floor``, ``scale`` and ``log_scale``,
    ``paper_hidden`` (the SSR width of the paper). Subclasses give ``raw_score(x)`` (the unfloored raw score,
    float64) and may give ``log_partition()``.
    """

    family = "strings"

    def __init__(
        self,
        info: TaskInfo,
        beta: float,
        log_max_raw: float,
        mode_rows: Tensor,
        reward_floor: bool = True,
        log_scale: float | None = None,
        data_dir: str | os.PathLike[str] | None = None,
    ):
        super().__init__(len(info.alphabet), info.length, None, alphabet=info.alphabet)
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not (math.isfinite(beta) and beta > 0):
            raise ConfigError(f"{option('beta')} must be a positive number (got {beta!r})")
        self.info, self.name = info, info.name
        self.beta, self.r_max, self.reward_floor = float(beta), info.r_max, bool(reward_floor)
        self.paper_hidden = info.hidden
        self.data_dir = data_dir
        self.log_max_raw = float(log_max_raw)
        self._scale_given = log_scale is not None
        self.log_scale = _reward_scale(info, self.beta, self.log_max_raw) if log_scale is None else float(log_scale)
        self.scale = math.exp(self.log_scale)
        self.mode_rows = torch.sort(mode_rows.long().to(self.device)).values
        self.n_modes = len(self.mode_rows)

    def raw_score(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def reward_from_raw(self, raw: Tensor) -> Tensor:
        """R from raw scores (float64), as ``log_reward_from_raw`` but exponentiated before the floor (so R is
        exactly R_max at the best x)."""
        log_raw = raw.to(torch.float64).clamp(min=RAW_FLOOR).log()
        if self._scale_given:
            r = (self.beta * log_raw + self.log_scale).exp()
        else:
            r = self.r_max * (self.beta * (log_raw - self.log_max_raw)).exp()
        if self.reward_floor and self.info.floor_add:
            return r + self.info.floor_add
        if self.reward_floor and self.info.floor_min:
            return r.clamp(min=self.info.floor_min)
        return r

    def log_reward_from_raw(self, raw: Tensor) -> Tensor:
        """log R from raw scores (float64): β·log max(raw, 0.001) + log scale, then the official floor (computed
        as log R_max + β·(log r − log max r) when the scale comes from the maximum: exactly R_max there)."""
        log_raw = raw.to(torch.float64).clamp(min=RAW_FLOOR).log()
        if self._scale_given:
            log_r = self.beta * log_raw + self.log_scale
        else:
            log_r = math.log(self.r_max) + self.beta * (log_raw - self.log_max_raw)
        if not self.reward_floor:
            return log_r
        if self.info.floor_add:
            return torch.logaddexp(log_r, torch.full_like(log_r, math.log(self.info.floor_add)))
        if self.info.floor_min:
            return log_r.clamp(min=math.log(self.info.floor_min))
        return log_r

    def _check_terminal(self, x: Tensor) -> Tensor:
        """x as a long [m, L] batch of full strings over the alphabet; a clear RewardError otherwise."""
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.length:
            shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise RewardError(f"{self.name}: expected a [m, {self.length}] tensor of full strings, got {shape}")
        if x.dtype.is_floating_point or bool(((x < 0) | (x >= self.alphabet_size)).any()):
            raise RewardError(
                f"{self.name}: string characters must be indices 0..{self.alphabet_size - 1} of {self.alphabet!r} "
                "(a partial string, or a wrong alphabet?)"
            )
        return x.long()

    def log_reward(self, x: Tensor) -> Tensor:
        return self.log_reward_from_raw(self.raw_score(self._check_terminal(x)))

    def reward(self, x: Tensor) -> Tensor:
        return self.reward_from_raw(self.raw_score(self._check_terminal(x)))

    def raw_reward(self, x: Tensor) -> Tensor:
        """r(x) = max(raw(x), 0.001), float64: the unscaled score the papers report (e.g. the mean of samples)."""
        return self.raw_score(self._check_terminal(x)).to(torch.float64).clamp(min=RAW_FLOOR)

    def is_mode(self, x: Tensor) -> Tensor:
        rows = self.terminal_index(x)
        pos = torch.searchsorted(self.mode_rows, rows).clamp(max=len(self.mode_rows) - 1)
        return self.mode_rows[pos] == rows

    def modes(self) -> Tensor:
        """The mode strings [n_modes, L] (in row order)."""
        return self.from_index(self.mode_rows)

    def diversity(self, x: Tensor) -> float | None:
        """Mean pairwise distance of the distinct strings of x: Tanimoto distance of the block-chain molecules
        (Morgan radius 2, 1,024 bits) on QM9 and sEH when RDKit is installed (None without it), Hamming distance
        otherwise. None for fewer than two strings."""
        x = torch.unique(x, dim=0)
        if len(x) < 2:
            return None
        if self.info.molecule:
            from adaptive_teacher import chem

            if not chem.has_rdkit():
                return None
            return chem.mean_pairwise_tanimoto_distance(x.tolist(), self.name, data_dir=self.data_dir)
        return mean_pairwise_hamming(x)

    def target_samples(self, n: int = 2048) -> Tensor | None:
        """Exact samples of p ∝ R: the shipped ones at their β (sEH 6, RNA1 40), else None."""
        for beta, rel in self.info.true_samples:
            if beta == self.beta:
                return _read_strings(self, rel, self.data_dir).to(self.device)
        return None

    def log_partition(self) -> float | None:
        return None

    def task_spec(self) -> dict[str, Any]:
        """What rebuilds this task (``make_string_task(**spec)``): the data folder is not part of it (the files
        are identified by their sha256)."""
        return {"name": self.name, "beta": self.beta, "reward_floor": self.reward_floor}


def mean_pairwise_hamming(x: Tensor) -> float:
    """Mean Hamming distance over the pairs of rows of x [m, L] (m >= 2)."""
    m = len(x)
    distinct = (x[:, None, :] != x[None, :, :]).sum(-1).to(torch.float64)
    return float(distinct.sum() / (m * (m - 1)))


class StringTableTask(BiochemTask):
    """A task whose raw score is a table over all A^L strings (QM9, TFBind8): exact log Z, exact target samples.

    Extra attributes: ``raw`` (float64 [A^L], table order), ``log_reward_table`` (log R per row)."""

    def __init__(self, info: TaskInfo, raw: Tensor, mode_rows: Tensor, beta: float, reward_floor: bool = True):
        self.raw = raw.to(device=self.device, dtype=torch.float64)
        log_max = float(self.raw.clamp(min=RAW_FLOOR).log().max())
        super().__init__(info, beta, log_max, mode_rows, reward_floor)
        self.log_reward_table = self.log_reward_from_raw(self.raw)
        self._reward_table = self.reward_from_raw(self.raw)
        self._mode_table = torch.zeros(len(raw), dtype=torch.bool, device=self.device)
        self._mode_table[self.mode_rows] = True

    def raw_score(self, x: Tensor) -> Tensor:
        return self.raw[self.terminal_index(x)]

    def reward(self, x: Tensor) -> Tensor:
        return self._reward_table[self.terminal_index(self._check_terminal(x))]

    def log_reward(self, x: Tensor) -> Tensor:
        """log R(x) from the float64 table."""
        return self.log_reward_table[self.terminal_index(self._check_terminal(x))]

    def is_mode(self, x: Tensor) -> Tensor:
        return self._mode_table[self.terminal_index(x)]

    def log_partition(self) -> float:
        return float(torch.logsumexp(self.log_reward_table, 0))

    def target_samples(self, n: int = 2048) -> Tensor:
        """n exact samples of p ∝ R from the table (a fixed CPU generator: every run, on every device, is scored on
        the same ones), on the task's device."""
        gen = torch.Generator(device="cpu").manual_seed(0)
        table = self.log_reward_table.cpu()
        p = (table - float(torch.logsumexp(table, 0))).exp()
        rows = torch.multinomial(p, n, replacement=True, generator=gen)
        return self.from_index(rows.to(self.device))

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


# sEH constants of the README, from a full sweep of the proxy over all 34,012,224 strings (β = 6, R_max 10).
SEH_LOG_Z_SCALED = {6.0: 17.5524}


class SEHTask(BiochemTask):
    """sEH: 6 blocks of 18, raw score the gradient-boosted-tree proxy (``oracles.SEHProxy``). log Z is known
    at β = 6 only (the README's sweep, 4 decimals)."""

    def __init__(self, info: TaskInfo, mode_rows: Tensor, beta: float, reward_floor: bool, data_dir=None):
        from adaptive_teacher.oracles import SEH_MAX, SEHProxy

        super().__init__(info, beta, math.log(SEH_MAX), mode_rows, reward_floor, data_dir=data_dir)
        self.proxy = SEHProxy(data_dir)  # an OnDevice attribute: task.to(device) moves its tables too

    def raw_score(self, x: Tensor) -> Tensor:
        return self.proxy(x)

    def log_partition(self) -> float | None:
        return SEH_LOG_Z_SCALED.get(self.beta)


class RNATask(BiochemTask):
    """L14-RNA1/2/3: RNA 14-mers, raw score the ViennaRNA binding fitness (``oracles.RNABinding``, evaluated in
    worker processes). scale and log Z come from the task's ``info.csv`` at the β values it lists (1..50, 64,
    100), as in the official code; at another β, scale = 10 / max r^β with max r = 10 / scale(β = 1)."""

    def __init__(self, info: TaskInfo, task: int, mode_rows: Tensor, beta: float, reward_floor: bool, data_dir=None):
        from adaptive_teacher.oracles import RNABinding, rna_info

        first = rna_info(task, 1.0, data_dir)
        log_max = math.log(info.r_max / first["scale"])
        try:
            row: dict[str, float] | None = rna_info(task, beta, data_dir)
        except DataError:
            row = None
        log_scale = None if row is None else math.log(row["scale"])
        super().__init__(info, beta, log_max, mode_rows, reward_floor, log_scale, data_dir)
        self.task, self._info_row = task, row
        self.oracle = RNABinding(task)

    def raw_score(self, x: Tensor) -> Tensor:
        return self.oracle(x)

    def log_partition(self) -> float | None:
        return None if self._info_row is None else float(self._info_row["logz_scaled"])


def _read_strings(env: PrependAppendStrings, rel: str, data_dir, alphabet: str | None = None) -> Tensor:
    """The strings of a shipped text file (one a line) as full strings [m, L]; DataError when malformed."""
    lines = _read_lines(rel, data_dir)
    code = {ch: i for i, ch in enumerate(alphabet or env.alphabet)}
    if any(len(s) != env.length or not set(s) <= set(code) for s in lines):
        raise DataError(
            f"data file {data_path(rel, data_dir)} is malformed: expected strings of length {env.length} over "
            f"{''.join(code)!r}, one a line ({DATA_ENV_VAR})"
        )
    return torch.tensor([[code[ch] for ch in s] for s in lines], dtype=torch.long, device="cpu").view(-1, env.length)


def _mode_rows(info: TaskInfo, data_dir) -> Tensor:
    lines = _read_lines(info.mode_file, data_dir)
    a, n = len(info.alphabet), info.length
    code = {ch: i for i, ch in enumerate(info.mode_alphabet)}
    if (
        len(lines) != info.n_modes
        or len(set(lines)) != len(lines)
        or any(len(s) != n or not set(s) <= set(code) for s in lines)
    ):
        raise DataError(
            f"data file {data_path(info.mode_file, data_dir)} is malformed: expected {info.n_modes} distinct "
            f"strings of length {n} over {info.mode_alphabet!r}, one a line ({DATA_ENV_VAR})"
        )
    digits = torch.tensor([[code[ch] for ch in s] for s in lines], dtype=torch.long, device="cpu").view(-1, n)
    return (digits * a ** torch.arange(n - 1, -1, -1, device="cpu")).sum(-1)


def _table(info: TaskInfo, data_dir) -> Tensor:
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
    rows = torch.arange(a**n, device="cpu")
    want = (rows[:, None] // a ** torch.arange(n - 1, -1, -1, device="cpu")) % a
    if not torch.equal(torch.from_numpy(x.astype(np.int64)), want) or not bool(torch.isfinite(raw).all()):
        raise DataError(f"data file {path} is malformed: rows are not in base-{a} order or y is not finite")
    return raw


def make_string_task(
    name: str,
    beta: float | None = None,
    reward_floor: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
) -> BiochemTask:
    """A biochemical task by name (qm9, seh, tfbind8, rna1, rna2, rna3) with β (default: Kim et al.'s) from the
    data folder."""
    if name not in TASKS:
        raise ConfigError(f"{option('task')}: unknown string task {name!r}; choose one of {', '.join(TASKS)}")
    info = TASKS[name]
    b = info.beta if beta is None else beta
    table = _table(info, data_dir) if name in TABLE_TASKS else None
    modes = _mode_rows(info, data_dir)
    if table is not None:
        task: BiochemTask = StringTableTask(info, table, modes, b, reward_floor)
    elif name == "seh":
        task = SEHTask(info, modes, b, reward_floor, data_dir)
    else:
        task = RNATask(info, int(name[3:]), modes, b, reward_floor, data_dir)
    task.data_dir = data_dir
    return task


def qm9(
    beta: float = 20.0, reward_floor: bool = True, data_dir: str | os.PathLike[str] | None = None
) -> StringTableTask:
    """QM9 as 5 blocks of 11 (Shen et al., 2023): R_max 100, β 20 (Kim et al.) or 5 (LS-GFN, Shen et al.)."""
    task = make_string_task("qm9", beta, reward_floor, data_dir)
    assert isinstance(task, StringTableTask)
    return task


def tfbind8(
    beta: float = 20.0, reward_floor: bool = True, data_dir: str | os.PathLike[str] | None = None
) -> StringTableTask:
    """TFBind8 (DNA 8-mers, SIX6 binding): R_max 10, β 20 (Kim et al.) or 3 (LS-GFN, Shen et al.)."""
    task = make_string_task("tfbind8", beta, reward_floor, data_dir)
    assert isinstance(task, StringTableTask)
    return task


def seh(beta: float = 6.0, reward_floor: bool = True, data_dir: str | os.PathLike[str] | None = None) -> BiochemTask:
    """sEH as 6 blocks of 18 (the GBT proxy): R_max 10, β 6 (Kim et al., LS-GFN and Shen et al. alike)."""
    return make_string_task("seh", beta, reward_floor, data_dir)


def rna(
    task: int = 1, beta: float = 40.0, reward_floor: bool = True, data_dir: str | os.PathLike[str] | None = None
) -> BiochemTask:
    """L14-RNA{task} (ViennaRNA binding to target ``task`` of 1..3): R_max 10, β 40 (Kim et al.) or 8."""
    if task not in (1, 2, 3):
        raise ConfigError(f"the L14 RNA task must be 1, 2 or 3 (got {task!r})")
    return make_string_task(f"rna{task}", beta, reward_floor, data_dir)


__all__ = [
    "DATA_ENV_VAR",
    "MANIFEST",
    "TASKS",
    "BiochemTask",
    "RNATask",
    "SEHTask",
    "StringTableTask",
    "TaskInfo",
    "data_path",
    "default_data_dir",
    "make_string_task",
    "qm9",
    "rna",
    "seh",
    "task_config_defaults",
    "tfbind8",
]
