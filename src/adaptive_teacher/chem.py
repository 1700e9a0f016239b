"""Molecules of the QM9 and sEH block strings, their Tanimoto distances, and a grid picture of the best ones.

RDKit is an optional extra (``pip install 'adaptive-teacher[chem]'``): this module imports it only inside the
functions that need it, and raises :class:`RDKitMissingError` (an ImportError) when it is absent. Reading the
block table (:class:`BlockChain`'s alphabet, SMILES and stems) needs no RDKit.

**The molecule** (shared/data/README.md, qm9/ and seh/; ``blocks.json`` holds ``alphabet``, ``block_name``,
``block_smi`` and ``block_r`` as lists indexed by block). Character ``alphabet[i]`` is block i. A string
x_0 … x_{L−1} is the linear chain of its blocks' fragments (RDKit ``MolFromSmiles(block_smi[x_j])``), in string
order, with one single bond per neighbouring pair:

    atom block_r[x_j][1] of block j  —  atom block_r[x_{j+1}][0] of block j+1,      j = 0 … L−2,

after which each bonded atom loses one explicit H if it has any (once per bond it takes part in, so an atom that
is both stems of a middle block, as in QM9's ``C``, loses up to two), and the result is sanitised.

**What the official code does** (read for this module; nothing copied). Kim et al.'s ``discovery/exps/qm9str/
qm9str.py`` and ``sehstr/sehstr.py`` (github.com/alstn12088/adaptive-teacher) build molecules with
``MolStrMDP.state_to_mol`` of the ``gflownet`` package they inherit from Shen et al. (github.com/maxwshen/gflownet
``gflownet/MDPs/molstrmdp.py`` and ``_blockgraphlists.py``; LS-GFN's copy, dbsxodud-11/ls_gfn, is the same; the
stored snapshot of the AT repository lacks these two files). ``state_to_bgl`` adds the first block with both of its
stems open, then attaches each next block's stem atom ``block_r[0]`` (``new_atom_idx=0``) to the *last* open stem,
which is always the previous block's ``block_r[1]`` — the chain above. ``mol_from_bgl`` combines the fragments,
adds the junction bonds as SINGLE, pops one explicit H from both ends of every junction bond (``_pop_H``) and calls
``Chem.SanitizeMol``. Matched exactly. Blocks are read with ``pandas.read_json``, in key order 0..n−1, which is
the list order of our ``blocks.json``.

Distance: ``dist_states(x, y) = 1 − FingerprintSimilarity(fp(x), fp(y))`` (FingerprintSimilarity's default
metric is Tanimoto) with ``fp = GetMorganFingerprintAsBitVect(mol, 2, nBits=1024)``: Morgan radius 2, 1,024
bits, no chirality. RDKit 2026 deprecates that function; :func:`morgan_fingerprint` uses
``rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)``, whose bits are identical (checked on all
934 mode molecules in tests/test_chem.py). The sEH modes use this distance: a greedy pass over the candidates
keeps one whose distance to every kept mode is > 0.4 (the official code rejects at ``<= 0.4``).

Diversity: Kim et al.'s ``Trainer.evaluate`` reports *no* diversity (only expected-reward gaps, log Z, ELBO/EUBO,
Pearson correlation and mode counts); ``make_monitor`` builds a ``Monitor(dist_func=dist_states)`` that the
trainer never calls. In the monitor of that code base (LS-GFN's ``gflownet/monitor.py``, from which qm9str.py
imports ``diversity``; AT's own copy is not in the stored snapshot) ``diversity(xs) = Σ_{i<j} d(x_i, x_j) /
(n(n−1))`` — *half* the mean pairwise distance — logged as "TopK diversity" over the 100 distinct highest-reward
samples of the whole history; Shen et al.'s original ``mean_pair_diversity`` divides the same sum by C(n, 2).
:func:`mean_pairwise_tanimoto_distance` is the mean pairwise Tanimoto *distance* (Shen et al.'s definition;
halve it for LS-GFN's number), over the samples exactly as given (repeats count, as in Shen et al.'s "recent"
diversity; pass distinct strings for the top-k version).

Note: different strings can give the same molecule (a chain read backwards when every block's two stems are one
atom, e.g. QM9 ``00011`` and ``11000`` are both CCCOO), so distinct strings can be at distance 0: the 805 QM9
modes are only 448 molecules (357 string/reversed-string pairs, each with equal raw rewards to float32 rounding,
≤ 3e-6).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptive_teacher.biochem import data_path
from adaptive_teacher.errors import AdaptiveTeacherError, ConfigError, DataError, option

if TYPE_CHECKING:
    from rdkit.Chem import Mol
    from rdkit.DataStructs import ExplicitBitVect

RDKIT_MISSING_MESSAGE = (
    "drawing and comparing molecules needs RDKit: pip install 'adaptive-teacher[chem]' (or pip install rdkit)"
)
FP_RADIUS = 2  # official get_morgan_fp: GetMorganFingerprintAsBitVect(mol, 2, nBits=1024)
FP_BITS = 1024
TASK_BLOCKS = {"qm9": "qm9/blocks.json", "seh": "seh/blocks.json"}
TASK_LENGTH = {"qm9": 5, "seh": 6}  # the string length of each task (used to infer the task)
_FP_CACHE_MAX = 1 << 16  # fingerprints kept per BlockChain


class RDKitMissingError(AdaptiveTeacherError, ImportError):
    """RDKit is not installed; the message says how to install it."""


def _rdkit() -> tuple[Any, Any]:
    """``(rdkit.Chem, rdkit.DataStructs)``, or RDKitMissingError."""
    try:
        from rdkit import Chem, DataStructs
    except ImportError as e:
        raise RDKitMissingError(RDKIT_MISSING_MESSAGE) from e
    return Chem, DataStructs


def has_rdkit() -> bool:
    """Whether RDKit can be imported (the molecule functions of this module need it)."""
    try:
        _rdkit()
    except RDKitMissingError:
        return False
    return True


# ---- fingerprints and distances ----------------------------------------------------------------------------
_GENERATORS: dict[tuple[int, int], Any] = {}


def morgan_fingerprint(mol: Mol, radius: int = FP_RADIUS, n_bits: int = FP_BITS) -> ExplicitBitVect:
    """The Morgan bit vector of ``mol`` (radius 2, 1,024 bits by default, no chirality): the bits of the official
    ``GetMorganFingerprintAsBitVect(mol, 2, nBits=1024)``, computed with RDKit's MorganGenerator."""
    _rdkit()
    from rdkit.Chem import rdFingerprintGenerator

    key = (int(radius), int(n_bits))
    gen = _GENERATORS.get(key)
    if gen is None:
        gen = _GENERATORS[key] = rdFingerprintGenerator.GetMorganGenerator(radius=key[0], fpSize=key[1])
    return gen.GetFingerprint(mol)


def _as_fps(items: Sequence[Any], radius: int, n_bits: int) -> list[Any]:
    Chem, _ = _rdkit()
    return [morgan_fingerprint(m, radius, n_bits) if isinstance(m, Chem.Mol) else m for m in items]


def tanimoto_distances(
    mols_or_fps: Sequence[Any],
    others: Sequence[Any] | None = None,
    *,
    radius: int = FP_RADIUS,
    n_bits: int = FP_BITS,
) -> np.ndarray:
    """The float64 matrix D[i, j] = 1 − T(a_i, b_j), T(a, b) = |a ∧ b| / |a ∨ b| (Tanimoto on bit vectors), of
    ``mols_or_fps`` against ``others`` (default: against itself, so D is symmetric with a zero diagonal).
    Items are RDKit Mols (fingerprinted with :func:`morgan_fingerprint`) or RDKit bit vectors; one
    ``BulkTanimotoSimilarity`` call per row."""
    _, DataStructs = _rdkit()
    a = _as_fps(list(mols_or_fps), radius, n_bits)
    b = a if others is None else _as_fps(list(others), radius, n_bits)
    out = np.empty((len(a), len(b)), dtype=np.float64)
    if len(b) == 0:
        return out
    for i, fp in enumerate(a):
        out[i] = DataStructs.BulkTanimotoSimilarity(fp, b)
    np.subtract(1.0, out, out=out)
    if others is None:
        np.fill_diagonal(out, 0.0)  # T(a, a) = 1 (RDKit gives 0 for two empty vectors; no molecule has one)
    return out


# ---- the block chain ---------------------------------------------------------------------------------------
class BlockChain:
    """The block table of task ``"qm9"`` (11 blocks) or ``"seh"`` (18 blocks), read from ``<task>/blocks.json``
    of the data folder (:func:`adaptive_teacher.biochem.data_path`), and the linear-chain molecule of a string.

    A string is given as text in the task alphabet (``"0123456789a"``, ``"0123456789abcdefgh"``) or as a sequence
    of block indices. See the module docstring for the rule (the official ``MolStrMDP.state_to_mol``)."""

    def __init__(self, task: str, data_dir: str | os.PathLike[str] | None = None):
        if task not in TASK_BLOCKS:
            raise ConfigError(f"{option('task')} must be one of {sorted(TASK_BLOCKS)} for molecules, not {task!r}")
        self.task = task
        self.path = data_path(TASK_BLOCKS[task], data_dir)
        import json

        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            alphabet, smi, rs = raw["alphabet"], raw["block_smi"], raw["block_r"]
            names = raw.get("block_name", smi)
            ok = (
                isinstance(alphabet, str)
                and len(set(alphabet)) == len(alphabet) > 0
                and all(len(v) == len(alphabet) for v in (smi, rs, names))
                and all(isinstance(s, str) for s in smi)
                and all(len(r) == 2 and all(isinstance(k, int) and k >= 0 for k in r) for r in rs)
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"data file {self.path} is malformed: {type(e).__name__}: {e}") from e
        if not ok:
            raise DataError(
                f"data file {self.path} is malformed: expected an alphabet and, per block, a SMILES and two stem "
                "atom indices (block_r)"
            )
        self.alphabet: str = alphabet
        self.block_smi: list[str] = list(smi)
        self.block_name: list[str] = [str(n) for n in names]
        self.block_r: list[tuple[int, int]] = [(int(r[0]), int(r[1])) for r in rs]
        self._index = {c: i for i, c in enumerate(alphabet)}
        self._frags: list[Any] | None = None
        self._fps: dict[tuple[tuple[int, ...], int, int], Any] = {}

    def __repr__(self) -> str:
        return f"BlockChain({self.task!r}, {len(self.alphabet)} blocks, {str(self.path)!r})"

    @property
    def n_blocks(self) -> int:
        return len(self.alphabet)

    def block_ids(self, blocks: str | Sequence[int]) -> tuple[int, ...]:
        """The block indices of a string (characters of the alphabet) or of a sequence of indices (checked)."""
        if isinstance(blocks, str):
            try:
                ids = tuple(self._index[c] for c in blocks)
            except KeyError as e:
                raise ValueError(
                    f"{blocks!r} has character {e.args[0]!r}, not in the {self.task} alphabet {self.alphabet!r}"
                ) from None
        else:
            ids = tuple(int(b) for b in blocks)
            bad = [b for b in ids if not 0 <= b < self.n_blocks]
            if bad:
                raise ValueError(f"block index {bad[0]} out of range 0..{self.n_blocks - 1} for {self.task}")
        if not ids:
            raise ValueError("an empty string has no molecule")
        return ids

    def to_string(self, blocks: str | Sequence[int]) -> str:
        """The string (in the task alphabet) of a block sequence."""
        return "".join(self.alphabet[b] for b in self.block_ids(blocks))

    def _fragments(self) -> list[Any]:
        if self._frags is None:
            Chem, _ = _rdkit()
            frags = []
            for i, smi in enumerate(self.block_smi):
                frag = Chem.MolFromSmiles(smi)
                if frag is None or max(self.block_r[i]) >= frag.GetNumAtoms():
                    raise DataError(f"data file {self.path}: block {i} ({smi!r}, stems {self.block_r[i]}) is invalid")
                frags.append(frag)
            self._frags = frags
        return self._frags

    def molecule(self, blocks: str | Sequence[int]) -> Mol:
        """The sanitised RDKit molecule of a string: fragments in order, atom ``block_r[x_j][1]`` of block j
        single-bonded to atom ``block_r[x_{j+1}][0]`` of block j+1, one explicit H popped from both atoms of
        every such bond when they have one (Shen et al.'s ``mol_from_bgl``, used by Kim et al.)."""
        Chem, _ = _rdkit()
        ids = self.block_ids(blocks)
        frags = self._fragments()
        mol, starts = frags[ids[0]], [0]
        for b in ids[1:]:
            starts.append(mol.GetNumAtoms())
            mol = Chem.CombineMols(mol, frags[b])
        rw = Chem.RWMol(mol)
        for j in range(len(ids) - 1):
            a = starts[j] + self.block_r[ids[j]][1]
            b = starts[j + 1] + self.block_r[ids[j + 1]][0]
            rw.AddBond(a, b, Chem.BondType.SINGLE)
            for idx in (a, b):
                atom = rw.GetAtomWithIdx(idx)
                nh = atom.GetNumExplicitHs()
                if nh > 0:
                    atom.SetNumExplicitHs(nh - 1)
        out = rw.GetMol()
        Chem.SanitizeMol(out)
        return out

    def from_string(self, s: str) -> Mol:
        """The molecule of the string ``s`` in the task alphabet (same as ``molecule(s)``)."""
        if not isinstance(s, str):
            raise TypeError(f"from_string takes a str in the alphabet {self.alphabet!r}, not {type(s).__name__}")
        return self.molecule(s)

    def smiles(self, blocks: str | Sequence[int]) -> str:
        """The canonical SMILES (RDKit ``MolToSmiles``) of the molecule of a string."""
        Chem, _ = _rdkit()
        return Chem.MolToSmiles(self.molecule(blocks))

    def fingerprint(self, blocks: str | Sequence[int], radius: int = FP_RADIUS, n_bits: int = FP_BITS) -> Any:
        """The Morgan fingerprint (:func:`morgan_fingerprint`) of the molecule of a string, cached."""
        key = (self.block_ids(blocks), int(radius), int(n_bits))
        fp = self._fps.get(key)
        if fp is None:
            if len(self._fps) >= _FP_CACHE_MAX:
                self._fps.clear()
            fp = self._fps[key] = morgan_fingerprint(self.molecule(key[0]), radius, n_bits)
        return fp

    def fingerprints(self, items: Sequence[str | Sequence[int]], radius: int = FP_RADIUS, n_bits: int = FP_BITS):
        """The fingerprints of several strings (a list, in order)."""
        return [self.fingerprint(x, radius, n_bits) for x in items]


_CHAINS: dict[tuple[str, Path], BlockChain] = {}


def block_chain(task: str, data_dir: str | os.PathLike[str] | None = None) -> BlockChain:
    """The :class:`BlockChain` of ``task``, shared per task and data file (so its fingerprint cache is too)."""
    if task not in TASK_BLOCKS:
        raise ConfigError(f"{option('task')} must be one of {sorted(TASK_BLOCKS)} for molecules, not {task!r}")
    key = (task, data_path(TASK_BLOCKS[task], data_dir).resolve())
    chain = _CHAINS.get(key)
    if chain is None:
        chain = _CHAINS[key] = BlockChain(task, data_dir)
    return chain


def _resolve_chain(
    task: str | BlockChain | None, items: Sequence[Any], data_dir: str | os.PathLike[str] | None
) -> BlockChain:
    if isinstance(task, BlockChain):
        return task
    if task is None:
        lengths = {len(x) for x in items}
        found = [t for t, n in TASK_LENGTH.items() if lengths == {n}]
        if len(found) != 1:
            raise ConfigError(
                f"cannot tell the task from string lengths {sorted(lengths)} (QM9 strings have 5 blocks, sEH 6): "
                f"pass {option('task')}='qm9' or 'seh'"
            )
        task = found[0]
    return block_chain(task, data_dir)


def mean_pairwise_tanimoto_distance(
    items: Sequence[str | Sequence[int]],
    task: str | BlockChain | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    radius: int = FP_RADIUS,
    n_bits: int = FP_BITS,
) -> float:
    """Mean Tanimoto distance over the n(n−1)/2 unordered pairs of ``items`` (strings or block lists):

        div = (2 / (n(n−1))) Σ_{i<j} (1 − T(fp(x_i), fp(x_j))),   fp = Morgan radius 2, 1,024 bits,

    Shen et al.'s ``mean_pair_diversity`` with Kim et al.'s ``dist_states`` (LS-GFN's ``diversity`` is half of
    it). Repeats count as given (a repeated pair has distance 0); computed once per distinct string, as
    c·D·c / (n(n−1)) with c the multiplicities. ``task`` is "qm9", "seh" or a BlockChain; when omitted it is
    inferred from the string length (5 → QM9, 6 → sEH)."""
    items = list(items)
    n = len(items)
    if n < 2:
        raise ValueError(f"a mean pairwise distance needs at least 2 samples, got {n}")
    chain = _resolve_chain(task, items, data_dir)
    keys = [chain.block_ids(x) for x in items]
    unique: dict[tuple[int, ...], int] = {}
    for k in keys:
        unique[k] = unique.get(k, 0) + 1
    counts = np.fromiter(unique.values(), dtype=np.float64, count=len(unique))
    dist = tanimoto_distances(chain.fingerprints(list(unique), radius, n_bits))
    return float(counts @ dist @ counts / (n * (n - 1)))


# ---- drawing -----------------------------------------------------------------------------------------------
def _to_pil(img: Any) -> Any:
    """MolsToGridImage's result as a PIL image (it is one unless IPython's RDKit renderer wraps it as PNG)."""
    from PIL import Image

    if isinstance(img, Image.Image):
        return img
    data = img if isinstance(img, bytes | bytearray) else getattr(img, "data", None)
    if not isinstance(data, bytes | bytearray):
        raise TypeError(f"unexpected MolsToGridImage result {type(img).__name__}")
    import io

    return Image.open(io.BytesIO(data))


def _with_title(img: Any, title: str) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=20)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    band = 36
    out = Image.new("RGB", (img.width, img.height + band), "white")
    out.paste(img.convert("RGB"), (0, band))
    draw = ImageDraw.Draw(out)
    width = draw.textlength(title, font=font)
    draw.text((max(4.0, (img.width - width) / 2), 8), title, fill="black", font=font)
    return out


def draw_top_molecules(
    strings: Sequence[str],
    rewards: Sequence[float] | np.ndarray | Any,
    path: str | os.PathLike[str],
    n: int = 16,
    per_row: int = 4,
    title: str | None = None,
    *,
    task: str | BlockChain | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    sub_img_size: tuple[int, int] = (250, 250),
) -> Path:
    """Write a PNG grid (RDKit ``Draw.MolsToGridImage`` with legends) of the ``n`` distinct strings of highest
    reward, best first, ``per_row`` per row, each labelled with its string and reward; ``title`` (optional) is a
    line above the grid. A string seen several times counts once, with its highest reward; NaN rewards rank
    last. ``task`` as in :func:`mean_pairwise_tanimoto_distance`. Returns the path written."""
    _rdkit()
    from rdkit.Chem import Draw

    strings = list(strings)
    if hasattr(rewards, "detach"):  # a torch tensor, without importing torch here
        rewards = rewards.detach().cpu().numpy()
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if len(strings) != len(r):
        raise ValueError(f"{len(strings)} strings but {len(r)} rewards")
    if not strings:
        raise ValueError("no strings to draw")
    if n < 1:
        raise ConfigError(f"{option('n')} must be ≥ 1, got {n}")
    if per_row < 1:
        raise ConfigError(f"{option('per_row')} must be ≥ 1, got {per_row}")
    chain = _resolve_chain(task, strings, data_dir)
    best: dict[str, float] = {}
    for s, v in zip(strings, r, strict=True):
        key = chain.to_string(s)
        v = -math.inf if math.isnan(v) else float(v)
        if key not in best or v > best[key]:
            best[key] = v
    top = sorted(best.items(), key=lambda kv: -kv[1])[:n]  # stable: ties keep first appearance
    mols = [chain.molecule(s) for s, _ in top]
    legends = [f"{s}   R = {v:.4g}" for s, v in top]
    img = Draw.MolsToGridImage(
        mols, molsPerRow=min(per_row, len(mols)), subImgSize=tuple(sub_img_size), legends=legends
    )
    img = _to_pil(img)
    if title:
        img = _with_title(img, title)
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format="PNG")
    return out
