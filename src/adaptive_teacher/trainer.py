"""The trainer: a schedule of behaviour sources feeding one batch per step to the Student and the Teacher.

One step (Kim et al., ICLR 2025, Alg. 1):
    batch  ← the scheduled source: Student (±ε), Teacher, replay buffer (fresh P_B trajectories) or
             local search on a Student/Teacher batch
    δ      ← Student residuals on the batch;  loss_S = mean δ²  → Student step
    log R_T ← teacher_log_reward(δ detached)  → Teacher TB/DB step on the same batch
    buffer ← the new terminal states, priority log R (PRT) or log R_T (PER)
Budgets count reward calls: every terminal state whose reward is computed (Student, Teacher and
local-search proposals, MALA steps) counts once; replayed states do not. ``iterations`` sets a budget in
steps instead. The same loop serves discrete tasks and diffusion samplers; their differences are
configuration (``config.FAMILY_DEFAULTS``) plus the evaluator and policy factories.

Devices: ``cfg.device`` (cpu, cuda) holds every tensor of the run: the trainer moves the environment there
(``env.to(device)``, in place) and builds the policies, the RND networks and the buffer there; everything
else follows the device of the states. Checkpoints load onto the run's device, wherever they were written.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from adaptive_teacher import run_dir
from adaptive_teacher.config import TrainConfig, comparable_config, validate
from adaptive_teacher.device import resolve_device
from adaptive_teacher.envs import TaskEnv
from adaptive_teacher.envs.base import Trajectories
from adaptive_teacher.errors import ConfigError, DataError, RunInterrupted, TrainingDiverged, option
from adaptive_teacher.families import family_of, get_family
from adaptive_teacher.metrics import ModeTracker
from adaptive_teacher.objectives import (
    detailed_balance,
    gafn_trajectory_balance,
    trajectory_balance,
    vargrad,
)
from adaptive_teacher.sources import (
    RandomNetworkDistillation,
    ReplayBuffer,
    batches,
    schedule,
    teacher_log_reward,
    transitions,
)
from adaptive_teacher.sources.guide import SubstructureGuide
from adaptive_teacher.sources.schedule import Batch, ScheduledStep
from adaptive_teacher.sources.teacher import teacher_log_reward_transitions
from adaptive_teacher.tasks import task_spec
from adaptive_teacher.tracking import Trackers, make_trackers, parse_log

CHECKPOINT = run_dir.CHECKPOINT


def build_schedule(cfg: TrainConfig) -> list[ScheduledStep]:
    """The cyclic schedule of a config (sources/schedule.py); back-and-forth local search is a refinement of
    scheduled batches in families whose local search works that way, MALA runs beside the schedule."""
    back_and_forth = cfg.local_search and get_family(cfg.family).local_search == "back_and_forth"
    return schedule.build_schedule(
        cfg.teacher,
        cfg.buffer != "none",
        back_and_forth,
        cfg.teacher_into_buffer,
        cfg.teacher_round_every,
        local_search_every_online=cfg.ls_style == "chain",
        local_search_replaces_teacher=cfg.ls_replaces_teacher,
    )


def _make_optimizer(
    model: nn.Module,
    lr: float,
    lr_log_z: float,
    extra: list[nn.Parameter] | None = None,
    weight_decay: float = 0.0,
):
    """Adam with the network (lr), log Z (lr_log_z) and, as a third group, ``extra`` parameters trained
    beside the policy (GAFN's RND predictor, lr), which gradient clipping leaves alone (the grid code)."""
    body = [p for name, p in model.named_parameters() if name != "log_Z"]
    groups = [{"params": body, "lr": lr}, {"params": [model.log_Z], "lr": lr_log_z}]
    if extra:
        groups.append({"params": extra, "lr": lr})
    return torch.optim.Adam(groups, weight_decay=weight_decay)


@dataclass
class StepResult:
    loss: float
    teacher_loss: float


class Trainer:
    """Trains a Student (and optionally a Teacher) on a task for a reward-call budget.

    With ``out_dir`` the run is written there (config, metrics, checkpoints, summary, plots); a directory that
    already holds a run is refused unless ``overwrite`` (continue one with :meth:`resume`)."""

    def __init__(self, env: TaskEnv, config: TrainConfig, out_dir: str | Path | None = None, overwrite: bool = False):
        self.env, self.cfg = env, config
        self.family = family_of(env)
        if config.family != self.family.name:
            raise ConfigError(
                f"the config is for {config.family} tasks but the task {task_spec(env)} is {self.family.name}"
            )
        validate(config)
        self.device = resolve_device(config.device)
        _place(env, self.device)
        for key, value in self.family.protocol_tasks.get(config.protocol, {}).items():
            if getattr(env, key, value) != value:
                raise ConfigError(
                    f"{option('protocol')} {config.protocol} fixes the task's {key} = {value}, but this task has "
                    f"{getattr(env, key)} ({option(key)} {value}, or leave it unset on the command line)"
                )
        self.evaluator = self.family.make_evaluator(env, config)
        n_term = self.evaluator.n_terminal or getattr(env, "n_terminal_states", None)
        validate(config, n_term)
        _check_memory(env, config, self.device)
        self.out_dir = run_dir.prepare_out_dir(out_dir, overwrite) if out_dir is not None else None
        self._trackers = Trackers()  # started by train() when cfg.log asks for them
        torch.manual_seed(config.seed)

        self.student = self._new_policy()
        self.rnd = None
        if config.gafn:
            self.rnd = RandomNetworkDistillation(env.n_features, scale=config.ri_scale, device=self.device)
        extra = list(self.rnd.predictor.parameters()) if self.rnd is not None else None
        wd = config.weight_decay
        self.opt_student = _make_optimizer(self.student, config.lr, config.lr_log_z, extra, weight_decay=wd)
        self.teacher = self._new_policy() if config.teacher else None
        teacher_lr = config.teacher_lr or config.lr * config.teacher_lr_scale
        self.opt_teacher = (
            _make_optimizer(self.teacher, teacher_lr, config.lr_log_z, weight_decay=wd)
            if self.teacher is not None
            else None
        )
        self.buffer = None
        # DB with PER replays single transitions (the official trainer_db.py); other buffers hold terminal x.
        self.transition_replay = config.objective == "db" and config.buffer == "teacher_reward"
        if self.transition_replay:
            self.buffer = transitions.make_buffer(env, config.buffer_size)
        elif config.buffer != "none":
            capacity = config.buffer_size or max(1, int(0.1 * (n_term or 10_000 * config.batch_size)))
            shape = tuple(env.initial_states(1).shape[1:])
            self.buffer = ReplayBuffer(
                capacity, shape, env.state_dtype, config.buffer_sampling, config.buffer_refresh_age, self.device
            )
        self.guide = SubstructureGuide(env, config.guide_temperature) if config.guide == "substructure" else None
        self.modes = ModeTracker(env, self.family.top_k)
        if hasattr(self.evaluator, "tracker"):  # the string plots draw the best x found
            self.evaluator.tracker = self.modes
        self.counter = batches.RewardCounter(env, self.modes)
        self.schedule = build_schedule(config)
        self.step = 0
        self.resumed = False  # restored from a checkpoint (its config.json keeps its provenance)
        self.earlier_identities: list[str] = []  # identities of its checkpoints that predate some options
        self.wall_s = 0.0
        self.next_eval = 0
        self.milestones_done = 0
        self.mala_step_size = batches.MALA_STEP_SIZE  # the last local search's final step size (reported)
        self.teacher_gate = -math.inf
        self._losses: list[float] = []
        self._teacher_losses: list[float] = []
        self.history: list[dict[str, Any]] = []
        if config.teacher_gate_quantile is not None and (config.teacher or config.buffer != "none"):
            # The Teacher and the buffer ignore samples whose log R is below this quantile under the initial
            # Student (the paper's diffusion code).
            first = batches.on_policy(self.counter, self.student, config.batch_size)
            self.teacher_gate = float(torch.quantile(first.log_reward, config.teacher_gate_quantile))

    def _new_policy(self) -> nn.Module:
        """A policy of the family's kind with log Z at ``log_z_init``."""
        model = self.family.make_policy(self.env, self.cfg)
        if self.cfg.log_z_init != 0.0:
            with torch.no_grad():
                model.log_Z.fill_(self.cfg.log_z_init)
        return model

    def _clamp_log_z(self, model: nn.Module) -> None:
        """log Z ← max(log Z, ``log_z_min``) after a step (Kim et al.'s string code: log Z ≥ 0)."""
        if self.cfg.log_z_min is not None:
            with torch.no_grad():
                model.log_Z.clamp_(min=self.cfg.log_z_min)

    # ---- batches ----------------------------------------------------------------------------------
    @property
    def progress(self) -> float:
        return min(1.0, self.used / self.total)

    @property
    def total(self) -> int:
        """The budget: iterations when ``cfg.iterations`` is set, reward calls otherwise."""
        return self.cfg.iterations if self.cfg.iterations is not None else self.cfg.reward_calls

    @property
    def used(self) -> int:
        return self.step if self.cfg.iterations is not None else self.reward_calls

    @property
    def reward_calls(self) -> int:
        return self.counter.calls

    @reward_calls.setter
    def reward_calls(self, value: int) -> None:
        self.counter.calls = value

    def student_delta(self, traj: Trajectories) -> torch.Tensor:
        with torch.no_grad():
            return self._objective(self.student, traj, traj.log_reward)[1]

    def _student_db_residuals(self, traj: Trajectories) -> torch.Tensor:
        """The Student's current per-transition DB residuals of ``traj`` (no grad), [B, L]."""
        with torch.no_grad():
            return self._objective(self.student, traj, traj.log_reward)[2]

    def teacher_reward(
        self,
        traj: Trajectories,
        delta: torch.Tensor | None = None,
        alpha: float | None = None,
        per_step: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log R_T of each trajectory's x from the Student's residual δ (DB: its per-transition residuals
        ``per_step``), computed here when not given, with the config's α unless ``alpha`` is given."""
        c = self.cfg
        a = c.alpha if alpha is None else alpha
        if c.objective == "db":  # per-transition terms of the Student's (current, pre-update) DB residuals
            resid = self._student_db_residuals(traj) if per_step is None else per_step
            return teacher_log_reward_transitions(resid, traj.valid(), traj.log_reward, c.C, a, c.teacher_eps)
        delta = self.student_delta(traj) if delta is None else delta
        return teacher_log_reward(delta, traj.log_reward, c.C, a, c.teacher_eps, c.teacher_half_square, c.loss_clamp)

    def buffer_priority(
        self, traj: Trajectories, delta: torch.Tensor | None = None, per_step: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The PER priority of x: log R_T without the R^α factor (α enters only the Teacher's loss, as in the
        official code of Kim et al. 2025); PRT: log R."""
        if self.cfg.buffer == "teacher_reward":
            return self.teacher_reward(traj, delta, alpha=0.0, per_step=per_step)
        assert traj.log_reward is not None
        return traj.log_reward

    def exploration(self, name: str) -> float:
        if name != "student" and not (name == "teacher" and self.cfg.explore_teacher):
            return 0.0
        if self.cfg.eps_decay:
            return self.cfg.eps * max(0.0, 1.0 - self.progress / 0.5)
        return self.cfg.eps

    @property
    def backward_model(self) -> nn.Module | None:
        """The model whose learned P_B samples backward trajectories (None: the environment's uniform P_B)."""
        return self.student if self.cfg.learn_pb else None

    def next_batch(self, step: ScheduledStep) -> Batch:
        """The batch of one scheduled step (replay falls back to the Student while the buffer is empty)."""
        cfg, bs = self.cfg, self.cfg.batch_size
        if step.teacher_feeds_buffer:
            assert self.teacher is not None and self.buffer is not None
            gate, priority = self.teacher_gate, self.buffer_priority
            batches.teacher_into_buffer(
                self.counter, self.teacher, self.buffer, bs, gate, priority, self.backward_model
            )
        source = step.source
        if source == "replay" and self.buffer is not None and len(self.buffer) > 0 and self.transition_replay:
            return Batch(transitions.sample(self.env, self.buffer, transitions.replay_size(self.env, bs)), "replay")
        if source == "replay" and self.buffer is not None and len(self.buffer) > 0 and self.guide is not None:
            if cfg.guide_offline == "score_back":  # P_B's trajectories, scored by the guide
                traj = batches.replayed(self.env, self.buffer, bs, self.backward_model)
                return Batch(traj, "replay", self.guide.log_prob(traj))
            x, log_r = self.buffer.sample(bs)
            traj, log_guide = self.guide.trajectories(x, log_r)
            return Batch(traj, "replay", log_guide)
        if source == "replay" and self.buffer is not None and len(self.buffer) > 0:
            return Batch(batches.replayed(self.env, self.buffer, bs, self.backward_model), "replay")
        if source == "replay":
            source = "student"
        model = self.teacher if source == "teacher" else self.student
        assert model is not None
        explore = self.exploration(source)
        chain = step.local_search and cfg.ls_style == "chain"  # the string code: seeds and all proposals
        n = bs // (cfg.ls_iterations + 1) if chain else bs
        traj = batches.on_policy(self.counter, model, n, explore, track_modes=chain or not step.local_search)
        if step.local_search:
            score = self.teacher_reward if source == "teacher" and not chain else (lambda t: t.log_reward)
            traj = batches.refined(
                self.counter,
                model,
                traj,
                score,
                cfg.ls_iterations,
                cfg.ls_back_ratio,
                cfg.ls_accept,
                self.backward_model,
                cfg.ls_back_steps,
                keep_proposals=chain,
            )
        return Batch(traj, source)

    # ---- one optimisation step --------------------------------------------------------------------
    def _objective(
        self, model: nn.Module, traj: Trajectories, log_reward: torch.Tensor, log_guide: torch.Tensor | None = None
    ):
        """(loss, δ, the detached per-transition DB residuals or None) of ``model`` on ``traj``.

        Guided TB (Shen et al., 2023): P_B enters the TB residual detached; on guide trajectories the target is
        log R + w·Σlog P_B + (1 − w)·log p_guide and the loss adds (Σlog P_B − log p_guide)², which alone trains
        the learned P_B."""
        lp = self.env.log_probs(model, traj)
        target = log_reward.to(lp.log_pf.dtype)
        back_loss = None
        if self.guide is not None and model is self.student:
            log_pb = lp.log_pb
            lp.log_pb = log_pb.detach()
            if log_guide is not None:
                guide = log_guide.to(target.dtype)
                target = target + (1.0 - self.cfg.guide_mix) * (guide - lp.log_pb.sum(1))
                back_sq = (log_pb.sum(1) - guide).square()
                clamp = self.cfg.loss_clamp
                back_loss = (back_sq if clamp is None else back_sq.clamp(max=clamp)).mean()
        if self.cfg.objective == "db":
            loss, delta, resid = detailed_balance(lp, target, return_residuals=True)
            return loss, delta, resid.detach()
        if self.cfg.objective == "vargrad":
            loss, delta = vargrad(lp, target)
            with torch.no_grad():  # keep the batch estimate log Ẑ = mean w as the reported log Z
                model.log_Z.fill_(float((target + lp.log_pb.sum(1) - lp.log_pf.sum(1)).mean()))
            return loss, delta, None
        loss, delta = trajectory_balance(lp, model.log_Z, target)
        if self.cfg.loss_clamp is not None:  # Kim et al.'s string code: each squared residual clamped (no grad above)
            loss = delta.square().clamp(max=self.cfg.loss_clamp).mean()
        return (loss if back_loss is None else loss + back_loss), delta, None

    def _clip_step(
        self, opt: torch.optim.Optimizer, loss: torch.Tensor, max_norm: float, params: list | None = None
    ) -> None:
        """One optimiser step; clipping covers ``params`` (default: the policy and its log Z, the first two
        parameter groups; the policy only without ``clip_log_z``)."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_norm > 0:
            if params is None:
                groups = opt.param_groups[:2] if self.cfg.clip_log_z else opt.param_groups[:1]
                params = [p for g in groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        opt.step()

    def _apply_lr_milestones(self) -> None:
        """Multiply every learning rate by 0.1 at each milestone fraction of the budget."""
        while self.milestones_done < len(self.cfg.lr_milestones) and (
            self.progress >= self.cfg.lr_milestones[self.milestones_done]
        ):
            for opt in (self.opt_student, self.opt_teacher):
                for group in opt.param_groups if opt is not None else []:
                    group["lr"] *= 0.1
            self.milestones_done += 1

    def train_step(self, batch: Batch) -> StepResult:
        """Student step on the batch, then the Teacher's on the same batch with R_T from the pre-update δ;
        then the buffer takes the batch's new x (priority log R or log R_T)."""
        cfg, traj = self.cfg, batch.traj
        if isinstance(traj, transitions.Transitions):
            return self._train_on_transitions(traj)
        assert traj.log_reward is not None
        rnd_loss = None
        if self.rnd is not None:  # GAFN: augmented flows with RND intrinsic rewards
            intrinsic, forced_stop, rnd_loss = self.rnd.on_trajectories(self.env, traj)
            lp = self.env.log_probs(self.student, traj)
            loss, delta = gafn_trajectory_balance(lp, self.student.log_Z, traj.log_reward, intrinsic, forced_stop)
            per_step = None
        else:
            loss, delta, per_step = self._objective(self.student, traj, traj.log_reward, batch.log_guide)
        if self.guide is not None and batch.fresh:
            self.guide.observe(traj.terminal, traj.log_reward)
        total = loss if rnd_loss is None else loss + rnd_loss
        if not torch.isfinite(total):
            raise TrainingDiverged(f"the Student loss became {total.item()}")
        needs_rt = self.teacher is not None or cfg.buffer == "teacher_reward"
        log_rt = self.teacher_reward(traj, delta, per_step=per_step) if needs_rt else None
        priority = self._buffer_priority_before_update(traj, delta, per_step) if self.buffer is not None else None
        self._clip_step(self.opt_student, total, cfg.clip_grad_norm)
        self._clamp_log_z(self.student)
        teacher_loss = math.nan
        gate = traj.log_reward > self.teacher_gate
        if self.teacher is not None and bool(gate.any()):
            assert log_rt is not None and self.opt_teacher is not None
            rows = gate.nonzero().squeeze(1)
            teacher_traj = traj.select(rows)
            if cfg.teacher_on_backward:  # fresh backward trajectories of the same x (Kim et al.'s diffusion code)
                fresh = self.env.backward_rollout(teacher_traj.terminal, self.backward_model)
                fresh.log_reward = teacher_traj.log_reward
                teacher_traj = fresh
            t_loss = self._objective(self.teacher, teacher_traj, log_rt[rows])[0]
            if not torch.isfinite(t_loss):
                raise TrainingDiverged(f"the Teacher loss became {t_loss.item()}")
            clip = cfg.clip_grad_norm if cfg.teacher_clip_grad_norm is None else cfg.teacher_clip_grad_norm
            scope = self.teacher.time_encoder_parameters() if cfg.teacher_clip_scope == "time_encoder" else None
            self._clip_step(self.opt_teacher, t_loss, clip, scope)
            self._clamp_log_z(self.teacher)
            teacher_loss = t_loss.item()
        if self.buffer is not None:
            self._update_buffer(batch, priority, gate)
        return StepResult(loss.item(), teacher_loss)

    def _buffer_priority_before_update(
        self, traj: Trajectories, delta: torch.Tensor, per_step: torch.Tensor | None
    ) -> torch.Tensor:
        """The buffer priorities of a batch from the Student's pre-update residuals: per transition (log of
        the Teacher-reward term, without R^α) for transition replay, per x otherwise."""
        if not self.transition_replay:
            return self.buffer_priority(traj, delta, per_step)
        c = self.cfg
        resid = self._student_db_residuals(traj) if per_step is None else per_step
        terms = teacher_log_reward(-resid, torch.zeros_like(resid, dtype=torch.float64), c.C, 0.0, c.teacher_eps)
        return terms[traj.valid()]

    def _train_on_transitions(self, t: transitions.Transitions) -> StepResult:
        """A replay step of single transitions (DB + PER): both models on the per-transition DB loss; the
        Teacher's stop transitions target log R_T of the Student's pre-update residual there."""
        cfg = self.cfg
        d = transitions.residuals(self.env, self.student, t, t.log_reward)
        loss = (d**2).mean()
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the Student loss became {loss.item()}")
        teacher_target = teacher_log_reward(-d.detach(), t.log_reward, cfg.C, cfg.alpha, cfg.teacher_eps)
        self._clip_step(self.opt_student, loss, cfg.clip_grad_norm)
        teacher_loss = math.nan
        if self.teacher is not None:
            assert self.opt_teacher is not None
            t_loss = (transitions.residuals(self.env, self.teacher, t, teacher_target) ** 2).mean()
            if not torch.isfinite(t_loss):
                raise TrainingDiverged(f"the Teacher loss became {t_loss.item()}")
            clip = cfg.clip_grad_norm if cfg.teacher_clip_grad_norm is None else cfg.teacher_clip_grad_norm
            self._clip_step(self.opt_teacher, t_loss, clip)
            teacher_loss = t_loss.item()
        return StepResult(loss.item(), teacher_loss)

    def _update_buffer(self, batch: Batch, priority: torch.Tensor | None, gate: torch.Tensor) -> None:
        """New x enter the buffer above the gate (the first batch ungated, as in the paper's diffusion code;
        none when the Teacher fills the buffer). A replayed x keeps the priority it was given at insertion (the
        official code), or gets it refreshed with ``per_refresh``."""
        assert self.buffer is not None
        cfg, traj = self.cfg, batch.traj
        keys = self.env.state_key(traj.terminal)
        teacher_fills = cfg.teacher and cfg.teacher_into_buffer and len(self.buffer) > 0
        if self.transition_replay:
            if batch.fresh:
                transitions.add(self.env, self.buffer, transitions.transitions_of(self.env, traj), priority)
            return
        if batch.fresh and not teacher_fills and (len(self.buffer) == 0 or bool(gate.any())):
            rows = (
                gate.nonzero().squeeze(1)
                if len(self.buffer) > 0
                else torch.arange(traj.batch_size, device=traj.states.device)
            )
            self.buffer.add(traj.terminal[rows], keys[rows], priority[rows], traj.log_reward[rows])
        elif not batch.fresh and cfg.buffer == "teacher_reward" and cfg.per_refresh:
            self.buffer.update_priority(keys, priority)

    def train_one_step(self) -> tuple[Trajectories, StepResult]:
        """One iteration of the schedule: (MALA on the buffer when due,) the scheduled batch, both updates,
        the lr schedule, and the running losses reported at the next evaluation."""
        cfg = self.cfg
        if self.family.local_search == "mala" and cfg.local_search and cfg.ls_every > 0:
            if self.step % cfg.ls_every == 0 and self.buffer is not None and len(self.buffer) > 0:
                self.mala_step_size = batches.mala_into_buffer(
                    self.counter,
                    self.buffer,
                    cfg.batch_size,
                    cfg.ls_iterations,
                    self.buffer_priority,
                    self.backward_model,
                )
        batch = self.next_batch(self.schedule[self.step % len(self.schedule)])
        result = self.train_step(batch)
        self.step += 1
        self._apply_lr_milestones()
        self._losses.append(result.loss)
        if not math.isnan(result.teacher_loss):
            self._teacher_losses.append(result.teacher_loss)
        return batch.traj, result

    def _kept(self) -> str:
        """What an interrupted or failed run keeps, and where."""
        if self.out_dir is None:
            return "nothing was written (no run directory)"
        last = self.history[-1]["step"] if self.history else 0
        return f"the checkpoint of step {last} and the metrics so far are kept in {self.out_dir}"

    # ---- evaluation -------------------------------------------------------------------------------
    def log_Z_estimate(self) -> float:
        """log Z_θ: the learned log Z (TB), log F(s0) (DB) or the last batch estimate (VarGrad)."""
        if self.cfg.objective == "db":
            s0 = self.env.initial_states(1)
            with torch.no_grad():
                return float(self.student.outputs(self.env, s0).log_flow[0])
        return float(self.student.log_Z.detach())

    def evaluate(self, final: bool = False) -> dict[str, Any]:
        log_Z = self.log_Z_estimate()
        row: dict[str, Any] = {
            "step": self.step,
            "reward_calls": self.reward_calls,
            "modes_found": len(self.modes) if self.env.n_modes is not None else None,
            "n_modes": self.env.n_modes,
            "log_Z": log_Z,
            "loss": float(sum(self._losses) / len(self._losses)) if self._losses else None,
            "teacher_loss": (
                float(sum(self._teacher_losses) / len(self._teacher_losses)) if self._teacher_losses else None
            ),
            "wall_s": round(self.wall_s, 3),
        }
        row.update(self.evaluator(self.student, self.teacher, log_Z, final))
        if self.modes.top_k > 0:
            row.update(self._top_metrics())
        if self.buffer is not None:
            row["buffer_size"] = len(self.buffer)
        self._losses.clear()
        self._teacher_losses.clear()
        return row

    def _top_metrics(self) -> dict[str, Any]:
        """Mean raw reward r (the papers' unscaled score) and diversity (``env.diversity``: Hamming, or
        Tanimoto on molecules) of the top-k distinct x by reward among every x sampled online so far."""
        k, x = self.modes.top_k, self.modes.top_states
        if x is None or len(x) == 0:
            return {f"top{k}_r": None, f"top{k}_diversity": None}
        raw = getattr(self.env, "raw_reward", None)
        r = raw(x) if raw is not None else self.modes.top_log_reward.exp()
        diversity = getattr(self.env, "diversity", None)
        return {f"top{k}_r": float(r.mean()), f"top{k}_diversity": diversity(x) if diversity is not None else None}

    def _eval_threshold(self, i: int) -> int:
        return (self.total * i) // self.cfg.n_evals

    # ---- the loop ---------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train to the budget; returns the summary. Ctrl-C raises RunInterrupted and a non-finite loss or
        policy TrainingDiverged, both after keeping the last checkpoint and the metrics so far.

        ``cfg.log`` trackers (tracking.py) start before anything is written, so a missing package stops the run
        cleanly; each metrics row is mirrored to them, and they are closed however the run ends."""
        self._trackers = self._start_tracking()
        try:
            return self._train()
        finally:
            self._trackers.close()

    def _start_tracking(self) -> Trackers:
        names = parse_log(self.cfg.log)
        if not names:
            return Trackers()
        if self.out_dir is None:
            raise ConfigError(
                f"{option('log')} {self.cfg.log}: tracking mirrors the run directory's metrics and this run has "
                f"none; give it one ({option('out')}) or drop {option('log')}"
            )
        return make_trackers(names, self.out_dir, self.cfg, task_spec(self.env), self.fingerprint, self.history)

    def _train(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.out_dir is not None:
            self._write_config()
            (self.out_dir / run_dir.SUMMARY).unlink(missing_ok=True)  # a summary only ever belongs to its run
            if self.step == 0 and not self.history:
                (self.out_dir / run_dir.METRICS).write_text("")
        threads_before = torch.get_num_threads()
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        show = cfg.progress and sys.stderr.isatty()
        bar = tqdm(
            total=self.total,
            initial=min(self.used, self.total),
            unit="it" if cfg.iterations is not None else "calls",
            disable=not show,
            dynamic_ncols=True,
            desc=cfg.method,
        )
        try:
            self._loop(bar)
        except KeyboardInterrupt:
            resume = f"; continue with 'adaptive-teacher train --resume {self.out_dir}'" if self.out_dir else ""
            raise RunInterrupted(f"interrupted at step {self.step}; {self._kept()}{resume}") from None
        except TrainingDiverged as e:
            raise TrainingDiverged(
                f"{e} at step {self.step} ({self.reward_calls} reward calls); {self._kept()}; "
                f"try a smaller {option('lr')} or check the reward"
            ) from None
        finally:
            bar.close()
            torch.set_num_threads(threads_before)
        summary = {
            **self.history[-1],
            "method": cfg.method,
            "task": task_spec(self.env),
            "seed": cfg.seed,
            "n_modes": self.env.n_modes,
            "reward_calls_budget": cfg.reward_calls if cfg.iterations is None else None,
            "iterations_budget": cfg.iterations,
            "fingerprint": self.fingerprint,
        }
        if self.out_dir is not None:
            run_dir.write_json(self.out_dir / run_dir.SUMMARY, summary)
            self._plot()
        return summary

    def _loop(self, bar) -> None:
        cfg = self.cfg
        if self.step == 0 and self.next_eval == 0:
            self._record(self.evaluate())
            self.next_eval = 1
        while self.used < self.total:
            t0 = time.perf_counter()
            before = self.used
            self.train_one_step()
            self.wall_s += time.perf_counter() - t0
            bar.update(min(self.used, self.total) - min(before, self.total))
            done = self.used >= self.total
            if done or self.used >= self._eval_threshold(self.next_eval):
                row = self.evaluate(final=done)
                bar.set_postfix({k: row.get(k) for k in self.family.progress_keys}, refresh=False)
                while self.next_eval <= cfg.n_evals and self.used >= self._eval_threshold(self.next_eval):
                    self.next_eval += 1
                self._record(row)

    @property
    def fingerprint(self) -> str:
        return run_dir.fingerprint(task_spec(self.env), self.cfg.to_dict())

    @property
    def identity(self) -> str:
        """The fingerprint without the budget: what a checkpoint must share with the config it resumes."""
        return run_dir.fingerprint(task_spec(self.env), self.cfg.to_dict(), ignore=run_dir.BUDGET_FIELDS)

    def _write_config(self) -> None:
        """config.json: the task, the config, its fingerprint and the code that started the run
        (``written_by``); a resumed run keeps that and lists the code of every later session that continued it
        (``resumed_by``, repeats collapsed)."""
        assert self.out_dir is not None
        path, version = self.out_dir / run_dir.CONFIG, run_dir.code_version()
        config: dict[str, Any] = {
            "task": task_spec(self.env),
            "config": self.cfg.to_dict(),
            "fingerprint": self.fingerprint,
            "written_by": version,
        }
        if self.resumed and path.exists():
            try:
                earlier = run_dir.read_json(path, "run")
            except DataError:
                earlier = {}
            resumed = [v for v in earlier.get("resumed_by", []) if isinstance(v, dict)]
            config["written_by"] = earlier.get("written_by")  # None: written before config.json recorded it
            if version != (resumed[-1] if resumed else config["written_by"]):
                resumed.append(version)
            if resumed:
                config["resumed_by"] = resumed
            earlier_ids = {*earlier.get("earlier_identities", []), *self.earlier_identities} - {self.identity}
            if earlier_ids:  # checkpoints written under these identities stay loadable (restore)
                config["earlier_identities"] = sorted(earlier_ids)
        run_dir.write_json(path, config)

    def _plot(self) -> None:
        """The run's own plots; a plotting failure is reported, never fatal (the results are written)."""
        assert self.out_dir is not None
        cfg = self.cfg
        budget = f"{cfg.iterations} iterations" if cfg.iterations is not None else f"{cfg.reward_calls} reward calls"
        spec = task_spec(self.env)
        task = spec["name"] + "".join(f" {k}={v}" for k, v in spec.items() if k != "name" and v is not None)
        title = f"{task} · {cfg.method} · seed {cfg.seed} · {budget}"
        try:
            self.family.plot_run(self.out_dir, self.history, self.evaluator, self.env, title)
        except Exception as e:  # noqa: BLE001 - plots are a convenience; the metrics are on disk
            print(f"adaptive-teacher: warning: could not draw the plots of {self.out_dir}: {e}", file=sys.stderr)

    def _record(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        snapshots = getattr(self.evaluator, "snapshots", None)
        if snapshots:
            snapshots[-1]["step"] = self.step
        if self.out_dir is None:
            return
        with run_dir.deferred_interrupt():
            with open(self.out_dir / run_dir.METRICS, "a") as f:
                f.write(json.dumps(row) + "\n")
            run_dir.save_checkpoint(self.state_dict(), self.out_dir)
        self._trackers.log(row, int(row["step"]))  # after the row is safe on disk; a failing tracker is dropped

    # ---- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "student": self.student.state_dict(),
            "opt_student": self.opt_student.state_dict(),
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "opt_teacher": None if self.opt_teacher is None else self.opt_teacher.state_dict(),
            "rnd": None if self.rnd is None else self.rnd.state_dict(),
            "buffer": None if self.buffer is None else self.buffer.state_dict(),
            "modes": sorted(self.modes.found),
            "top": self.modes.state_dict() if self.modes.top_k > 0 else None,
            "guide": None if self.guide is None else self.guide.state_dict(),
            "step": self.step,
            "reward_calls": self.reward_calls,
            "wall_s": self.wall_s,
            "next_eval": self.next_eval,
            "history": self.history,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "milestones_done": self.milestones_done,
            "mala_step_size": self.mala_step_size,
            "teacher_gate": self.teacher_gate,
            "fingerprint": self.fingerprint,
            "identity": self.identity,
            "snapshots": getattr(self.evaluator, "snapshots", None),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.student.load_state_dict(d["student"])
        self.opt_student.load_state_dict(_steps_on_cpu(d["opt_student"]))
        if self.teacher is not None:
            self.teacher.load_state_dict(d["teacher"])
            assert self.opt_teacher is not None
            self.opt_teacher.load_state_dict(_steps_on_cpu(d["opt_teacher"]))
        if self.rnd is not None:
            self.rnd.load_state_dict(d["rnd"])
        if self.buffer is not None:
            self.buffer.load_state_dict(d["buffer"])
        self.modes.found = set(d["modes"])
        if d.get("top") is not None:
            self.modes.load_state_dict(d["top"])
        if self.guide is not None:
            self.guide.load_state_dict(d["guide"])
        if hasattr(self.evaluator, "evaluations"):  # the exact-metrics cadence continues where it was
            self.evaluator.evaluations = len(self.history)
        self.step, self.reward_calls, self.wall_s = d["step"], d["reward_calls"], d["wall_s"]
        self.next_eval, self.history = d["next_eval"], d["history"]
        torch.set_rng_state(d["rng"].cpu())
        if self.device.type == "cuda" and d.get("cuda_rng") is not None:  # a run continued on the GPU it ran on
            torch.cuda.set_rng_state(d["cuda_rng"].cpu(), self.device)
        self.milestones_done = d.get("milestones_done", 0)
        self.mala_step_size = d.get("mala_step_size", self.mala_step_size)
        self.teacher_gate = d.get("teacher_gate", self.teacher_gate)
        if d.get("snapshots") is not None and hasattr(self.evaluator, "snapshots"):  # kept on the CPU for the plots
            self.evaluator.snapshots = [
                {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in snap.items()} for snap in d["snapshots"]
            ]

    def save_checkpoint(self, path: Path) -> None:
        """Write the checkpoint into ``path``'s directory (the previous one is kept beside it)."""
        run_dir.save_checkpoint(self.state_dict(), Path(path).parent)

    def restore(self, state: dict[str, Any], source: Path) -> None:
        """Load a checkpoint's state; one that does not fit this config is a DataError naming the file."""
        saved = state.get("identity")
        self.resumed = True
        if saved is not None and saved != self.identity and not self._written_before_new_options(saved, source):
            raise DataError(
                f"{source} belongs to another configuration than {source.parent / run_dir.CONFIG} "
                "(fingerprints differ); restore the run's config.json or start a new run"
            )
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise DataError(
                f"{source} does not fit the run's configuration ({first}); was config.json edited or "
                "replaced? restore it, or start a new run"
            ) from None

    def _written_before_new_options(self, identity: str, source: Path) -> bool:
        """Whether a checkpoint whose identity differs from this config's is still this run: it fits the run's
        config.json as an earlier version wrote it, before some options existed (or with options that are
        inert for it), or one of the identities config.json lists as accepted that way before it was rewritten
        (``earlier_identities``), and that config trains the same run as this one (``config.comparable_config``)."""
        if not (source.parent / run_dir.CONFIG).exists():
            return False
        try:
            written = run_dir.read_config(source.parent)
        except (DataError, ConfigError):
            return False
        task = task_spec(self.env)
        if written["task"] != task:
            return False
        budget = run_dir.BUDGET_FIELDS
        known = [run_dir.fingerprint(task, written["config"], ignore=budget), *written.get("earlier_identities", [])]
        if identity not in known:
            return False
        ours, theirs = comparable_config(self.cfg.to_dict()), comparable_config(written["config"])
        if run_dir.fingerprint(task, ours, ignore=budget) != run_dir.fingerprint(task, theirs, ignore=budget):
            return False
        self.earlier_identities = sorted({*self.earlier_identities, identity})
        return True

    @classmethod
    def resume(
        cls,
        out_dir: str | Path,
        env: TaskEnv | None = None,
        reward_calls: int | None = None,
        iterations: int | None = None,
        device: str | None = None,
    ) -> Trainer:
        """Continue an interrupted run from its last checkpoint (metrics written after it are dropped).

        ``reward_calls`` / ``iterations`` change the budget (of the kind the run was started with), e.g. to
        extend a finished run; the run's config.json is updated to match. ``device`` moves the run to another
        device (not part of the fingerprint: it stays the same run; its checkpoint loads onto that device)."""
        from adaptive_teacher.tasks import make_task

        out = Path(out_dir)
        if not out.is_dir() or not (out / run_dir.CONFIG).exists():
            raise ConfigError(
                f"{option('resume')}: {out} holds no run ({run_dir.CONFIG} missing); start the run without "
                f"{option('resume')}"
            )
        saved = run_dir.read_config(out)
        cfg = TrainConfig.from_dict(saved["config"])
        if device is not None:
            cfg = replace(cfg, device=device)
        if env is None:
            env = make_task(saved["task"])
        elif task_spec(env) != saved["task"]:
            raise ConfigError(f"{out} was trained on the task {saved['task']}, not on {task_spec(env)}")
        trainer = cls(env, cfg, None)
        state, source = run_dir.load_checkpoint(out, warn=_warn, map_location=trainer.device)
        trainer.restore(state, source)
        budget_changed = trainer._set_budget(reward_calls, iterations)
        trainer.out_dir = out
        kept = [json.dumps(r) for r in trainer.history]
        (out / run_dir.METRICS).write_text("".join(line + "\n" for line in kept))
        if budget_changed:
            trainer._write_config()
        return trainer

    def _set_budget(self, reward_calls: int | None, iterations: int | None) -> bool:
        """Change the budget of a resumed run; True when it changed."""
        cfg = self.cfg
        if reward_calls is not None and iterations is not None:
            raise ConfigError(f"give one budget: {option('reward_calls')} or {option('iterations')}, not both")
        if iterations is not None and cfg.iterations is None:
            raise ConfigError(
                f"this run's budget is in reward calls; extend it with {option('reward_calls')}, not "
                f"{option('iterations')}"
            )
        if reward_calls is not None and cfg.iterations is not None:
            raise ConfigError(
                f"this run's budget is in iterations; extend it with {option('iterations')}, not "
                f"{option('reward_calls')}"
            )
        new = reward_calls if reward_calls is not None else iterations
        if new is None or new == self.total:
            return False
        if new < self.used:
            raise ConfigError(f"the new budget {new} is below what the run has already used ({self.used})")
        changed = replace(cfg, reward_calls=new) if reward_calls is not None else replace(cfg, iterations=new)
        validate(changed)
        self.cfg = changed
        return True


def _steps_on_cpu(opt_state: dict[str, Any]) -> dict[str, Any]:
    """An optimiser state_dict with its per-parameter ``step`` counters on the CPU, where Adam keeps them (it
    moves every other state tensor to its parameter's device itself), wherever ``map_location`` put them."""
    state = {
        key: {name: v.cpu() if name == "step" and isinstance(v, torch.Tensor) else v for name, v in per.items()}
        for key, per in opt_state.get("state", {}).items()
    }
    return {**opt_state, "state": state}


def _warn(message: str) -> None:
    print(f"adaptive-teacher: warning: {message}", file=sys.stderr)


def _place(env: TaskEnv, device: torch.device) -> None:
    """Move the environment's tensors to the run's device (``env.to``, in place); an environment without
    ``to`` can only run on the CPU."""
    mover = getattr(env, "to", None)
    if callable(mover):
        mover(device)
    elif device.type != "cpu":
        raise ConfigError(
            f"{type(env).__name__} has no to(device), so it cannot run on {device}: subclass "
            f"adaptive_teacher.DiscreteEnv or wrap a Density in DiffusionEnv, or use {option('device')} cpu"
        )


def _physical_memory(device: torch.device | None = None) -> int | None:
    """Bytes of memory of the run's device: the machine's RAM for the CPU, the GPU's own for CUDA."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(env: TaskEnv, cfg: TrainConfig, device: torch.device | None = None) -> None:
    """Refuse a batch size whose one training step needs more memory than the run's device has.

    A rough upper estimate of one step: every transition of the batch is one row of network input, hidden
    activations (kept for the backward pass) and outputs, in float32, for the Student and the Teacher."""
    total = _physical_memory(device)
    if total is None:
        return
    width = cfg.hidden * 4  # at most four hidden layers in the policies of both families
    per_row = 4 * (int(getattr(env, "n_features", getattr(env, "dim", 1))) + 3 * width + 4 * 64)
    rows = cfg.batch_size * int(getattr(env, "max_length", 1))
    need = rows * per_row * (2 if cfg.teacher else 1)
    if need > 0.8 * total:
        raise ConfigError(
            f"{option('batch_size')} {cfg.batch_size} needs about {need / 2**30:.0f} GiB for one training step "
            f"({'this machine' if device is None or device.type == 'cpu' else str(device)} has "
            f"{total / 2**30:.0f} GiB); use a smaller {option('batch_size')}"
        )
