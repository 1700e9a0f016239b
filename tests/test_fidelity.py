"""Fidelity to the official code of Kim et al. (ICLR 2025): each test fails on the behaviour it replaced."""

from __future__ import annotations

import math

import torch

import adaptive_teacher.sources.mala as mala_module
from adaptive_teacher.config import resolve_config
from adaptive_teacher.densities import GMM25
from adaptive_teacher.envs import DeceptiveGrid, DiffusionEnv
from adaptive_teacher.sources import teacher_log_reward
from adaptive_teacher.sources.mala import mala
from adaptive_teacher.sources.schedule import ScheduledStep
from adaptive_teacher.trainer import Trainer

DIFF = {"batch_size": 32, "hidden": 16, "n_evals": 1, "progress": False, "eval_samples": 64, "final_eval_samples": 64}


def _priorities(buffer) -> dict[int, float]:
    return dict(zip(buffer.keys.tolist(), buffer.priority.tolist(), strict=True))


def test_diffusion_per_priority_is_the_teacher_reward_without_alpha():
    """The buffer ranks by log R_T = log log(1 + ε + w·½δ²); R^α enters only the Teacher's loss."""
    tr = Trainer(DiffusionEnv(GMM25(), n_steps=5), resolve_config("tb-per", "diffusion", iterations=4, **DIFF))
    assert tr.cfg.alpha == 0.5
    batch = tr.next_batch(ScheduledStep("student"))
    delta = tr.student_delta(batch.traj)  # the Student's residual before its update
    tr.train_step(batch)
    c = tr.cfg
    expected = teacher_log_reward(delta, batch.traj.log_reward, c.C, 0.0, c.teacher_eps, c.teacher_half_square)
    with_alpha = teacher_log_reward(delta, batch.traj.log_reward, c.C, 0.5, c.teacher_eps, c.teacher_half_square)
    keys = tr.env.state_key(batch.traj.terminal).tolist()
    stored = _priorities(tr.buffer)
    assert torch.allclose(torch.tensor([stored[k] for k in keys], dtype=torch.float64), expected, atol=1e-6)
    assert not torch.allclose(expected, with_alpha)


def test_per_keeps_the_priority_given_at_insertion_unless_refreshing():
    env = DeceptiveGrid(2, 8)
    for refresh in (False, True):
        cfg = resolve_config("tb-per", reward_calls=320, batch_size=16, hidden=16, n_evals=1, progress=False)
        cfg.per_refresh = refresh
        tr = Trainer(env, cfg)
        tr.train_step(tr.next_batch(ScheduledStep("student")))
        before = _priorities(tr.buffer)
        replay = tr.next_batch(ScheduledStep("replay"))
        assert not replay.fresh
        tr.train_step(replay)
        after = _priorities(tr.buffer)
        replayed = set(tr.env.state_key(replay.traj.terminal).tolist())
        changed = {k for k in replayed if after[k] != before[k]}
        assert (changed == set()) if not refresh else (changed == replayed)


def test_mala_local_search_restarts_its_step_size_and_adapts_every_step(monkeypatch):
    """Official MALA: η = 1e-3 at every call, ×1.01 or ×0.99 after every one of the steps (burn-in or not)."""
    target = GMM25()
    x0 = target.sample(64, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    _, eta, _ = mala(
        target.log_reward, target.grad_log_reward, x0, 20, 10, 1e-3, adaptation="every_step", generator=gen
    )
    steps = math.log(eta / 1e-3)
    ups = (steps - 20 * math.log(0.99)) / (math.log(1.01) - math.log(0.99))
    assert abs(ups - round(ups)) < 1e-6 and 0 <= round(ups) <= 20  # exactly 20 multiplicative moves
    env = DiffusionEnv(target, n_steps=5)
    tr = Trainer(env, resolve_config("tb-per-ls", "diffusion", iterations=4, ls_every=2, ls_iterations=6, **DIFF))
    tr.train_one_step()  # seeds the buffer
    seen = []

    def spy(*args, **kwargs):
        seen.append((kwargs["step_size"], kwargs["adaptation"]))
        return mala(*args, **kwargs)

    monkeypatch.setattr(mala_module, "mala", spy)
    for _ in range(4):  # steps 1..4: MALA at steps 2 and 4
        tr.train_one_step()
    assert seen == [(1e-3, "every_step")] * 2  # never carried over
