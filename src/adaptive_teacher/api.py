"""The Python API: train a method on a task for a reward-call budget, get the summary and samplers back."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from adaptive_teacher import run_dir as rundir
from adaptive_teacher.config import TrainConfig, resolve_config
from adaptive_teacher.envs import TaskEnv
from adaptive_teacher.envs.base import Trajectories
from adaptive_teacher.errors import ConfigError, DataError
from adaptive_teacher.policies import DiscretePolicy
from adaptive_teacher.tasks import default_budget, make_task, task_family, task_spec
from adaptive_teacher.trainer import Trainer


@dataclass
class Sampler:
    """A trained policy bound to its environment: ``sample(n)`` returns n terminal states."""

    env: TaskEnv
    policy: DiscretePolicy

    def sample_trajectories(self, n: int) -> Trajectories:
        return self.env.rollout(self.policy, n)

    def sample(self, n: int) -> torch.Tensor:
        return self.sample_trajectories(n).terminal

    def exact_distribution(self) -> torch.Tensor:
        """p(x) over ``env.enumerate_states()``'s terminal states, by dynamic programming."""
        from adaptive_teacher.metrics import ExactEvaluator

        return ExactEvaluator(self.env).distribution(self.policy)


@dataclass
class TrainResult:
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    student: Sampler
    teacher: Sampler | None
    config: TrainConfig
    trainer: Trainer = field(repr=False)


def train(
    env: TaskEnv,
    method: str = "teacher",
    reward_calls: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
    **options: Any,
) -> TrainResult:
    """Train ``method`` (a preset name; ``options`` override any TrainConfig field) on ``env``.

    Without ``reward_calls`` (or ``iterations=``) the papers' budget for the task is used. ``out`` must not
    hold a run already unless ``overwrite=True`` (continue an interrupted one with ``Trainer.resume``).
    ``device="cuda"`` runs every tensor on the GPU (the environment is moved there, in place)."""
    _check_env(env)
    budget = default_budget(env) if reward_calls is None and options.get("iterations") is None else {}
    if reward_calls is not None:
        budget["reward_calls"] = reward_calls
    cfg = resolve_config(method, task_family(env), task_spec(env), seed=seed, **{**budget, **options})
    trainer = Trainer(env, cfg, out, overwrite=overwrite)
    summary = trainer.train()
    teacher = Sampler(env, trainer.teacher) if trainer.teacher is not None else None
    return TrainResult(summary, trainer.history, Sampler(env, trainer.student), teacher, cfg, trainer)


def _check_env(env: Any) -> None:
    from adaptive_teacher.envs.base import DiscreteEnv
    from adaptive_teacher.envs.diffusion import DiffusionEnv

    if not isinstance(env, DiscreteEnv | DiffusionEnv):
        raise ConfigError(
            f"env must be a DiscreteEnv (e.g. at.Hypergrid) or a DiffusionEnv (wrapping a Density), "
            f"got {type(env).__name__}"
        )


def load(run_dir: str | Path, env: TaskEnv | None = None, device: str | None = None) -> TrainResult:
    """Load a finished or interrupted run (pass ``env`` for a user-defined environment), on ``device`` (default:
    the run's own; a run written on a GPU loads on the CPU with ``device="cpu"``).

    Checkpoints load with ``weights_only=True``: a file holding anything but tensors and plain data is refused.
    A damaged newest checkpoint falls back to the previous one (with a warning)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"{run}: no such run directory")
    saved = rundir.read_config(run)
    cfg = TrainConfig.from_dict(saved["config"])
    if device is not None:
        cfg = replace(cfg, device=device)
    if env is None:
        try:
            env = make_task(saved["task"])
        except ConfigError:
            raise ConfigError(
                f"{run} was trained on the task {saved['task']}, which is not built in: pass the environment, "
                "at.load(run_dir, env=...)"
            ) from None
    elif task_spec(env) != saved["task"]:
        raise ConfigError(f"{run} was trained on the task {saved['task']}, not on {task_spec(env)}")
    trainer = Trainer(env, cfg, None)
    state, source = rundir.load_checkpoint(
        run, warn=lambda m: print(f"adaptive-teacher: warning: {m}", file=sys.stderr), map_location=trainer.device
    )
    trainer.restore(state, source)
    summary = rundir.read_summary(run)
    own = (trainer.fingerprint, saved["fingerprint"])  # config.json's: a run written before some options existed
    if summary is None or summary.get("fingerprint", trainer.fingerprint) not in own:
        summary = dict(trainer.history[-1])
    teacher = Sampler(env, trainer.teacher) if trainer.teacher is not None else None
    return TrainResult(summary, trainer.history, Sampler(env, trainer.student), teacher, cfg, trainer)
