"""Reward oracles of the biochemical string tasks that are not a table: the sEH proxy and L14-RNA binding.

Data: ``seh/gbr_trees.npz`` and ``rna/L14_RNA{t}_info.csv`` of the folder described by
``shared/data/README.md`` (found and sha256-checked by :func:`adaptive_teacher.biochem.data_path`).

**sEH** (:class:`SEHProxy`; Kim et al., ICLR 2025, after Shen et al., 2023). The raw reward of a string x of 6
blocks out of 18 is the sklearn 1.0.2 HistGradientBoostingRegressor of the official code (100 trees, learning
rate folded into the leaves), on the one-hot input feature f = 18·p + i (1.0 iff block i sits at position p):

    pred(x) = baseline + leaf_0(x) + leaf_1(x) + ... + leaf_99(x),    added in that order in float64,

where at an inner node of a tree one goes right iff feature > 0.5, i.e. iff x[f // 18] == f % 18. This is
``verify.py::seh_predict`` (sklearn's summation order), reproduced bit for bit. Maximum 7.033253064721926 at
``ag550c`` (README, full sweep of all 18^6 strings).

**RNA** (:class:`RNABinding`; FLEXS ``RNABinding``, registry entries ``L14_RNA1/2/3``): with the 100-nt target
T_t and ViennaRNA's hybridisation energy ``RNA.duplexfold(a, b).energy`` (kcal/mol),

    norm_t = duplexfold(revcomp(T_t), T_t).energy · 14 / 100,    fitness(x) = duplexfold(T_t, x).energy / norm_t,

revcomp = reverse of the base-wise complement A↔U, C↔G. Fitness can be negative (the tasks floor it at 0.001).

Devices: both oracles answer on the device of a tensor input. The sEH proxy computes CPU inputs with its numpy
tables and inputs on another device (a GPU) with torch copies of the tables there (``proxy.to(device)`` makes
them; the same gathers and the same float64 sum in tree order, bit for bit). ViennaRNA is a CPU library: the
RNA oracle takes its inputs to the CPU and returns the fitness on the input's device.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor

from adaptive_teacher.biochem import DATA_ENV_VAR, _load_npz, _read_lines, data_path
from adaptive_teacher.device import OnDevice
from adaptive_teacher.errors import ConfigError, DataError, RewardError, option

# ---- constants (shared/data/README.md) -----------------------------------------------------------------------
SEH_ALPHABET = "0123456789abcdefgh"  # character SEH_ALPHABET[i] is block i
SEH_LENGTH = 6
SEH_MAX = 7.033253064721926  # max pred over all 18^6 strings (README, full sweep) ...
SEH_MAX_STRING = "ag550c"  # ... reached only here
SEH_MODE_THRESHOLD = 6.818301727551959  # the 99.99th percentile of the scaled reward at β = 6, as a raw pred

RNA_ALPHABET = "UCGA"  # the index order of the one-hot code (FLEXS)
RNA_LENGTH = 14
RNA_ALPHABET_SIZE = 4
RNA_TARGETS: dict[int, str] = {  # FLEXS registry L14_RNA1/2/3, one 100-nt target each
    1: "GAACGAGGCACAUUCCGGCUCGCCCGGCCCAUGUGAGCAUGGGCCGGACCCCGUCCGCGCGGGGCCCCCGCGCGGACGGGGGCGAGCCGGAAUGUGCCUC",
    2: "GAGGCACAUUCCGGCUCGCCCCCGUCCGCGCGGGGGCCCCGCGCGGACGGGGUCCGGCCCGCGCGGGGCCCCCGCGCGGGAGCCGGAAUGUGCCUCGUUC",
    3: "CCGGUGAUACUGUUAGUGGUCACGGUGCAUUUAUAGCGCUAAAGUACAGUCUUCCCCUGUUGAACGGCGCCAUUGCAUACAGGGCCAGCCGCGUAACGCC",
}
RNA_NORMS: dict[int, float] = {1: -36.414, 2: -37.842, 3: -30.184}  # README (ViennaRNA 2.7.2 and 2.8.0)
RNA_INFO_COLUMNS = ("reward_exp", "logz", "expected_reward", "logz_scaled", "expected_reward_scaled", "scale")
VIENNA_MISSING = "the RNA tasks need ViennaRNA: pip install 'adaptive-teacher[rna]' (or pip install viennarna)"

_SEH_FILE = "seh/gbr_trees.npz"
_SEH_KEYS = ("value", "feature_idx", "threshold", "left", "right", "is_leaf", "tree_offsets", "baseline", "alphabet")
_MAX_TABLE = 1 << 26  # leaf-value table entries (the sEH trees need 524,886)
_SMALL_BATCH = 128  # below it the tree sum is one cumsum over [m, T], above it a loop over trees of [m] adds
_PAIR_WEIGHTS = np.array([[18, 0, 0], [1, 0, 0], [0, 18, 0], [0, 1, 0], [0, 0, 18], [0, 0, 1]], dtype=np.intp)
_PAIR_OFFSETS = np.array([0, 18 * 18, 2 * 18 * 18], dtype=np.intp)


# ---- shared input handling -------------------------------------------------------------------------------------
def _as_codes(x: Any, length: int, alphabet: str, what: str) -> np.ndarray:
    """x as an intp array [m, length] of indices into ``alphabet``: from an integer tensor/array [m, length] or
    from a sequence of strings written with ``alphabet``. RewardError (a ValueError) naming the expected form."""
    a = len(alphabet)
    expected = f"{what} expects x of shape [m, {length}] with integer indices 0..{a - 1} (alphabet {alphabet!r})"
    if isinstance(x, Tensor):
        arr = x.detach().cpu().numpy() if x.dtype != torch.bool else None
    elif isinstance(x, np.ndarray):
        arr = x
    elif isinstance(x, str):
        raise RewardError(f"{expected} or a list of strings of length {length}; got one str (wrap it in a list)")
    elif isinstance(x, Sequence):
        return _codes_from_strings(x, length, alphabet, expected)
    else:
        raise RewardError(f"{expected} or a list of strings; got a {type(x).__name__}")
    if arr is None or arr.dtype.kind not in "iu":
        raise RewardError(f"{expected}; got dtype {x.dtype}")
    if arr.ndim != 2 or arr.shape[1] != length:
        raise RewardError(f"{expected}; got shape {list(arr.shape)}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= a):
        bad = arr[((arr < 0) | (arr >= a)).any(1)][0].tolist()
        raise RewardError(f"{expected}; got an index out of range, e.g. in the row {bad}")
    return arr.astype(np.intp, copy=False)


def _codes_from_strings(strings: Sequence[Any], length: int, alphabet: str, expected: str) -> np.ndarray:
    """Strings of ``length`` characters of ``alphabet`` -> intp [m, length] (vectorised over the bytes)."""
    lut = np.full(256, -1, dtype=np.intp)
    lut[np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)] = np.arange(len(alphabet))
    for s in strings:
        if not isinstance(s, str) or len(s) != length or not s.isascii():
            raise RewardError(f"{expected}, or strings of length {length}; got {s!r}")
    if not strings:
        return np.zeros((0, length), dtype=np.intp)
    raw = np.frombuffer("".join(strings).encode("ascii"), dtype=np.uint8).reshape(-1, length)
    codes = lut[raw]
    if (codes < 0).any():
        bad = strings[int(np.flatnonzero((codes < 0).any(1))[0])]
        raise RewardError(f"{expected}, or strings over {alphabet!r}; got {bad!r}")
    return codes


def _like_input(values: np.ndarray, x: Any) -> Tensor | np.ndarray:
    """A float64 tensor on x's device when x is a tensor, else the numpy array."""
    if isinstance(x, Tensor):
        return torch.from_numpy(values).to(x.device)
    return values


# ---- sEH -------------------------------------------------------------------------------------------------------
class SEHProxy(OnDevice):
    """The sEH gradient-boosted-tree proxy (module docstring), vectorised and bit-identical to the reference.

    ``proxy(x)`` takes an integer tensor or array x [m, 6] of block indices 0..17, or a list of 6-character
    strings over ``"0123456789abcdefgh"``, and returns the raw predictions as float64 [m] (a tensor on x's device
    for tensor input, else a numpy array). Wrong shapes, dtypes or symbols raise RewardError (a ValueError).

    How: in one tree only the blocks that the tree tests at each position matter, so a tree is a function of 6
    small class indices (the block if tested there, else "other"); at load every tree is tabulated over all
    combinations of its classes (524,886 leaf values in all). A call is then 3 gathers (position pairs) of
    per-tree table offsets, one gather of the 100 leaf values, and their float64 sum in tree order. A tensor on
    another device than the CPU takes the same steps in torch there (:meth:`predict_tensor`).
    """

    def __init__(self, data_dir: str | os.PathLike[str] | None = None):
        path = data_path(_SEH_FILE, data_dir)  # sha256-checked: the same path holds the same trees
        key = str(path.resolve())
        if key not in _SEH_CACHE:
            _SEH_CACHE[key] = SEHProxy.from_arrays(_load_npz(_SEH_FILE, data_dir), str(path))
        self.__dict__.update(_SEH_CACHE[key].__dict__)  # the tables are read-only, so sharing them is safe
        self._device_tables = {}  # this proxy's own torch copies of the tables, per device

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], source: str = "<arrays>") -> SEHProxy:
        """A proxy from the arrays of a ``gbr_trees.npz`` (``source`` names them in errors)."""
        self = cls.__new__(cls)
        self._init(arrays, source)
        return self

    def _init(self, arrays: Mapping[str, Any], source: str) -> None:
        trees = _check_trees(arrays, source)
        self.source = source
        self.baseline: float = trees["baseline"]
        self.n_trees: int = len(trees["tree_offsets"]) - 1
        self.alphabet, self.length = SEH_ALPHABET, SEH_LENGTH
        self._pair_table, self._leaf_value = _tabulate_trees(trees, source)
        self._pair_table.flags.writeable = False
        self._leaf_value.flags.writeable = False
        self._device_tables: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @overload
    def __call__(self, x: Tensor) -> Tensor: ...
    @overload
    def __call__(self, x: np.ndarray | Sequence[str]) -> np.ndarray: ...
    def __call__(self, x: Tensor | np.ndarray | Sequence[str]) -> Tensor | np.ndarray:
        """Raw predictions float64 [m] (see the class)."""
        if isinstance(x, Tensor) and x.device.type != "cpu":
            return self.predict_tensor(x)
        codes = _as_codes(x, SEH_LENGTH, SEH_ALPHABET, "the sEH proxy")
        return _like_input(self._predict(codes), x)

    def to(self, device: str | torch.device) -> SEHProxy:
        """Copy the tables to ``device`` for the tensor inputs there (the numpy tables stay for the CPU)."""
        super().to(device)
        if self.device.type != "cpu":
            self._tables_on(self.device)
        return self

    def _tables_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(pair table int64 [3·18², T], leaf values float64) as tensors on ``device``, made once per device."""
        if device not in self._device_tables:
            pair = torch.from_numpy(self._pair_table.astype(np.int64)).to(device)
            leaf = torch.from_numpy(self._leaf_value.copy()).to(device)
            self._device_tables[device] = (pair, leaf)
        return self._device_tables[device]

    def predict_tensor(self, x: Tensor) -> Tensor:
        """The raw predictions of a tensor x [m, 6] of block indices, computed in torch on x's device: the rows
        18·x0 + x1, 324 + 18·x2 + x3, 648 + 18·x4 + x5 of the pair table, the gather of the leaf values and their
        float64 sum in tree order (the numpy path's operations, so the same bits). RewardError for a bad x."""
        nb = len(SEH_ALPHABET)
        integer = not (x.dtype.is_floating_point or x.is_complex() or x.dtype == torch.bool)
        if x.dim() != 2 or x.shape[1] != SEH_LENGTH or not integer or bool(((x < 0) | (x >= nb)).any()):
            _as_codes(x.cpu(), SEH_LENGTH, SEH_ALPHABET, "the sEH proxy")  # raises the error naming the problem
        pair, leaf = self._tables_on(x.device)
        xi = x.long()
        offsets = torch.arange(3, device=x.device) * nb * nb
        rows = xi[:, 0::2] * nb + xi[:, 1::2] + offsets  # [m, 3]
        leaves = leaf[pair[rows[:, 0]] + pair[rows[:, 1]] + pair[rows[:, 2]]]  # [m, T]; tree 0 holds the baseline
        by_tree = leaves.T.contiguous()
        out = by_tree[0].clone()
        for row in by_tree[1:]:  # left to right, as the reference's sum
            out += row
        return out

    def _predict(self, codes: np.ndarray) -> np.ndarray:
        rows = codes @ _PAIR_WEIGHTS  # [m, 3]: 18·x0 + x1, 324 + 18·x2 + x3, 648 + 18·x4 + x5
        rows += _PAIR_OFFSETS
        table = self._pair_table
        where = table[rows[:, 0]]  # [m, T]: the row of each tree's leaf value in _leaf_value
        where += table[rows[:, 1]]
        where += table[rows[:, 2]]
        leaves = self._leaf_value[where]  # tree 0's entries already hold baseline + leaf_0
        if len(codes) < _SMALL_BATCH:  # sum left to right: cumsum is sequential
            return np.cumsum(leaves, axis=1)[:, -1].copy()
        by_tree = np.ascontiguousarray(leaves.T)  # the same order, vectorised over the batch
        out = by_tree[0].copy()
        for row in by_tree[1:]:
            out += row
        return out

    def strings(self, x: Tensor | np.ndarray) -> list[str]:
        """The block strings of x [m, 6] (e.g. ``"ag550c"``)."""
        codes = _as_codes(x, SEH_LENGTH, SEH_ALPHABET, "SEHProxy.strings")
        return _strings_of(codes, SEH_ALPHABET)

    def codes(self, strings: Sequence[str]) -> Tensor:
        """The block indices, long [m, 6], of 6-character strings over ``"0123456789abcdefgh"``."""
        return torch.from_numpy(_as_codes(list(strings), SEH_LENGTH, SEH_ALPHABET, "SEHProxy.codes").astype(np.int64))

    def __repr__(self) -> str:
        return f"SEHProxy({self.n_trees} trees, baseline {self.baseline!r}, from {self.source})"


_SEH_CACHE: dict[str, SEHProxy] = {}


def _strings_of(codes: np.ndarray, alphabet: str) -> list[str]:
    if not len(codes):
        return []
    lut = np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)
    flat = lut[codes].tobytes().decode("ascii")
    n = codes.shape[1]
    return [flat[i : i + n] for i in range(0, len(flat), n)]


def _check_trees(arrays: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The tree arrays of gbr_trees.npz, checked (README layout, every node of every tree reachable from its
    root, children after their parent so a descent ends); DataError naming ``source`` otherwise."""

    def bad(why: str) -> DataError:
        return DataError(f"data file {source} is malformed: {why} ({DATA_ENV_VAR}; see shared/data/README.md)")

    missing = [k for k in _SEH_KEYS if k not in arrays]
    if missing:
        raise bad(f"it lacks {', '.join(missing)}")
    a = {k: np.asarray(arrays[k]) for k in _SEH_KEYS}
    if str(a["alphabet"]) != SEH_ALPHABET or int(np.asarray(arrays.get("n_positions", SEH_LENGTH))) != SEH_LENGTH:
        raise bad(f"expected alphabet {SEH_ALPHABET!r} and n_positions {SEH_LENGTH}")
    n = a["value"].shape[0] if a["value"].ndim == 1 else -1
    for k in ("value", "feature_idx", "threshold", "left", "right", "is_leaf"):
        if a[k].shape != (n,):
            raise bad(f"{k} has shape {list(a[k].shape)}, expected [{n}] like value")
    for k, kinds in (("value", "f"), ("threshold", "f"), ("feature_idx", "iu"), ("left", "iu"), ("right", "iu")):
        if a[k].dtype.kind not in kinds:
            raise bad(f"{k} has dtype {a[k].dtype}")
    if a["is_leaf"].dtype != np.bool_ or a["baseline"].shape != () or a["baseline"].dtype.kind != "f":
        raise bad("is_leaf must be bool and baseline a float scalar")
    off = a["tree_offsets"].astype(np.int64)
    if off.ndim != 1 or len(off) < 2 or off[0] != 0 or off[-1] != n or (np.diff(off) < 1).any():
        raise bad(f"tree_offsets must rise from 0 to the {n} nodes")
    leaf = a["is_leaf"]
    inner = ~leaf
    nodes = np.arange(n)
    size = np.repeat(np.diff(off), np.diff(off))  # size of the tree of each node
    local = nodes - np.repeat(off[:-1], np.diff(off))
    feat = a["feature_idx"].astype(np.int64)
    left, right = a["left"].astype(np.int64), a["right"].astype(np.int64)
    nf = SEH_LENGTH * len(SEH_ALPHABET)
    if ((feat[inner] < 0) | (feat[inner] >= nf)).any():
        raise bad(f"an inner node tests a feature outside 0..{nf - 1}")
    thr = a["threshold"][inner]
    if not ((thr >= 0) & (thr < 1)).all():  # one-hot inputs: "feature <= thr" must mean "feature == 0"
        raise bad("an inner node has a threshold outside [0, 1)")
    for child in (left, right):
        if ((child[inner] <= local[inner]) | (child[inner] >= size[inner])).any():
            raise bad("a child index is not after its parent within its tree")
    parents = np.zeros(n, dtype=np.int64)  # a tree: every node but the roots has exactly one parent
    base = np.repeat(off[:-1], np.diff(off))
    np.add.at(parents, (base + left)[inner], 1)
    np.add.at(parents, (base + right)[inner], 1)
    if (parents[off[:-1]] != 0).any() or (np.delete(parents, off[:-1]) != 1).any():
        raise bad("the nodes do not form trees (some node is unreachable or has two parents)")
    value, baseline = a["value"].astype(np.float64), float(a["baseline"])
    if not (np.isfinite(value[leaf]).all() and math.isfinite(baseline)):
        raise bad("a leaf value or the baseline is not finite")
    return {
        "value": value,
        "feature": feat,
        "left": left,
        "right": right,
        "is_leaf": leaf,
        "tree_offsets": off,
        "baseline": baseline,
    }


def _tabulate_trees(trees: dict[str, Any], source: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-tree leaf tables (see SEHProxy): returns ``pair`` int32 [3·18², T], where ``pair[18·x0 + x1] +
    pair[324 + 18·x2 + x3] + pair[648 + 18·x4 + x5]`` is, for each tree, the row of its leaf value in
    ``leaf_value`` (float64 [Σ_t Π_p classes]). Tree 0's values hold baseline + leaf_0, the first step of the
    sequential sum (so a call needs no baseline column)."""
    nb, npos = len(SEH_ALPHABET), SEH_LENGTH
    off, feat, leaf = trees["tree_offsets"], trees["feature"], trees["is_leaf"]
    n_trees = len(off) - 1
    pos_table = np.zeros((npos, nb, n_trees), dtype=np.int64)  # per position: class * stride (+ tree start)
    tables: list[np.ndarray] = []
    start = 0
    for t in range(n_trees):
        lo, hi = int(off[t]), int(off[t + 1])
        f = feat[lo:hi][~leaf[lo:hi]]
        cls = np.empty((npos, nb), dtype=np.int64)  # block -> class at each position
        for p in range(npos):
            tested = np.unique(f[f // nb == p] % nb)
            cls[p] = len(tested)  # "any other block"
            cls[p, tested] = np.arange(len(tested))
        shape = tuple(int(c.max()) + 1 for c in cls)
        size = math.prod(shape)
        if start + size > _MAX_TABLE:
            raise DataError(f"data file {source} is malformed: its trees need more than {_MAX_TABLE} table rows")
        table = np.full(shape, np.nan)
        _fill(table, lo, shape, cls, trees)
        if np.isnan(table).any():  # cannot happen for checked trees (every combination reaches a leaf)
            raise DataError(f"data file {source} is malformed: tree {t} does not cover every input")
        strides = [math.prod(shape[p + 1 :]) for p in range(npos)]
        for p in range(npos):
            pos_table[p, :, t] = cls[p] * strides[p] + (start if p == 0 else 0)
        tables.append(table.ravel() + trees["baseline"] if t == 0 else table.ravel())
        start += size
    pair = np.concatenate(
        [(pos_table[2 * q][:, None, :] + pos_table[2 * q + 1][None, :, :]).reshape(nb * nb, n_trees) for q in range(3)]
    )
    return pair.astype(np.int32), np.concatenate(tables)


def _fill(table: np.ndarray, start: int, shape: tuple[int, ...], cls: np.ndarray, trees: dict[str, Any]) -> None:
    """Write the leaf values of the tree whose root is row ``start`` into ``table`` (over its class combinations):
    each node's region (per position, the classes still possible) splits into right (the tested position holds
    the tested block's class) and left (any other class); a leaf's region takes its value."""
    stack = [(0, [np.arange(k) for k in shape])]
    while stack:
        node, region = stack.pop()
        if any(len(r) == 0 for r in region):  # a path no input takes
            continue
        g = start + node
        if trees["is_leaf"][g]:
            table[np.ix_(*region)] = trees["value"][g]
            continue
        p, block = divmod(int(trees["feature"][g]), len(SEH_ALPHABET))
        hit = region[p] == cls[p, block]
        for child, keep in ((trees["right"][g], hit), (trees["left"][g], ~hit)):
            sub = list(region)
            sub[p] = region[p][keep]
            stack.append((int(child), sub))


# ---- RNA -------------------------------------------------------------------------------------------------------
def _import_rna() -> Any:
    try:
        import RNA  # optional dependency, imported only when an RNA oracle is used
    except ImportError as e:
        raise ImportError(VIENNA_MISSING) from e
    return RNA


def revcomp(seq: str) -> str:
    """The reverse of the base-wise complement A↔U, C↔G of an RNA string."""
    return seq.translate(str.maketrans("AUCG", "UAGC"))[::-1]


def _duplex_energies(target: str, seqs: Sequence[str]) -> list[float]:
    """ViennaRNA ``duplexfold(target, s).energy`` of every s, in this process."""
    rna = _import_rna()
    return [rna.duplexfold(target, s).energy for s in seqs]


# A worker is a fresh interpreter (``python -c``): it imports only ViennaRNA (not this package, torch or the
# caller's main module), folds the space-separated strings of each request line against the target argv[1] and
# answers one line of energies (repr: exact round trip) or "ERR <message>". It exits at the end of its stdin,
# i.e. when the pool closes it or the parent process dies, and ignores Ctrl-C (the parent handles it).
_WORKER_CODE = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.path[:0] = [p for p in sys.argv[2:] if p not in sys.path]
try:
    import RNA
except Exception as e:
    sys.stdout.write("ERR cannot import ViennaRNA: %s: %s\n" % (type(e).__name__, e))
    sys.exit(1)
target, read, write = sys.argv[1], sys.stdin.readline, sys.stdout.write
write("READY\n")
sys.stdout.flush()
while True:
    line = read()
    if not line:
        break
    try:
        reply = " ".join([repr(RNA.duplexfold(target, s).energy) for s in line.split()]) + "\n"
    except Exception as e:
        reply = "ERR %s: %s\n" % (type(e).__name__, str(e).replace("\n", " "))
    try:
        write(reply)
        sys.stdout.flush()
    except BrokenPipeError:  # the parent is gone
        os._exit(0)
"""


class _WorkerPool:
    """``n`` worker interpreters folding against one target; ``energies(pieces)`` sends piece i to worker i and
    returns the energies in order. Any failure closes the pool (the caller may start a new one)."""

    def __init__(self, n: int, target: str):
        rna = _import_rna()
        where = []  # the folder ViennaRNA was imported from, in case this process added it to sys.path
        if getattr(rna, "__file__", None):
            file = Path(rna.__file__).resolve()
            where.append(str(file.parents[1] if file.stem == "__init__" else file.parent))
        cmd = [sys.executable, "-c", _WORKER_CODE, target, *where]
        self.procs: list[subprocess.Popen[str]] = []
        try:
            for _ in range(n):  # all start at once; each then imports ViennaRNA (~0.2 s)
                self.procs.append(
                    subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="ascii")
                )
            for p in self.procs:
                self._expect(p, "READY")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _expect(p: subprocess.Popen[str], what: str) -> str:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line or line.startswith("ERR"):
            raise RuntimeError(f"an RNA oracle worker (pid {p.pid}) failed: {line.strip() or 'it exited'}")
        if what and line.strip() != what:
            raise RuntimeError(f"an RNA oracle worker (pid {p.pid}) answered {line[:80]!r}, expected {what!r}")
        return line

    def energies(self, pieces: Sequence[Sequence[str]]) -> list[float]:
        p = self.procs[0]
        try:
            for p, piece in zip(self.procs, pieces, strict=False):  # send every piece first: they fold at once
                assert p.stdin is not None
                p.stdin.write(" ".join(piece) + "\n")
                p.stdin.flush()
            out: list[float] = []
            for p, piece in zip(self.procs, pieces, strict=False):
                values = [float(v) for v in self._expect(p, "").split()]
                if len(values) != len(piece):
                    raise RuntimeError(f"an RNA oracle worker (pid {p.pid}) returned {len(values)} of {len(piece)}")
                out += values
            return out
        except (OSError, ValueError) as e:  # a broken pipe: the worker died; ValueError: an unreadable answer
            self.close(timeout=0.5)
            raise RuntimeError(f"an RNA oracle worker (pid {p.pid}) failed: {type(e).__name__}: {e}") from e
        except BaseException:  # a worker died, or Ctrl-C mid-exchange: the protocol state is lost
            self.close(timeout=0.5)
            raise

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def close(self, timeout: float = 5.0) -> None:
        """Close every worker's stdin (it exits), wait for it, kill it if it does not exit in ``timeout`` s."""
        procs, self.procs = self.procs, []
        for p in procs:
            with contextlib.suppress(OSError):
                if p.stdin is not None:
                    p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))  # the cores this process may use (a container's quota on Linux)
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


class RNABinding:
    """FLEXS RNABinding fitness of 14-mers for target ``task`` 1, 2 or 3 (module docstring).

    ``oracle(x)`` takes a long tensor or integer array x [m, 14] of indices into ``"UCGA"`` (the FLEXS one-hot
    order), or a list of 14-character strings over ``"UCGA"``, and returns the fitness float64 [m] (a tensor on
    x's device for tensor input, else a numpy array). Each distinct string of a batch is folded once.

    Parallelism: a batch of at least ``min_pool_batch`` distinct strings is split into one contiguous piece per
    worker and folded by ``workers`` worker processes (default min(4, available cores)); ``workers=1`` or a
    smaller batch folds in this process. The workers start on first use as fresh interpreters (fork + exec,
    never a bare fork, so they are safe next to torch's threads; they import only ViennaRNA, and the caller's
    script needs no ``if __name__ == "__main__"`` guard). They stop on :meth:`close`, at the end of a ``with``
    block, when the oracle is garbage-collected, at interpreter exit, and by themselves when this process dies
    (their stdin closes). Results do not depend on the number of workers (each energy is a float sent exactly).

    ViennaRNA is imported only when the oracle is used (``norm`` or a call): without it that raises ImportError
    with the install command.
    """

    def __init__(self, task: int = 1, workers: int | None = None, min_pool_batch: int = 32):
        if task not in RNA_TARGETS:
            raise ConfigError(f"{option('task')}: the RNA binding task is 1, 2 or 3 (got {task!r})")
        if workers is None:
            workers = _default_workers()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"{option('workers')} must be a positive integer (got {workers!r})")
        self.task, self.workers, self.min_pool_batch = int(task), workers, max(2, int(min_pool_batch))
        self.target = RNA_TARGETS[self.task]
        self.length, self.alphabet = RNA_LENGTH, RNA_ALPHABET
        self._norm: float | None = None
        self._pool: _WorkerPool | None = None
        self._pool_pid = -1  # the process that started the pool (a forked copy of this object must not use it)
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()

    @property
    def norm(self) -> float:
        """norm_t = duplexfold(revcomp(T_t), T_t).energy · 14 / len(T_t) (negative, kcal/mol)."""
        if self._norm is None:
            rna = _import_rna()
            self._norm = rna.duplexfold(revcomp(self.target), self.target).energy * RNA_LENGTH / len(self.target)
        return self._norm

    @overload
    def __call__(self, x: Tensor) -> Tensor: ...
    @overload
    def __call__(self, x: np.ndarray | Sequence[str]) -> np.ndarray: ...
    def __call__(self, x: Tensor | np.ndarray | Sequence[str]) -> Tensor | np.ndarray:
        """Fitness float64 [m] (see the class)."""
        codes = _as_codes(x, RNA_LENGTH, RNA_ALPHABET, f"the L14-RNA{self.task} oracle")
        norm = self.norm
        keys = codes @ (RNA_ALPHABET_SIZE ** np.arange(RNA_LENGTH - 1, -1, -1, dtype=np.intp))
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        energies = np.asarray(self._energies(_strings_of(codes[first], RNA_ALPHABET)), dtype=np.float64)
        return _like_input(energies[inverse.reshape(-1)] / norm, x)

    def fitness(self, strings: Sequence[str]) -> np.ndarray:
        """The fitness of 14-character strings over ``"UCGA"``, float64 [m]."""
        return self(list(strings))

    def strings(self, x: Tensor | np.ndarray) -> list[str]:
        """The RNA strings of x [m, 14] (indices into ``"UCGA"``)."""
        return _strings_of(_as_codes(x, RNA_LENGTH, RNA_ALPHABET, "RNABinding.strings"), RNA_ALPHABET)

    def codes(self, strings: Sequence[str]) -> Tensor:
        """The indices into ``"UCGA"``, long [m, 14], of 14-character RNA strings."""
        return torch.from_numpy(_as_codes(list(strings), RNA_LENGTH, RNA_ALPHABET, "RNABinding.codes").astype(np.int64))

    def _energies(self, seqs: list[str]) -> list[float]:
        if self.workers == 1 or len(seqs) < self.min_pool_batch:
            return _duplex_energies(self.target, seqs)
        n = min(self.workers, len(seqs))
        bounds = [len(seqs) * i // n for i in range(n + 1)]
        pieces = [seqs[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        with self._lock:
            return self._get_pool().energies(pieces)

    def _get_pool(self) -> _WorkerPool:
        if self._pool is not None and (self._pool_pid != os.getpid() or len(self._pool.procs) != self.workers):
            if self._pool_pid == os.getpid():  # closed after a failure: start afresh
                self._shutdown()
            else:  # inherited through fork: the workers belong to the parent
                self._pool, self._finalizer = None, None
        if self._pool is None:
            self._pool = _WorkerPool(self.workers, self.target)
            self._pool_pid = os.getpid()
            self._finalizer = weakref.finalize(self, _WorkerPool.close, self._pool)
        return self._pool

    def worker_pids(self) -> list[int]:
        """The process ids of the running workers (empty before first use and after :meth:`close`)."""
        pool = self._pool
        return pool.pids() if pool is not None and self._pool_pid == os.getpid() else []

    def _shutdown(self) -> None:
        finalizer, self._pool, self._finalizer = self._finalizer, None, None
        if finalizer is not None:
            finalizer()

    def close(self) -> None:
        """Stop the workers (waits until they exit); the oracle stays usable and restarts them when needed."""
        with self._lock:
            if self._pool_pid == os.getpid():
                self._shutdown()
            self._pool, self._finalizer = None, None

    def __enter__(self) -> RNABinding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # pickling (e.g. into another process) leaves the workers behind
        state = self.__dict__.copy()
        state.update(_pool=None, _pool_pid=-1, _finalizer=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RNABinding(task={self.task}, workers={self.workers})"


# ---- reference constants ---------------------------------------------------------------------------------------
def rna_info(task: int, beta: float, data_dir: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """The row of ``rna/L14_RNA{task}_info.csv`` for β = ``beta``: reward_exp (β), logz (log Σ r^β), expected_reward
    (E[r] under p ∝ r^β), logz_scaled, expected_reward_scaled and scale (max R = 10). DataError if the file is
    malformed or has no row for this β (the files hold β = 1..50, 64 and 100)."""
    if task not in RNA_TARGETS:
        raise ConfigError(f"{option('task')}: the RNA binding task is 1, 2 or 3 (got {task!r})")
    rel = f"rna/L14_RNA{task}_info.csv"
    rows = _info_rows(rel, data_dir)
    for row in rows:
        if row["reward_exp"] == float(beta):
            return dict(row)
    betas = ", ".join(f"{r['reward_exp']:g}" for r in rows)
    raise DataError(f"data file {rel} has no row for beta {beta!r} (it has beta = {betas})")


_INFO_CACHE: dict[tuple[Path, str], list[dict[str, float]]] = {}


def _info_rows(rel: str, data_dir: str | os.PathLike[str] | None) -> list[dict[str, float]]:
    path = data_path(rel, data_dir)
    key = (path.resolve(), rel)
    if key not in _INFO_CACHE:
        text = "\n".join(_read_lines(rel, data_dir))
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != RNA_INFO_COLUMNS:
            raise DataError(
                f"data file {path} is malformed: expected the columns {', '.join(RNA_INFO_COLUMNS)} ({DATA_ENV_VAR})"
            )
        rows: list[dict[str, float]] = []
        for i, cells in enumerate(reader, start=2):
            try:
                values = [float(c) for c in cells]
            except ValueError:
                values = []
            if len(values) != len(RNA_INFO_COLUMNS) or not all(math.isfinite(v) for v in values):
                raise DataError(f"data file {path} is malformed: line {i} is not {len(RNA_INFO_COLUMNS)} numbers")
            rows.append(dict(zip(RNA_INFO_COLUMNS, values, strict=True)))
        if not rows or len({r["reward_exp"] for r in rows}) != len(rows):
            raise DataError(f"data file {path} is malformed: no rows, or a beta appears twice ({DATA_ENV_VAR})")
        _INFO_CACHE[key] = rows
    return _INFO_CACHE[key]


__all__ = [
    "RNA_ALPHABET",
    "RNA_INFO_COLUMNS",
    "RNA_LENGTH",
    "RNA_NORMS",
    "RNA_TARGETS",
    "SEH_ALPHABET",
    "SEH_LENGTH",
    "SEH_MAX",
    "SEH_MAX_STRING",
    "SEH_MODE_THRESHOLD",
    "VIENNA_MISSING",
    "RNABinding",
    "SEHProxy",
    "revcomp",
    "rna_info",
]
