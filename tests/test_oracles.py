"""The sEH proxy and the L14-RNA binding oracle against the reference values of shared/data/README.md."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptive_teacher import oracles
from adaptive_teacher.biochem import data_path
from adaptive_teacher.errors import ConfigError, DataError, RewardError
from adaptive_teacher.oracles import SEH_ALPHABET, SEH_MAX, RNABinding, SEHProxy, rna_info

SRC = str(Path(oracles.__file__).resolve().parents[1])


# ---- sEH -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def proxy() -> SEHProxy:
    return SEHProxy()


@pytest.fixture(scope="module")
def trees() -> dict[str, np.ndarray]:
    with np.load(data_path("seh/gbr_trees.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def slow_walk(strings: list[str], g: dict[str, np.ndarray]) -> np.ndarray:
    """Reference: walk every tree of every string in plain Python, summing baseline, tree 0, ..., tree 99 in
    float64 in that order (go right iff the block at position f // 18 is f % 18)."""
    value, feat, left, right = g["value"].tolist(), g["feature_idx"].tolist(), g["left"].tolist(), g["right"].tolist()
    leaf, off = g["is_leaf"].tolist(), g["tree_offsets"].tolist()
    out = []
    for s in strings:
        x = [SEH_ALPHABET.index(c) for c in s]
        total = float(g["baseline"])
        for t in range(len(off) - 1):
            base, node = off[t], 0
            while not leaf[base + node]:
                f = feat[base + node]
                node = right[base + node] if x[f // 18] == f % 18 else left[base + node]
            total += value[base + node]
        out.append(total)
    return np.array(out)


def test_seh_maximum_at_ag550c(proxy: SEHProxy) -> None:
    assert oracles.SEH_MAX_STRING == "ag550c"
    assert proxy(["ag550c"])[0] == SEH_MAX == 7.033253064721926
    codes = proxy.codes(["ag550c"])
    assert codes.tolist() == [[10, 16, 5, 5, 0, 12]]
    out = proxy(codes)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.item() == SEH_MAX


def test_seh_bit_identical_to_a_tree_walk(proxy: SEHProxy, trees: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 18, (2000, 6))
    modes = data_path("seh/modes.txt").read_text().split()
    assert len(modes) == 129
    strings = proxy.strings(x) + modes
    ref = slow_walk(strings, trees)
    codes = np.concatenate([x, proxy.codes(modes).numpy()])
    assert np.array_equal(proxy(codes), ref)  # large-batch path
    assert np.array_equal(proxy(strings), ref)
    assert torch.equal(proxy(torch.from_numpy(codes).to(torch.uint8)), torch.from_numpy(ref))
    for lo in range(0, 400, 37):  # small-batch path (cumsum), uneven sizes
        assert np.array_equal(proxy(codes[lo : lo + 37]), ref[lo : lo + 37])
    assert np.array_equal(np.concatenate([proxy(codes[i : i + 1]) for i in range(50)]), ref[:50])
    mode_pred = ref[-129:]
    assert mode_pred.min() >= 6.8183016 and abs(mode_pred.min() - 6.8183017276) < 1e-9
    assert abs(mode_pred.max() - 6.9599067036) < 1e-9
    assert ref.max() < SEH_MAX


def test_seh_true_samples_mean(proxy: SEHProxy) -> None:
    samples = data_path("seh/true_samples_beta6.txt").read_text().split()
    assert len(samples) == 2048
    assert abs(float(proxy(samples).mean()) - 5.3801) < 1e-4


def test_seh_output_types_and_empty_batch(proxy: SEHProxy) -> None:
    empty = proxy(torch.zeros((0, 6), dtype=torch.long))
    assert isinstance(empty, torch.Tensor) and empty.shape == (0,) and empty.dtype == torch.float64
    assert proxy(np.zeros((0, 6), dtype=np.int64)).shape == (0,)
    assert proxy([]).shape == (0,)
    out = proxy(np.zeros((3, 6), dtype=np.int32))
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (3,)
    assert proxy.strings(torch.tensor([[10, 16, 5, 5, 0, 12]])) == ["ag550c"]
    assert SEHProxy()._leaf_value is proxy._leaf_value  # one table per data file and process


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros((4, 5), dtype=torch.long),
        torch.zeros(6, dtype=torch.long),
        torch.zeros((2, 6, 1), dtype=torch.long),
        torch.zeros((4, 6)),  # float
        torch.zeros((4, 6), dtype=torch.bool),
        torch.full((4, 6), 18),
        torch.tensor([[0, 0, 0, 0, 0, -1]]),
        np.full((2, 6), 255, dtype=np.uint8),
        ["ag550"],
        ["ag550cc"],
        ["ag550z"],
        ["AG550C"],
        "ag550c",
        [123456],
        42,
    ],
)
def test_seh_rejects_malformed_input(proxy: SEHProxy, bad: object) -> None:
    with pytest.raises(RewardError, match=r"\[m, 6\].*0\.\.17.*0123456789abcdefgh") as info:
        proxy(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


Edit = Callable[[np.ndarray], np.ndarray] | None


def _broken(trees: dict[str, np.ndarray], key: str, fn: Edit) -> dict[str, np.ndarray]:
    out = {k: v.copy() for k, v in trees.items()}
    if fn is None:
        del out[key]
    else:
        out[key] = fn(out[key])
    return out


def _set(i: int, v: float) -> Edit:
    def fn(a: np.ndarray) -> np.ndarray:
        a[i] = v
        return a

    return fn


@pytest.mark.parametrize(
    ("key", "fn", "why"),
    [
        ("value", None, "lacks value"),
        ("tree_offsets", lambda a: a[:-1], "tree_offsets"),
        ("tree_offsets", _set(1, 0), "tree_offsets"),
        ("left", lambda a: a[:-1], "shape"),
        ("left", _set(1, 0), "child index"),  # a cycle back to the root
        ("right", _set(0, 1), "form trees"),  # node 1 has two parents, node 50 none
        ("feature_idx", _set(0, 108), "feature"),
        ("threshold", _set(0, 1.5), "threshold"),
        ("is_leaf", lambda a: a.astype(np.int8), "bool"),
        ("value", _set(60, np.nan), "finite"),
        ("alphabet", lambda a: np.array("0123456789abcdefgX"), "alphabet"),
    ],
)
def test_seh_rejects_malformed_trees(trees: dict[str, np.ndarray], key: str, fn: Edit, why: str) -> None:
    assert trees["is_leaf"][60] and not trees["is_leaf"][0]  # the nodes the edits rely on
    with pytest.raises(DataError, match=f"my_trees.npz is malformed.*{why}"):
        SEHProxy.from_arrays(_broken(trees, key, fn), source="my_trees.npz")


def test_seh_good_arrays_and_missing_file(trees: dict[str, np.ndarray], proxy: SEHProxy, tmp_path: Path) -> None:
    again = SEHProxy.from_arrays(trees)
    assert np.array_equal(again._leaf_value, proxy._leaf_value)
    with pytest.raises(DataError, match="seh/gbr_trees.npz"):
        SEHProxy(data_dir=tmp_path)
    (tmp_path / "seh").mkdir()
    (tmp_path / "seh" / "gbr_trees.npz").write_bytes(b"not an npz")
    with pytest.raises(DataError, match="4140642571f0de1e"):  # names the expected sha256
        SEHProxy(data_dir=tmp_path)


# ---- RNA -------------------------------------------------------------------------------------------------------
SPOTS = {
    "AUGGGCCGGACCCC": 0.543747,
    "GCCCCGCCGGAAUG": 0.650849,
    "UCUUGGGGACUUUU": 0.280112,
    "AAAAAAAAAAAAAA": -0.074147,
    "CCGCGGGGGUCCCC": 0.818367,
}
BEST = "GGGGGCCCCGCGCG"


@pytest.fixture(scope="module")
def rna1() -> Iterator[RNABinding]:
    pytest.importorskip("RNA")
    with RNABinding(1, workers=1) as oracle:
        yield oracle


def test_rna1_reference_values(rna1: RNABinding) -> None:
    got = rna1(list(SPOTS))
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, list(SPOTS.values()), rtol=0, atol=1e-6)
    assert abs(rna1([BEST])[0] - 1.0545394628) < 1e-9
    assert abs(10 / rna_info(1, 1)["scale"] - rna1([BEST])[0]) < 1e-6  # the global maximum of the csv


@pytest.mark.parametrize(("task", "norm"), [(1, -36.414), (2, -37.842), (3, -30.184)])
def test_rna_norms_and_targets(task: int, norm: float) -> None:
    pytest.importorskip("RNA")
    oracle = RNABinding(task, workers=1)
    assert abs(oracle.norm - norm) < 1e-3
    assert len(oracle.target) == 100 and set(oracle.target) <= set("ACGU")
    assert oracle.target == oracles.RNA_TARGETS[task]
    assert oracles.revcomp(oracles.revcomp(oracle.target)) == oracle.target
    assert oracles.revcomp("AACGU") == "ACGUU"


def test_rna_codes_and_strings_agree(rna1: RNABinding) -> None:
    strings = [*SPOTS, BEST, BEST, "AUGGGCCGGACCCC"]  # duplicates are folded once, answered for each
    codes = torch.tensor([["UCGA".index(c) for c in s] for s in strings])
    by_codes = rna1(codes)
    assert isinstance(by_codes, torch.Tensor) and by_codes.dtype == torch.float64 and by_codes.shape == (8,)
    assert torch.equal(by_codes, torch.from_numpy(rna1(strings)))
    assert np.array_equal(rna1(codes.numpy().astype(np.uint8)), rna1.fitness(strings))
    singles = np.array([rna1([s])[0] for s in strings])
    assert np.array_equal(singles, rna1(strings))
    assert rna1(torch.zeros((0, 14), dtype=torch.long)).shape == (0,)


@pytest.mark.parametrize(
    "bad",
    [["AUGGGCCGGACCC"], ["AUGGGCCGGACCCT"], ["augggccggacccc"], torch.full((2, 14), 4), torch.zeros((2, 13))],
)
def test_rna_rejects_malformed_input(rna1: RNABinding, bad: object) -> None:
    with pytest.raises(RewardError, match=r"\[m, 14\].*0\.\.3.*UCGA"):
        rna1(bad)  # type: ignore[arg-type]


def test_rna_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match="task"):
        RNABinding(4)
    with pytest.raises(ConfigError, match="workers"):
        RNABinding(1, workers=0)
    assert 1 <= RNABinding(1).workers <= 4


def test_rna_pool_equals_in_process_and_shuts_down(rna1: RNABinding) -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 4, (150, 14)))
    x[100:] = x[:50]  # duplicates across pieces
    ref = rna1(x)
    with RNABinding(1, workers=2, min_pool_batch=8) as pooled:
        assert pooled.worker_pids() == []  # started lazily
        assert torch.equal(pooled(x), ref)
        pids = pooled.worker_pids()
        assert len(pids) == 2 and os.getpid() not in pids
        assert np.array_equal(pooled(list(SPOTS)[:3]), rna1(list(SPOTS)[:3]))  # small batch: in this process
        assert pooled.worker_pids() == pids  # the pool is reused
        clone = pickle.loads(pickle.dumps(pooled))  # pickling leaves the workers behind
        assert clone.worker_pids() == [] and clone.norm == pooled.norm
    assert pooled.worker_pids() == []
    assert all(_gone(p) for p in pids)  # close() waits for the workers to exit
    assert torch.equal(pooled(x[:40]), ref[:40])  # usable again: a new pool
    new = pooled.worker_pids()
    assert len(new) == 2 and not set(new) & set(pids)
    pooled.close()
    pooled.close()  # idempotent
    assert all(_gone(p) for p in new)


def test_rna_pool_recovers_from_a_dead_worker(rna1: RNABinding) -> None:
    strings = list(rna1.strings(torch.from_numpy(np.random.default_rng(2).integers(0, 4, (40, 14)))))
    with RNABinding(1, workers=2, min_pool_batch=8) as pooled:
        pooled(strings)
        victim = pooled.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert _wait_gone([victim])
        with pytest.raises(RuntimeError, match=f"RNA oracle worker \\(pid {victim}\\)"):
            pooled(strings)
        assert pooled.worker_pids() == []  # the broken pool was closed ...
        assert np.array_equal(pooled(strings), rna1(strings))  # ... and a new one starts
        assert victim not in pooled.worker_pids()


def _gone(pid: int) -> bool:
    """The process has exited (or is a zombie whose parent has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_gone(pids: list[int], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(_gone(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


CHILD = """
import os, signal, sys
sys.path.insert(0, {src!r})
import adaptive_teacher.oracles as o
print("RNA imported at module import:", "RNA" in sys.modules, flush=True)
oracle = o.RNABinding(1, workers=2, min_pool_batch=2)
oracle(["AUGGGCCGGACCCC", "GCCCCGCCGGAAUG", "UCUUGGGGACUUUU", "AAAAAAAAAAAAAA"])
print(" ".join(map(str, oracle.worker_pids())), flush=True)
if {kill}:
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("kill", [True, False], ids=["parent-killed", "interpreter-exit"])
def test_rna_workers_never_outlive_their_parent(kill: bool) -> None:
    pytest.importorskip("RNA")
    code = textwrap.dedent(CHILD.format(src=SRC, kill=kill))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = res.stdout.splitlines()
    assert res.returncode == (-9 if kill else 0), res.stderr
    assert lines[0] == "RNA imported at module import: False"
    pids = [int(p) for p in lines[1].split()]
    assert len(pids) == 2
    assert _wait_gone(pids), f"workers {pids} still running after their parent ended"


def test_missing_viennarna_is_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "RNA", None)  # "import RNA" now raises ImportError
    oracle = RNABinding(2, workers=1)  # constructing needs no ViennaRNA
    with pytest.raises(ImportError, match=r"need ViennaRNA: pip install 'adaptive-teacher\[rna\]'"):
        oracle(list(SPOTS))
    with pytest.raises(ImportError, match="pip install viennarna"):
        _ = oracle.norm


# ---- constants -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "beta", "logz", "logz_scaled", "expected", "scale"),
    [
        (1, 8, 12.3815, 14.2592, 0.54715, 6.53879),
        (1, 40, 5.0418, 5.2202, 0.97376, 1.19533),
        (2, 40, 4.2893, 6.0064, 0.93913, 5.56817),
        (3, 40.0, 6.7275, 4.6227, 1.04433, 0.121864),
    ],
)
def test_rna_info_matches_the_readme(
    task: int, beta: float, logz: float, logz_scaled: float, expected: float, scale: float
) -> None:
    row = rna_info(task, beta)
    assert set(row) == set(oracles.RNA_INFO_COLUMNS) and row["reward_exp"] == beta
    assert abs(row["logz"] - logz) < 1e-4 and abs(row["logz_scaled"] - logz_scaled) < 1e-4
    assert abs(row["expected_reward"] - expected) < 1e-5
    assert abs(row["scale"] / scale - 1) < 1e-5
    assert abs(row["logz_scaled"] - row["logz"] - np.log(row["scale"])) < 1e-4  # logZ_scaled = logZ + log scale


def test_rna_info_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no row for beta 51.*64, 100"):
        rna_info(1, 51)
    with pytest.raises(ConfigError, match="task"):
        rna_info(0, 40)
    (tmp_path / "rna").mkdir()
    good = data_path("rna/L14_RNA1_info.csv").read_text()
    (tmp_path / "rna" / "L14_RNA1_info.csv").write_text(good.replace("reward_exp", "beta"))
    with pytest.raises(DataError, match="L14_RNA1_info.csv"):
        rna_info(1, 40, data_dir=tmp_path)
    with pytest.raises(DataError, match="L14_RNA3_info.csv has no row for beta 0.5"):
        rna_info(3, 0.5)
