#!/usr/bin/env python
"""Training throughput of the diffusion sampler on Manywell-32: the library's Trainer vs a bare TB loop.

    .venv/bin/python benchmarks/bench_diffusion.py            # about 3-4 minutes on 2 shared CPU cores
    .venv/bin/python benchmarks/bench_diffusion.py --quick    # under 40 s
    .venv/bin/python benchmarks/bench_diffusion.py --profile  # phase split + cProfile of the three runners
    .venv/bin/python benchmarks/bench_diffusion.py --what-if --rounds 16  # + two variants of the bare loop

Set-up (the library's diffusion defaults): batch 300, T = 100 Euler-Maruyama steps, PIS drift network
(hidden 64, 64 Fourier harmonics), fixed variance sigma^2 = the density's t_scale, Brownian-bridge P_B, TB
loss, Adam lr 1e-3 and log Z lr 1e-1, no gradient clipping. Runners, all in one process:

* ``bare tb``: the ~60-line plain-torch loop below (the reference). It reuses the library's
  ``DiffusionPolicy`` class for the *network* (same architecture, same seed, same initial weights), so only
  the training loop differs: forward Euler-Maruyama rollout under no_grad storing the states, one batched
  network pass over all B*T transitions for the Gaussian log P_F and the Brownian-bridge log P_B (float32),
  TB loss with a learned log Z, one Adam step. The target log-density is ``Manywell.log_reward``.
* ``library tb`` / ``library teacher``: ``Trainer.train_one_step`` (the scheduled batch, both updates) exactly as
  ``Trainer.train`` drives them (the schedule, ``step`` counter, lr milestones, loss bookkeeping), with the
  evaluation excluded. The budget is set to 10^6 iterations so the milestones / exploration decay never act.

Timing: every runner draws from its own copy of the RNG (so interleaving does not change its samples),
runs a warm-up, then the runners take turns in rounds of ``--block`` iterations (default 4 = one full
Teacher schedule cycle, so every block of the teacher holds the same mix of sources). The reported
s/iteration is the median (and IQR) over blocks; ratios are medians of the per-round paired ratios, which
cancels most of the drift of a shared machine.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import platform
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from adaptive_teacher.config import resolve_config
from adaptive_teacher.diffusion_policies import DiffusionPolicy
from adaptive_teacher.envs.base import Trajectories
from adaptive_teacher.objectives import trajectory_balance
from adaptive_teacher.tasks import make_task
from adaptive_teacher.trainer import Trainer

TASK = {"name": "manywell", "dim": 32}
BATCH, T_STEPS, HIDDEN = 300, 100, 64
LOG_2PI = math.log(2 * math.pi)


# ---- the reference: a bare TB loop in plain torch --------------------------------------------------
class BareTB:
    """Euler-Maruyama diffusion sampler + Brownian-bridge P_B + TB, written directly in torch."""

    def __init__(self, density, batch: int = BATCH, n_steps: int = T_STEPS, seed: int = 0):
        torch.manual_seed(seed)
        self.density, self.bs, self.T, self.dim = density, batch, n_steps, density.dim
        self.dt, self.sigma2 = 1.0 / n_steps, float(density.t_scale)
        self.net = DiffusionPolicy(self.dim, arch="pis", hidden=HIDDEN, t_scale=self.sigma2)  # the library's net
        body = [p for n, p in self.net.named_parameters() if n != "log_Z"]
        self.opt = torch.optim.Adam([{"params": body, "lr": 1e-3}, {"params": [self.net.log_Z], "lr": 1e-1}])
        self.t_flat = (torch.arange(n_steps, dtype=torch.float32) / n_steps).repeat(batch)  # t_k of each row
        k = torch.arange(2, n_steps + 1, dtype=torch.float32)
        self.ratio = ((k - 1) / k)[None, :, None]  # P_B(x_{k-1} | x_k) = N(r x_k, r sigma^2 dt), r = (k-1)/k
        self.b_var = self.ratio * self.sigma2 * self.dt
        # Constant parts of the Gaussian log-densities, summed over the steps and coordinates.
        self.pf_const = -0.5 * n_steps * self.dim * (math.log(self.sigma2 * self.dt) + LOG_2PI)
        self.pb_const = float(-0.5 * self.dim * (self.b_var.log() + LOG_2PI).sum())

    @torch.no_grad()
    def rollout(self) -> torch.Tensor:
        x = torch.zeros(self.bs, self.dim)
        states = torch.zeros(self.bs, self.T + 1, self.dim)
        std = math.sqrt(self.sigma2 * self.dt)
        for k in range(self.T):
            x = x + self.dt * self.step_drift(x, k) + std * torch.randn_like(x)
            states[:, k + 1] = x
        return states

    def step_drift(self, x: torch.Tensor, k: int) -> torch.Tensor:  # u(x, t_k) for one rollout step
        return self.net(x, k * self.dt)[0]

    def all_drifts(self, src: torch.Tensor) -> torch.Tensor:  # u at all B*T (x_k, t_k), rows ordered (b, k)
        return self.net(src, self.t_flat)[0]

    def loss(self, states: torch.Tensor) -> torch.Tensor:
        log_r = self.density.log_reward(states[:, -1]).float()
        src = states[:, :-1].reshape(-1, self.dim)
        resid = states[:, 1:].reshape(-1, self.dim) - src - self.dt * self.all_drifts(src)
        log_pf = -0.5 * (resid**2).sum(-1).view(self.bs, self.T).sum(1) / (self.sigma2 * self.dt) + self.pf_const
        parent, child = states[:, 1:-1], states[:, 2:]
        log_pb = -0.5 * (((parent - self.ratio * child) ** 2) / self.b_var).sum((1, 2)) + self.pb_const
        delta = log_r + log_pb - self.net.log_Z - log_pf
        return (delta**2).mean()

    def update(self, loss: torch.Tensor) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    def step(self) -> float:
        return self.update(self.loss(self.rollout()))


# ---- what-if variants of the bare loop (--what-if): attribute the gap / size a possible speed-up ------
class BareLibLogProbs(BareTB):
    """The bare loop with its loss evaluated by the library's DiffusionEnv.log_probs + trajectory_balance."""

    def __init__(self, env, seed: int = 0):
        super().__init__(env.density, seed=seed)
        self.env = env

    def loss(self, states: torch.Tensor) -> torch.Tensor:
        traj = Trajectories(states, torch.zeros(self.bs, self.T, dtype=torch.long), torch.full((self.bs,), self.T))
        log_r = self.density.log_reward(states[:, -1]).float()
        return trajectory_balance(self.env.log_probs(self.net, traj), self.net.log_Z, log_r)[0]


class BareSharedTime(BareTB):
    """The bare loop computing the PIS time embedding once per distinct t_k (T rows, not B*T), then broadcasting.

    Same network, same weights, same outputs (the time branch of the PIS net depends on t only)."""

    def __init__(self, density, seed: int = 0):
        super().__init__(density, seed=seed)
        self.t_grid = torch.arange(self.T, dtype=torch.float32) / self.T

    def t_emb(self) -> torch.Tensor:  # [T, hidden]
        return self.net.t_model(self.net.time_features(self.t_grid))

    def rollout(self) -> torch.Tensor:
        with torch.no_grad():
            self._t_emb = self.t_emb()
        return super().rollout()

    def step_drift(self, x: torch.Tensor, k: int) -> torch.Tensor:
        out = self.net.joint(self.net.s_model(x) + self._t_emb[k])
        return out[:, : self.dim].clamp(-self.net.out_clip, self.net.out_clip)

    def all_drifts(self, src: torch.Tensor) -> torch.Tensor:
        h = self.net.s_model(src).view(self.bs, self.T, -1) + self.t_emb()[None]
        out = self.net.joint(h.view(self.bs * self.T, -1))
        return out[:, : self.dim].clamp(-self.net.out_clip, self.net.out_clip)


# ---- the library ---------------------------------------------------------------------------------
def library_runner(method: str, seed: int = 0) -> tuple[Callable[[], float], Trainer]:
    """A step function driving the library's Trainer as Trainer.train does, without evaluation."""
    env = make_task(TASK)
    cfg = resolve_config(method, "diffusion", seed=seed, iterations=10**6, progress=False)
    assert cfg.batch_size == BATCH and cfg.hidden == HIDDEN and cfg.arch == "pis" and env.n_steps == T_STEPS
    trainer = Trainer(env, cfg)
    trainer.gated_rows = []  # the rows the Teacher trained on, per step (the benchmark's own bookkeeping)

    def step() -> float:
        traj, result = trainer.train_one_step()
        if len(trainer._losses) > 1000:  # evaluate() would clear these
            trainer._losses.clear()
            trainer._teacher_losses.clear()
        if trainer.teacher is not None:
            trainer.gated_rows.append(float((traj.log_reward > trainer.teacher_gate).float().mean()))
        return result.loss

    return step, trainer


# ---- timing ---------------------------------------------------------------------------------------
@dataclass
class Runner:
    name: str
    step: Callable[[], float]
    blocks: list[float] = field(default_factory=list)  # seconds per iteration of each timed block
    rng: torch.Tensor = field(default_factory=torch.get_rng_state)

    def run(self, iters: int, record: bool = True) -> None:
        torch.set_rng_state(self.rng)
        t0 = time.perf_counter()
        for _ in range(iters):
            self.step()
        dt = time.perf_counter() - t0
        self.rng = torch.get_rng_state()
        if record:
            self.blocks.append(dt / iters)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def make_runners(seed: int, what_if: bool = False) -> tuple[list[Runner], Trainer]:
    env = make_task(TASK)
    runners = [Runner("bare tb", BareTB(env.density, seed=seed).step)]
    tb_step, _ = library_runner("tb", seed)
    runners.append(Runner("library tb", tb_step))
    teacher_step, teacher = library_runner("teacher", seed)
    runners.append(Runner("library teacher", teacher_step))
    if what_if:
        runners.append(Runner("what-if: bare tb + library log_probs", BareLibLogProbs(env, seed=seed).step))
        runners.append(Runner("what-if: bare tb + shared time embedding", BareSharedTime(env.density, seed=seed).step))
    return runners, teacher


def markdown(runners: list[Runner]) -> str:
    bare = runners[0]
    tb = next(r for r in runners if r.name == "library tb")
    lines = [
        "| runner | s/iteration (median) | IQR | iterations/s | vs bare tb (paired median, IQR) | vs library tb |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runners:
        q1, med, q3 = quartiles(r.blocks)
        b1, bm, b3 = quartiles([a / b for a, b in zip(r.blocks, bare.blocks, strict=True)])
        t1, tm, t3 = quartiles([a / b for a, b in zip(r.blocks, tb.blocks, strict=True)])
        lines.append(
            f"| {r.name} | {med:.3f} | {q1:.3f}-{q3:.3f} | {1 / med:.2f} | {bm:.2f}x ({b1:.2f}-{b3:.2f}) | "
            f"{tm:.2f}x ({t1:.2f}-{t3:.2f}) |"
        )
    return "\n".join(lines)


# ---- profiling ------------------------------------------------------------------------------------
def timed(fn: Callable, phase: str, acc: dict[str, float]) -> Callable:
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[phase] = acc.get(phase, 0.0) + time.perf_counter() - t0

    return wrapper


PHASES = ("rollout", "loss forward", "backward + Adam", "other")


def phase_split(args: argparse.Namespace) -> str:
    """Median seconds/iteration per phase, bare vs library tb, interleaved. The phases are measured by wrapping
    (on the instances only) the rollout, the loss evaluation and the optimiser step of each loop."""
    env = make_task(TASK)
    bare = BareTB(env.density, seed=args.seed)
    tb_step, trainer = library_runner("tb", args.seed)
    acc: dict[str, dict[str, float]] = {"bare tb": {}, "library tb": {}}
    bare.rollout = timed(bare.rollout, "rollout", acc["bare tb"])
    bare.loss = timed(bare.loss, "loss forward", acc["bare tb"])
    bare.update = timed(bare.update, "backward + Adam", acc["bare tb"])
    trainer.env.rollout = timed(trainer.env.rollout, "rollout", acc["library tb"])
    trainer._objective = timed(trainer._objective, "loss forward", acc["library tb"])
    trainer._clip_step = timed(trainer._clip_step, "backward + Adam", acc["library tb"])
    runners = [Runner("bare tb", bare.step), Runner("library tb", tb_step)]
    for r in runners:
        r.run(args.warmup, record=False)
    samples: dict[str, dict[str, list[float]]] = {r.name: {ph: [] for ph in PHASES} for r in runners}
    for _ in range(args.profile_iters):
        for r in runners:
            acc[r.name].clear()
            r.run(1)
            known = sum(acc[r.name].values())
            for ph in PHASES[:-1]:
                samples[r.name][ph].append(acc[r.name].get(ph, 0.0))
            samples[r.name]["other"].append(r.blocks[-1] - known)
    lines = ["| phase | bare tb (s/it) | library tb (s/it) | difference |", "| --- | ---: | ---: | ---: |"]
    for ph in (*PHASES, "total"):
        if ph == "total":
            b, lib = (statistics.median(r.blocks) for r in runners)
        else:
            b, lib = (statistics.median(samples[r.name][ph]) for r in runners)
        lines.append(f"| {ph} | {b:.3f} | {lib:.3f} | {lib - b:+.3f} |")
    return "\n".join(lines)


def profile(args: argparse.Namespace) -> None:
    """A phase split of bare vs library tb, then cProfile of ``--profile-iters`` iterations of each runner."""
    print(f"phase split, median over {args.profile_iters} interleaved iterations (no profiler):\n")
    print(phase_split(args))
    runners, _ = make_runners(args.seed)
    for r in runners:
        r.run(args.warmup, record=False)
    for r in runners:
        torch.set_rng_state(r.rng)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for _ in range(args.profile_iters):
            r.step()
        prof.disable()
        dt = (time.perf_counter() - t0) / args.profile_iters
        r.rng = torch.get_rng_state()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats("tottime").print_stats(args.profile_top)
        text = out.getvalue()
        print(f"\n===== {r.name}: {dt:.3f} s/iteration under cProfile, top {args.profile_top} by tottime =====")
        print(text[text.index("   ncalls") :].rstrip() if "   ncalls" in text else text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run (< 40 s) for checking that everything works")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (each runner runs one block per round)")
    p.add_argument("--block", type=int, default=4, help="iterations per runner per round (4 = one Teacher cycle)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations per runner first")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--what-if", action="store_true", help="also time two variants of the bare loop (see the code)")
    p.add_argument("--profile", action="store_true", help="phase split + cProfile instead of the timing table")
    p.add_argument("--profile-iters", type=int, default=10)
    p.add_argument("--profile-top", type=int, default=20)
    args = p.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 36)
    args.warmup = args.warmup if args.warmup is not None else (4 if args.quick else 8)
    torch.set_num_threads(args.threads)
    plan = (
        f"{args.warmup} warm-up + {args.profile_iters} profiled iterations per runner"
        if args.profile
        else f"{args.warmup} warm-up + {args.rounds} rounds x {args.block} timed iterations per runner"
    )
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"task {TASK}, batch {BATCH}, T {T_STEPS}, PIS hidden {HIDDEN}; {plan}\n",
        flush=True,
    )
    t0 = time.perf_counter()
    if args.profile:
        profile(args)
        print(f"\n(total {time.perf_counter() - t0:.0f} s)")
        return
    runners, teacher = make_runners(args.seed, args.what_if)
    for r in runners:
        r.run(args.warmup, record=False)
    for _ in range(args.rounds):
        for r in runners:
            r.run(args.block)
    print(markdown(runners))
    gated = teacher.gated_rows[args.warmup :]
    print(
        f"\nteacher schedule {[str(s) for s in teacher.schedule[:4]]} (cyclic); the Teacher trained on "
        f"{100 * statistics.mean(gated):.0f} % of the rows of its batches on average (the gate: log R above "
        f"the 0.9 quantile under the initial Student); buffer size {len(teacher.buffer or [])} at the end"
    )
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
