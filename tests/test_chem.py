"""Molecules of the QM9/sEH block strings, Tanimoto distances and the top-molecule grid (adaptive_teacher.chem).

The expected SMILES below are worked out by hand from shared/data/README.md's rule (atom block_r[1] of block j
single-bonded to atom block_r[0] of block j+1, one explicit H popped from each bonded atom) and compared after
RDKit canonicalisation. The sEH check that the 129 modes are pairwise at distance > 0.4 is the README's mode
definition, so it tests the rule and the fingerprint end to end (reversed stems give 74 pairs ≤ 0.4; 2,048 bits
give 2; radius 1 gives 1,881).
"""

from __future__ import annotations

import builtins
import sys

import numpy as np
import pytest

from adaptive_teacher import chem
from adaptive_teacher.biochem import data_path
from adaptive_teacher.errors import ConfigError, DataError

Chem = pytest.importorskip("rdkit.Chem")
from rdkit import DataStructs  # noqa: E402
from rdkit.Chem.rdMolDescriptors import CalcMolFormula  # noqa: E402


def canon(smiles: str) -> str:
    mol = Chem.MolFromSmiles(smiles)
    assert mol is not None, smiles
    return Chem.MolToSmiles(mol)


def modes(task: str) -> list[str]:
    return data_path(f"{task}/modes.txt").read_text(encoding="ascii").split()


@pytest.fixture(scope="module")
def qm9() -> chem.BlockChain:
    return chem.block_chain("qm9")


@pytest.fixture(scope="module")
def seh() -> chem.BlockChain:
    return chem.block_chain("seh")


# ---- the block table ---------------------------------------------------------------------------------------
def test_block_tables(qm9, seh):
    assert qm9.alphabet == "0123456789a" and seh.alphabet == "0123456789abcdefgh"
    assert qm9.block_smi[:5] == ["C", "O", "N", "CF", "C=O"] and qm9.block_r[7] == (0, 3)
    assert seh.n_blocks == 18 and seh.block_smi[0] == "CO" and seh.block_r[0] == (1, 0)
    assert qm9.block_ids("0a9") == (0, 10, 9) == qm9.block_ids([0, 10, 9])
    assert qm9.to_string([0, 10, 9]) == "0a9"
    with pytest.raises(ValueError, match="alphabet"):
        qm9.block_ids("0b")
    with pytest.raises(ValueError, match="out of range"):
        qm9.block_ids([11])
    with pytest.raises(ValueError, match="empty"):
        qm9.molecule("")
    with pytest.raises(ConfigError, match="task"):
        chem.BlockChain("tfbind8")


def test_missing_data_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="qm9/blocks.json"):
        chem.BlockChain("qm9", data_dir=tmp_path)


# ---- molecules derived by hand -----------------------------------------------------------------------------
QM9_BY_HAND = {
    "012": ("CON", "CH5NO"),  # C–O–N: methoxyamine
    "00000": ("CCCCC", "C5H12"),
    "44": ("O=CC=O", "C2H2O2"),  # glyoxal: both stems of C=O are the carbon
    "33333": ("FCC(F)C(F)C(F)CF", "C5H7F5"),  # every carbon of the chain keeps its F
    "55555": ("C=CC=CC=CC=CC=C", "C10H12"),  # C=C enters at atom 0, leaves at atom 1
    "66": ("C#CC#C", "C4H2"),
    "777": ("c1ccc(-c2ccc(-c3ccccc3)cc2)cc1", "C18H14"),  # benzene stems 0 and 3: para-terphenyl
    "08": ("CC1CCCCC1", "C7H14"),
    "90": ("CC1CCCN1", "C5H11N"),  # pyrrolidine C1CCNC1 leaves at atom 2 (next to N): 2-methyl
    "09": ("CC1CCNC1", "C5H11N"),  # ... and is entered at atom 0 (C0–C4–N3): 3-methyl
    # CCC joined at atom 0 on both sides: a backbone of five atom-0 carbons, each with an ethyl
    "aaaaa": ("CCCC(CC)C(CC)C(CC)CCC", "C15H32"),
    "0a0": ("CCC(C)C", "C5H12"),
}

SEH_BY_HAND = {
    "02": "OCS",  # CO leaves at its C (atom 0), S enters: HO–CH2–SH (reversed stems would give CH3–O–SH)
    "00": "COCO",  # CO enters at O (atom 1): HO–CH2–O–CH3
    "12": "O=c1[nH]cnc2c1ncn2S",  # leaves at [nH] (atom 6), which loses its H
    "24": "S[n+]1ccccc1",  # enters pyridinium at [nH+] (atom 3), which loses its H
}


@pytest.mark.parametrize("s", sorted(QM9_BY_HAND))
def test_qm9_molecules_by_hand(qm9, s):
    smiles, formula = QM9_BY_HAND[s]
    mol = qm9.molecule(s)
    assert qm9.smiles(s) == canon(smiles)
    assert CalcMolFormula(mol) == formula
    assert Chem.MolToSmiles(qm9.from_string(s)) == canon(smiles)
    assert qm9.smiles(qm9.block_ids(s)) == canon(smiles)


@pytest.mark.parametrize("s", sorted(SEH_BY_HAND))
def test_seh_molecules_by_hand(seh, s):
    assert seh.smiles(s) == canon(SEH_BY_HAND[s])


def test_single_blocks_are_the_block_smiles(qm9, seh):
    for chain in (qm9, seh):
        for i, smi in enumerate(chain.block_smi):
            assert chain.smiles([i]) == canon(smi)


# ---- the mode files ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("task", "count"), [("qm9", 805), ("seh", 129)])
def test_every_mode_builds_a_sanitized_molecule(task, count):
    chain = chem.block_chain(task)
    strings = modes(task)
    assert len(strings) == count
    for s in strings:
        mol = chain.molecule(s)
        assert Chem.SanitizeMol(mol) == Chem.SanitizeFlags.SANITIZE_NONE
        assert Chem.MolFromSmiles(Chem.MolToSmiles(mol)) is not None


def test_seh_modes_are_pairwise_farther_than_0_4(seh):
    strings = modes("seh")
    dist = chem.tanimoto_distances(seh.fingerprints(strings))
    upper = dist[np.triu_indices(len(strings), 1)]
    assert upper.min() > 0.4, f"closest modes at Tanimoto distance {upper.min()}"
    # the README's greedy pass over the modes themselves, in string order, keeps all of them
    kept = []
    for i in range(len(strings)):
        if all(dist[i, j] > 0.4 for j in kept):
            kept.append(i)
    assert len(kept) == 129


def test_generator_bits_equal_the_official_fingerprint_function():
    from rdkit import rdBase
    from rdkit.Chem import rdMolDescriptors

    for task in ("qm9", "seh"):
        chain = chem.block_chain(task)
        strings = modes(task)
        blocker = rdBase.BlockLogs()  # the legacy function logs a deprecation warning per call
        legacy = [rdMolDescriptors.GetMorganFingerprintAsBitVect(chain.molecule(s), 2, nBits=1024) for s in strings]
        del blocker
        assert [fp.ToBitString() for fp in legacy] == [chain.fingerprint(s).ToBitString() for s in strings]


# ---- distances ---------------------------------------------------------------------------------------------
def test_tanimoto_distances(qm9, seh):
    mols = [seh.molecule(s) for s in modes("seh")[:5]]
    d = chem.tanimoto_distances(mols)
    assert d.shape == (5, 5) and np.array_equal(d, d.T) and np.all(np.diag(d) == 0.0)
    assert np.all((d[~np.eye(5, dtype=bool)] > 0) & (d[~np.eye(5, dtype=bool)] <= 1))
    fps = [chem.morgan_fingerprint(m) for m in mols]
    assert np.array_equal(chem.tanimoto_distances(fps), d)  # Mols and fingerprints give the same
    assert d[0, 1] == pytest.approx(1 - DataStructs.TanimotoSimilarity(fps[0], fps[1]))
    cross = chem.tanimoto_distances(mols[:2], fps)
    assert cross.shape == (2, 5) and np.array_equal(cross, d[:2])
    one = qm9.molecule("01234")
    assert chem.tanimoto_distances([one, qm9.molecule("01234")])[0, 1] == 0.0  # a molecule to itself
    assert chem.tanimoto_distances([one], [qm9.molecule("01234")])[0, 0] == 0.0
    assert chem.mean_pairwise_tanimoto_distance(["00011", "11000"], "qm9") == 0.0  # same molecule CCCOO


def test_mean_pairwise_distance(qm9, seh):
    strings = modes("seh")[:20]
    d = chem.tanimoto_distances(seh.fingerprints(strings))
    mean = d[np.triu_indices(20, 1)].mean()
    assert chem.mean_pairwise_tanimoto_distance(strings, "seh") == pytest.approx(mean, rel=1e-12)
    assert chem.mean_pairwise_tanimoto_distance(strings) == pytest.approx(mean, rel=1e-12)  # inferred: length 6
    blocks = [list(seh.block_ids(s)) for s in strings]
    assert chem.mean_pairwise_tanimoto_distance(blocks, seh) == pytest.approx(mean, rel=1e-12)
    # repeats count as given: the multiplicity shortcut equals the plain mean over all pairs
    rep = strings[:3] * 2 + strings[3:5]
    fps = seh.fingerprints(rep)
    plain = np.mean([1 - DataStructs.TanimotoSimilarity(fps[i], fps[j]) for i in range(8) for j in range(i + 1, 8)])
    assert chem.mean_pairwise_tanimoto_distance(rep, "seh") == pytest.approx(plain, rel=1e-12)
    assert chem.mean_pairwise_tanimoto_distance(["00000", "00000"], "qm9") == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        chem.mean_pairwise_tanimoto_distance(["00000"], "qm9")
    with pytest.raises(ConfigError, match="task"):
        chem.mean_pairwise_tanimoto_distance(["0000", "1111"])


# ---- drawing -----------------------------------------------------------------------------------------------
def test_draw_top_molecules(tmp_path):
    from PIL import Image

    strings = modes("qm9")[:30] + ["00000", "00000"]
    rewards = np.linspace(0.0, 1.0, len(strings))
    out = chem.draw_top_molecules(strings, rewards, tmp_path / "sub" / "top.png", n=6, per_row=3, title="QM9 top")
    assert out == tmp_path / "sub" / "top.png" and out.stat().st_size > 1000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as img:
        assert img.size == (750, 500 + 36)  # 3 × 2 cells of 250 px, plus the title band
    plain = chem.draw_top_molecules(["a050c0", "a0535c"], [2.0, float("nan")], tmp_path / "seh.png", task="seh")
    with Image.open(plain) as img:
        assert img.size == (500, 250)  # two molecules: one row, no title
    with pytest.raises(ValueError, match="rewards"):
        chem.draw_top_molecules(["00000"], [1.0, 2.0], tmp_path / "x.png")


# ---- without RDKit -----------------------------------------------------------------------------------------
def _check_missing(qm9_chain):
    assert not chem.has_rdkit()
    for call in (
        lambda: qm9_chain.molecule("01234"),
        lambda: chem.mean_pairwise_tanimoto_distance(["01234", "00000"], "qm9"),
        lambda: chem.tanimoto_distances([]),
        lambda: chem.draw_top_molecules(["01234"], [1.0], "never.png"),
    ):
        with pytest.raises(ImportError) as info:
            call()
        assert isinstance(info.value, chem.RDKitMissingError)
        assert str(info.value) == chem.RDKIT_MISSING_MESSAGE
    assert chem.RDKIT_MISSING_MESSAGE == (
        "drawing and comparing molecules needs RDKit: pip install 'adaptive-teacher[chem]' (or pip install rdkit)"
    )


def test_missing_rdkit_via_sys_modules(monkeypatch):
    chain = chem.BlockChain("qm9")  # reading the block table needs no RDKit ...
    for name in [m for m in sys.modules if m == "rdkit" or m.startswith("rdkit.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "rdkit", None)
    assert chem.BlockChain("seh").n_blocks == 18
    _check_missing(chain)  # ... but molecules do


def test_missing_rdkit_via_import(monkeypatch):
    chain = chem.BlockChain("qm9")
    real = builtins.__import__

    def no_rdkit(name, *args, **kwargs):
        if name == "rdkit" or name.startswith("rdkit."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rdkit)
    _check_missing(chain)
    monkeypatch.undo()
    assert chem.has_rdkit()
