"""The device option: every tensor of a run is placed explicitly, on the run's device, for every task family.

The central check runs short trainings of every family with torch's default device set to "meta" and
``device="cpu"`` given: a tensor that any module creates without an explicit device lands on meta, where it has
no data, and the run breaks (a meta tensor cannot be read, indexed by a mask or mixed with CPU tensors). The
same trainings give the same numbers as without the meta default, so the CPU path is the device path.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor

import adaptive_teacher as at
from adaptive_teacher import run_dir
from adaptive_teacher.biochem import seh, tfbind8
from adaptive_teacher.cli import main as cli_main
from adaptive_teacher.config import resolve_config
from adaptive_teacher.densities import GMM25, Gaussian, Manywell
from adaptive_teacher.device import OnDevice, resolve_device
from adaptive_teacher.diffusion_policies import DiffusionPolicy
from adaptive_teacher.envs import BitString, DeceptiveGrid, DiffusionEnv
from adaptive_teacher.errors import ConfigError, RewardError
from adaptive_teacher.oracles import SEH_MAX, SEHProxy
from adaptive_teacher.policies import DiscretePolicy
from adaptive_teacher.sequence import SequenceEnv
from adaptive_teacher.sources import RandomNetworkDistillation, ReplayBuffer
from adaptive_teacher.ssr import SSRPolicy
from adaptive_teacher.trainer import Trainer

META = torch.device("meta")
NO_CUDA = not torch.cuda.is_available()

GRID = {"reward_calls": 160, "batch_size": 16, "hidden": 16, "n_evals": 1, "progress": False}
STRINGS = {"reward_calls": 96, "hidden": 8, "n_evals": 1, "eval_samples": 16, "progress": False}
DIFFUSION = {
    "iterations": 6,
    "batch_size": 16,
    "hidden": 8,
    "n_evals": 1,
    "eval_samples": 32,
    "final_eval_samples": 32,
    "ls_every": 2,
    "ls_iterations": 4,
    "progress": False,
}


@contextlib.contextmanager
def default_device_meta() -> Iterator[None]:
    """torch's default device is "meta" inside the block: anything created without a device has no data."""
    before = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        yield
    finally:  # None (no device mode at all) where the default was the CPU
        torch.set_default_device(None if before == torch.device("cpu") else before)


def _gc_score(x: Tensor) -> Tensor:
    gc = ((x == 1) | (x == 2)).double().mean(1)
    return torch.exp(-20 * (gc - 0.75) ** 2) + 1e-3


CASES: list[tuple[str, Callable[[], Any], str, str, dict[str, Any]]] = [
    *[("grid", lambda: DeceptiveGrid(2, 6), "discrete", m, GRID) for m in ("tb", "teacher", "teacher-per")],
    *[("grid", lambda: DeceptiveGrid(2, 6), "discrete", m, GRID) for m in ("gafn", "tb-ls", "db", "teacher-db")],
    ("grid-transitions", lambda: DeceptiveGrid(2, 6), "discrete", "teacher-db", {**GRID, "buffer": "teacher_reward"}),
    ("grid-learned-pb", lambda: DeceptiveGrid(2, 6), "discrete", "teacher-ls", {**GRID, "learn_pb": True}),
    ("bitstring", lambda: BitString(5), "discrete", "tb-prt", GRID),
    *[("tfbind8", tfbind8, "strings", m, STRINGS) for m in ("teacher", "tb-ls", "gtb")],
    ("seh", seh, "strings", "teacher-per", {**STRINGS, "reward_calls": 64}),
    ("sequence", lambda: SequenceEnv("ACGT", 5, _gc_score, modes=["GGCCA"]), "strings", "tb-per", STRINGS),
    *[("gmm25", lambda: DiffusionEnv(GMM25(), n_steps=5), "diffusion", m, DIFFUSION) for m in ("teacher", "tb-per-ls")],
    ("manywell", lambda: DiffusionEnv(Manywell(4), n_steps=4), "diffusion", "tb", DIFFUSION),
]


def _train(make_env: Callable[[], Any], family: str, method: str, options: dict[str, Any], out) -> list[dict]:
    cfg = resolve_config(method, family, seed=3, device="cpu", **options)
    trainer = Trainer(make_env(), cfg, out)
    trainer.train()
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in trainer.history]


@pytest.mark.parametrize(
    ("name", "make_env", "family", "method", "options"), CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES]
)
def test_no_module_creates_a_tensor_on_the_default_device(name, make_env, family, method, options, tmp_path):
    """Task, trainer, policies, buffer, local search, MALA, RND, guide, evaluators, checkpoints: all under a
    meta default device, given device="cpu"; the numbers are those of the same run without the meta default."""
    with default_device_meta():
        placed = _train(make_env, family, method, options, tmp_path / "meta")
    plain = _train(make_env, family, method, options, None)
    assert json.dumps(placed) == json.dumps(plain)  # (NaN-safe: the JSON of the metrics lines)
    assert json.loads((tmp_path / "meta" / "config.json").read_text())["config"]["device"] == "cpu"


class LeakyGrid(DeceptiveGrid):
    """Creates its initial states without a device (on the default device): the check must catch it."""

    def initial_states(self, n: int) -> Tensor:
        return torch.zeros((n, self.dim), dtype=torch.long)


def test_the_meta_check_catches_a_tensor_created_without_a_device():
    env = LeakyGrid(2, 6)
    Trainer(env, resolve_config("tb", device="cpu", **GRID)).train()  # fine while the default device is the CPU
    # a meta tensor has no data: reading, mask-indexing or mixing it with CPU tensors fails, each its own way
    with default_device_meta(), pytest.raises((RuntimeError, NotImplementedError, IndexError, ValueError)):
        Trainer(LeakyGrid(2, 6), resolve_config("tb", device="cpu", **GRID)).train()


def test_check_env_creates_no_tensor_on_the_default_device():
    with default_device_meta():
        for env in (DeceptiveGrid(2, 4), BitString(4)):
            at.check_env(env)


def _tensors(obj: Any, seen: set[int] | None = None) -> dict[str, Tensor]:
    """Every tensor attribute of an OnDevice object, nested OnDevice attributes included (by dotted name)."""
    seen = set() if seen is None else seen
    seen.add(id(obj))
    out: dict[str, Tensor] = {}
    for name, value in vars(obj).items():
        if isinstance(value, Tensor):
            out[name] = value
        elif isinstance(value, OnDevice) and id(value) not in seen:
            out.update({f"{name}.{k}": v for k, v in _tensors(value, seen).items()})
    return out


@pytest.mark.parametrize(
    "make_env",
    [
        lambda: DeceptiveGrid(2, 6),
        lambda: BitString(6),
        tfbind8,
        seh,
        lambda: SequenceEnv("ACGT", 4, _gc_score, modes=["GGCC"]),
        lambda: DiffusionEnv(GMM25(), n_steps=4),
        lambda: DiffusionEnv(Manywell(4), n_steps=4),
    ],
    ids=["grid", "bitstring", "tfbind8", "seh", "sequence", "gmm25", "manywell"],
)
def test_env_to_moves_every_table_and_creates_states_there(make_env):
    env = make_env()
    tensors = _tensors(env)
    assert all(t.device.type == "cpu" for t in tensors.values()) and env.device == torch.device("cpu")
    assert env.to(META) is env and env.device == META
    moved = _tensors(env)
    assert moved.keys() == tensors.keys()
    assert {k for k, t in moved.items() if t.device != META} == set()
    assert env.initial_states(3).device == META
    if hasattr(env, "alphabet_size"):  # the string MDP's enumeration and strings too
        if env.enumerate_states() is not None:
            assert env.enumerate_states().device == META
        assert env.from_strings([env.alphabet[0]]).device == META
    if hasattr(env, "proxy"):  # sEH: torch copies of the tree tables on the device
        assert all(t.device == META for t in env.proxy._tables_on(META))


def test_policies_buffers_and_rnd_are_built_on_the_device_given():
    nets = [
        DiscretePolicy(12, 3, 2, hidden=8, learn_pb=True, flow_head=True, device=META),
        SSRPolicy(12, hidden=8, flow_head=True, learn_pb=True, device=META),
        DiffusionPolicy(
            4, arch="pis", hidden=8, harmonics=4, learn_var=True, langevin=True, grad_fn=lambda x: x, device=META
        ),
        DiffusionPolicy(4, arch="at256", hidden=8, harmonics=4, device=META),
        RandomNetworkDistillation(12, hidden=8, latent=4, device=META),
    ]
    for net in nets:
        tensors = list(net.parameters()) + list(net.buffers())
        assert tensors and all(t.device == META for t in tensors), type(net).__name__
    buf = ReplayBuffer(10, (3,), device=META)
    assert all(t.device == META for t in (buf.states, buf.keys, buf.priority, buf.log_reward, buf.inserted))


def test_exact_target_samples_do_not_depend_on_the_density_device():
    for make in (lambda: Gaussian(3, var=2.0), lambda: Manywell(4)):  # (meta tables could not come back to the CPU)
        reference = make().sample(50, generator=torch.Generator().manual_seed(7))
        density = make().to(META)
        drawn = density.sample(50, generator=torch.Generator().manual_seed(7))  # on the generator's device
        assert torch.equal(drawn, reference)
    assert Gaussian(3).to(META).sample(5).device == META  # without a generator: on the density's device


def test_seh_torch_path_is_the_numpy_path_bit_for_bit():
    proxy = SEHProxy()
    gen = torch.Generator().manual_seed(0)
    for m in (5, 300):  # both sides of the numpy path's small-batch branch
        x = torch.randint(18, (m, 6), generator=gen)
        assert torch.equal(proxy.predict_tensor(x), proxy(x))
    best = proxy.predict_tensor(proxy.codes(["ag550c"]))
    assert best.dtype == torch.float64 and best.item() == SEH_MAX
    with pytest.raises(RewardError, match="shape"):
        proxy.predict_tensor(torch.zeros((2, 5), dtype=torch.long))
    with pytest.raises(RewardError, match="out of range"):
        proxy.predict_tensor(torch.full((2, 6), 18))


def test_device_option_errors_are_one_line_and_name_the_option(capsys):
    with pytest.raises(ConfigError, match="device must be cpu, cuda or cuda:N") as e:
        Trainer(DeceptiveGrid(2, 6), resolve_config("tb", device="tpu", **GRID))
    assert "\n" not in str(e.value)
    assert resolve_device("cpu") == torch.device("cpu")
    if NO_CUDA:
        with pytest.raises(ConfigError, match="device cuda: CUDA is not available.*use device cpu") as e:
            at.train(DeceptiveGrid(2, 6), "tb", device="cuda", **GRID)
        assert "\n" not in str(e.value)
        with pytest.raises(SystemExit) as code:
            cli_main(["train", "--dim", "2", "--height", "6", "--device", "cuda", "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code.value.code == 2 and len(err.splitlines()) == 1 and "--device cuda: CUDA is not available" in err


def test_cuda_names_resolve_to_an_indexed_gpu(monkeypatch):
    """The CUDA branch on a machine without one: torch's answers are stubbed (two GPUs, CUDA not initialised)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"device cuda:2: this machine has 2 GPU\(s\) \(cuda:0 .. cuda:1\)"):
        resolve_device("cuda:2")


def test_the_device_is_recorded_but_not_fingerprinted():
    task = {"name": "deceptive-grid", "dim": 2, "height": 6}
    cpu, cuda = resolve_config("tb", device="cpu").to_dict(), resolve_config("tb", device="cuda").to_dict()
    assert run_dir.fingerprint(task, cpu) == run_dir.fingerprint(task, cuda)
    assert run_dir.config_differences(cpu, cuda) == []
    assert run_dir.fingerprint(task, cpu) != run_dir.fingerprint(task, resolve_config("tb", lr=0.01).to_dict())


def _cut_run(out, cfg, steps: int, monkeypatch) -> None:
    """Train ``cfg`` into ``out`` and stop it (Ctrl-C) after ``steps`` training steps."""
    calls = {"n": 0}
    original = Trainer.train_step

    def crashing(self, batch):
        calls["n"] += 1
        if calls["n"] == steps:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        Trainer(DeceptiveGrid(2, 6), cfg, out).train()
    monkeypatch.setattr(Trainer, "train_step", original)


def test_a_checkpoint_from_another_device_resumes_on_the_one_asked_for(tmp_path, monkeypatch, capsys):
    """A run recorded as a GPU run (config.json says cuda; the fingerprint does not see it) continues on the CPU
    with --device cpu: the checkpoint is read with weights_only onto the CPU, and the result is the run's."""
    cfg = resolve_config("teacher-per", reward_calls=640, hidden=16, n_evals=4, progress=False, device="cpu")
    full = Trainer(DeceptiveGrid(2, 6), cfg, tmp_path / "full").train()
    out = tmp_path / "cut"
    _cut_run(out, cfg, 45, monkeypatch)
    saved = json.loads((out / "config.json").read_text())
    saved["config"]["device"] = "cuda"  # as written by a run on a GPU
    (out / "config.json").write_text(json.dumps(saved))
    assert run_dir.read_config(out)["fingerprint"] == full["fingerprint"]  # the same run
    if NO_CUDA:
        with pytest.raises(ConfigError, match="device cuda: CUDA is not available"):
            Trainer.resume(out)
        with pytest.raises(SystemExit):
            cli_main(["train", "--resume", str(out), "--no-progress"])
        assert "use --device cpu" in capsys.readouterr().err

    loads: list[dict[str, Any]] = []
    real_load = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    with pytest.raises(SystemExit) as code:  # --device is an option --resume takes
        cli_main(["train", "--resume", str(out), "--device", "cpu", "--no-progress"])
    assert code.value.code == 0
    resumed = json.loads(capsys.readouterr().out)
    assert loads and all(k["weights_only"] is True and k["map_location"] == torch.device("cpu") for k in loads)
    for key in ("step", "reward_calls", "modes_found", "l1", "log_Z", "loss", "fingerprint"):
        assert resumed[key] == full[key], key
    assert run_dir.read_config(out)["config"]["device"] == "cpu"


def test_load_checkpoint_puts_the_tensors_on_map_location(tmp_path):
    Trainer(DeceptiveGrid(2, 6), resolve_config("tb", device="cpu", **GRID), tmp_path).train()
    state, _ = run_dir.load_checkpoint(tmp_path, map_location=META)
    weights = list(state["student"].values())
    assert weights and all(w.device == META for w in weights)
    state, _ = run_dir.load_checkpoint(tmp_path)
    assert all(w.device.type == "cpu" for w in state["student"].values())
    assert math.isfinite(at.load(tmp_path, device="cpu").summary["l1"])
