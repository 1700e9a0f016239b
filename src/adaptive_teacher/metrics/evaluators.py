"""What the trainer measures at each evaluation, per task family.

Discrete: exact L1 of the Student's terminal distribution (by DP) and |log Z_θ − log Z| when the space can
be enumerated; otherwise nulls (modes are counted by the trainer either way).
Diffusion: ELBO, importance-weighted log Ẑ and EUBO on K samples (2,000 during training, 10,000 at the
end), Δlog Z against the exact value, and the 2-Wasserstein distance to exact samples at the end only.
Exact target samples are drawn with a seeded CPU generator (the same samples on every device) and moved to the
environment's device; the plot snapshots are kept on the CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class DiscreteEvaluator:
    keys = ("l1", "l1_mean", "log_Z_true", "log_Z_error")

    def __init__(self, env):
        from adaptive_teacher.metrics.exact import ExactEvaluator

        self.exact = ExactEvaluator(env) if env.enumerate_states() is not None else None

    @property
    def n_terminal(self) -> int | None:
        return self.exact.n_terminal if self.exact is not None else None

    def __call__(self, student: nn.Module, teacher: nn.Module | None, log_Z: float, final: bool) -> dict[str, Any]:
        if self.exact is None:
            return dict.fromkeys(self.keys)
        return {**self.exact.l1(student), "log_Z_true": self.exact.log_Z, "log_Z_error": abs(log_Z - self.exact.log_Z)}


class DiffusionEvaluator:
    """Log Z bounds of the Student; keeps 2-D projections of Student/Teacher samples for the plots.

    A target without an exact sampler gets no EUBO and no W2; one without a known log Z no Δlog Z."""

    keys = ("elbo", "log_Z_is", "eubo", "delta_log_Z_elbo", "delta_log_Z_is", "w2")

    def __init__(self, env, eval_samples: int = 2000, final_samples: int = 10_000, seed: int = 0):
        self.env = env
        self.eval_samples, self.final_samples = eval_samples, final_samples
        self.has_sampler = bool(getattr(env.density, "has_sampler", True))
        gen = torch.Generator(device="cpu").manual_seed(10_000 + seed)
        self.target = env.density.sample(eval_samples, generator=gen).to(env.device) if self.has_sampler else None
        self._final_target: torch.Tensor | None = None
        self._gen = gen
        self.n_terminal = None
        self.snapshots: list[dict[str, Any]] = []

    def __call__(self, student: nn.Module, teacher: nn.Module | None, log_Z: float, final: bool) -> dict[str, Any]:
        from adaptive_teacher.metrics.bounds import log_z_bounds

        n = self.final_samples if final else self.eval_samples
        if final and self._final_target is None and self.has_sampler:
            self._final_target = self.env.density.sample(self.final_samples, generator=self._gen).to(self.env.device)
        target = self._final_target if final else self.target
        bounds = log_z_bounds(self.env, student, n, target_samples=target)
        row: dict[str, Any] = {
            k: bounds.get(k) for k in ("elbo", "log_Z_is", "eubo", "delta_log_Z_elbo", "delta_log_Z_is")
        }
        true_log_z = self.env.density.log_Z
        row["log_Z_true"] = None if true_log_z is None else float(true_log_z)
        row["w2"] = None
        samples = bounds.get("samples")
        if samples is None:
            samples = self.env.rollout(student, n).terminal
        if final and target is not None:
            try:
                from adaptive_teacher.metrics.bounds import wasserstein2

                m = min(len(samples), len(target), 5000)
                row["w2"] = float(wasserstein2(samples[:m].double(), target[:m].double()))
            except ImportError:
                row["w2"] = None
        snap: dict[str, Any] = {"student": samples[:1000, :2].clone().cpu()}
        if teacher is not None:
            snap["teacher"] = self.env.rollout(teacher, 1000).terminal[:, :2].clone().cpu()
        self.snapshots.append(snap)
        return row


def make_evaluator(env, cfg) -> DiscreteEvaluator | DiffusionEvaluator:
    """The evaluator of the environment's task family (see families.py)."""
    from adaptive_teacher.families import family_of

    return family_of(env).make_evaluator(env, cfg)
