"""The Python API: train a method on a task for a reward-call budget, get the summary and samplers back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adaptive_teacher.config import TrainConfig, resolve_config
from adaptive_teacher.envs import TaskEnv
from adaptive_teacher.envs.base import Trajectories
from adaptive_teacher.policies import DiscretePolicy
from adaptive_teacher.tasks import default_budget, make_task, task_family
from adaptive_teacher.trainer import CHECKPOINT, Trainer


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
    **options: Any,
) -> TrainResult:
    """Train ``method`` (a preset name; ``options`` override any TrainConfig field) on ``env``.

    Without ``reward_calls`` (or ``iterations=``) the papers' budget for the task is used."""
    budget = default_budget(env) if reward_calls is None and options.get("iterations") is None else {}
    if reward_calls is not None:
        budget["reward_calls"] = reward_calls
    cfg = resolve_config(method, task_family(env), seed=seed, **{**budget, **options})
    trainer = Trainer(env, cfg, out)
    summary = trainer.train()
    teacher = Sampler(env, trainer.teacher) if trainer.teacher is not None else None
    return TrainResult(summary, trainer.history, Sampler(env, trainer.student), teacher, cfg, trainer)


def load(run_dir: str | Path, env: TaskEnv | None = None) -> TrainResult:
    """Load a finished or interrupted run (pass ``env`` for a user-defined environment)."""
    run = Path(run_dir)
    saved = json.loads((run / "config.json").read_text())
    cfg = TrainConfig.from_dict(saved["config"])
    env = env if env is not None else make_task(saved["task"])
    trainer = Trainer(env, cfg, None)
    trainer.load_state_dict(torch.load(run / CHECKPOINT, weights_only=False))
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else dict(trainer.history[-1])
    teacher = Sampler(env, trainer.teacher) if trainer.teacher is not None else None
    return TrainResult(summary, trainer.history, Sampler(env, trainer.student), teacher, cfg, trainer)
