"""What the trainer measures on the biochemical string tasks at each evaluation.

As the ``evaluate`` of Kim et al.'s discovery code (``trainers.py``), on ``eval_samples`` (2,048) on-policy
Student samples without exploration: the distinct modes among them (``onpolicy_modes``), their mean raw
reward r = max(raw, 0.001) (``mean_r``, against the target's E[r]), the ELBO = mean w and the
importance-weighted log Ẑ = log-mean-exp w (their "estimated logZ"), with w = log R + Σ log P_B − Σ log P_F.
On exact target samples (the shipped ones of sEH at β = 6 and L14-RNA1 at β = 40; drawn from the enumerated
target for QM9 and TFBind8), each with one P_B trajectory: the EUBO = mean w and the Pearson correlation of
Σ log P_F(τ) with log R(x) (their Metric 3). Where log Z is known, the exact error of the learned one,
``log_Z_error`` = |log Z_θ − log Z|. Where the space can be enumerated (QM9, TFBind8) also the exact
L1 = Σ_x |p(x) − p*(x)| and the exact probability mass on the mode set, every ``exact_every`` evaluations
and at the end (none of these three is in the official code). There the Student's P_F is
first tabulated on every state in one pass (``ExactEvaluator.action_probs``), and the samples, their weights
and the target's weights are looked up in that table: the same numbers, the same random draws, one network
pass instead of four (QM9 at width 1,024: benchmarks/bench_string_eval.py). The modes found among every x
sampled online so far and the top-100 metrics are the trainer's (``ModeTracker``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class StringEvaluator:
    keys = (
        "onpolicy_modes",
        "mean_r",
        "elbo",
        "log_Z_is",
        "log_Z_true",
        "delta_log_Z_is",
        "eubo",
        "pearson",
        "l1",
        "l1_mean",
        "mode_mass",
        "log_Z_error",
    )

    def __init__(self, env, cfg):
        from adaptive_teacher.ssr import SSRExactEvaluator

        self.env = env
        self.n_samples, self.exact_every = int(cfg.eval_samples), int(cfg.exact_every)
        self.exact = SSRExactEvaluator(env) if env.enumerate_states() is not None else None
        self.target = env.target_samples() if hasattr(env, "target_samples") else None
        self._mode_of_terminal = env.is_mode(self.exact.terminal_states) if self.exact is not None else None
        self.evaluations = 0
        self.tracker: Any = None  # the trainer's ModeTracker (the best x found, for the plots)

    @property
    def n_terminal(self) -> int | None:
        return self.exact.n_terminal if self.exact is not None else None

    @torch.no_grad()
    def __call__(self, student: nn.Module, teacher: nn.Module | None, log_Z: float, final: bool) -> dict[str, Any]:
        from adaptive_teacher.metrics.bounds import log_z_bounds

        env = self.env
        probs, policy = None, student
        if self.exact is not None:
            probs = self.exact.action_probs(student)  # one pass over the enumerated states serves every metric
            policy = self.exact.table_policy(probs, log_Z, backward_from=student)
        bounds = log_z_bounds(env, policy, self.n_samples)
        x = bounds["samples"]
        assert isinstance(x, torch.Tensor)
        hit = env.is_mode(x)
        row: dict[str, Any] = dict.fromkeys(self.keys)
        row["onpolicy_modes"] = int(torch.unique(env.state_key(x[hit])).numel())
        raw = getattr(env, "raw_reward", None)
        row["mean_r"] = float(raw(x).mean()) if raw is not None else None
        row["elbo"], row["log_Z_is"], row["log_Z_true"] = bounds["elbo"], bounds["log_Z_is"], bounds["log_Z"]
        row["delta_log_Z_is"] = bounds["delta_log_Z_is"]
        if bounds["log_Z"] is not None:  # the exact log Z error of the learned log Z, as on the grid
            row["log_Z_error"] = abs(float(log_Z) - float(bounds["log_Z"]))
        if self.target is not None:
            row.update(self._on_target(policy))
        if self.exact is not None and (final or self.evaluations % self.exact_every == 0):
            p = self.exact.distribution(student, probs)
            l1 = float((p - self.exact.target).abs().sum())
            row["l1"], row["l1_mean"] = l1, l1 / self.exact.n_terminal
            row["mode_mass"] = float(p[self._mode_of_terminal].sum())
        self.evaluations += 1
        return row

    def _on_target(self, student: nn.Module, batch: int = 1024) -> dict[str, float]:
        """EUBO and corr(Σ log P_F(τ), log R(x)) on the exact target samples, one P_B trajectory each."""
        env, target = self.env, self.target
        assert target is not None
        ws, log_pf, log_r = [], [], []
        for i in range(0, len(target), batch):
            traj = env.backward_rollout(target[i : i + batch], student if student.learn_pb else None)
            lp = env.log_probs(student, traj, dtype=torch.float64)
            r = env.log_reward(traj.terminal).to(torch.float64)
            ws.append(r + lp.log_pb.sum(1) - lp.log_pf.sum(1))
            log_pf.append(lp.log_pf.sum(1))
            log_r.append(r)
        pf, lr = torch.cat(log_pf), torch.cat(log_r)
        corr = float(torch.corrcoef(torch.stack([pf, lr]))[0, 1])
        return {"eubo": float(torch.cat(ws).mean()), "pearson": corr if math.isfinite(corr) else None}
