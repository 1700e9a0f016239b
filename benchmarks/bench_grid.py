#!/usr/bin/env python
"""Training throughput on the deceptive hypergrid: the library vs a bare TB loop (and torchgfn, if importable).

    .venv/bin/python benchmarks/bench_grid.py            # about 2-3 minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_grid.py --quick    # under 30 s

For every grid (d=2, H=64 and d=4, H=16) and batch size 16 it times, in one process and interleaved in
rounds (so that a noisy machine slows every runner alike; the ratios are medians of per-round ratios):

* ``library tb`` / ``library teacher``: the library's ``Trainer`` driven exactly as ``Trainer.train``
  drives it (``train_one_step``), evaluation excluded;
* ``bare tb``: the ~60-line plain-torch TB loop below (the reference);
* ``torchgfn tb``: torchgfn's HyperGrid TB example set-up (KHot input, uniform P_B, on-policy log-probs
  saved during sampling) with torchgfn's own deceptive reward, only when ``import gfn`` works.
  torchgfn's HyperGrid lets a trajectory keep moving in the other coordinates after one reaches H-1
  (ours forces stop), so its trajectories differ in length: compare transitions per second too.

All runners use the defaults of the library (MLP 2x256 LeakyReLU, Adam lr 1e-3, log Z lr 0.1, gradient
clipping 1.0), the same seed, a warm-up, and ``torch.set_num_threads(--threads)`` (default 1).
"""

from __future__ import annotations

import argparse
import importlib
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

GRIDS = [(2, 64), (4, 16)]
BATCH = 16


# ---- the reference: a bare TB loop in plain torch --------------------------------------------------
class BareTB:
    """Deceptive grid + TB with uniform P_B, written directly in torch (no library code)."""

    def __init__(self, dim: int, height: int, batch: int = BATCH, seed: int = 0, hidden: int = 256):
        torch.manual_seed(seed)
        self.d, self.h, self.bs = dim, height, batch
        self.net = nn.Sequential(
            nn.Linear(dim * height, hidden),
            nn.LeakyReLU(),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(),
            nn.Linear(hidden, dim + 1),
        )
        self.log_z = nn.Parameter(torch.zeros(()))
        self.params = list(self.net.parameters()) + [self.log_z]
        self.opt = torch.optim.Adam([{"params": self.params[:-1], "lr": 1e-3}, {"params": [self.log_z], "lr": 0.1}])
        self.offsets = torch.arange(dim) * height
        self.moves = torch.arange(dim)
        self.max_len = dim * (height - 1) + 1

    def feats(self, s: torch.Tensor) -> torch.Tensor:  # one-hot per coordinate, [n, d*H]
        return torch.zeros(s.shape[0], self.d * self.h).scatter_(1, s + self.offsets, 1.0)

    def fmask(self, s: torch.Tensor) -> torch.Tensor:  # a coordinate at H-1 forces stop
        ok = (s < self.h - 1).all(-1, keepdim=True)
        return torch.cat([ok.expand(-1, self.d), torch.ones_like(ok)], -1)

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        xt = (2.0 * x.double() / (self.h - 1) - 1.0).abs()
        ring = ((xt > 0.6) & (xt < 0.8)).all(-1).double()
        return (1e-5 + 0.1 * (1.0 - (xt > 0.2).all(-1).double()) + 2.0 * ring).log()

    @torch.no_grad()
    def rollout(self) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.zeros(self.bs, self.d, dtype=torch.long)
        done = torch.zeros(self.bs, dtype=torch.bool)
        states, actions = [s], []
        for _ in range(self.max_len):
            logits = self.net(self.feats(s)).masked_fill(~self.fmask(s), -math.inf)
            a = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(1).masked_fill(done, -1)
            s = s + (a[:, None] == self.moves)  # stop (= d) and padding (-1) leave s as it is
            done = done | (a == self.d)
            states.append(s)
            actions.append(a)
            if bool(done.all()):
                break
        return torch.stack(states, 1), torch.stack(actions, 1)

    def step(self) -> tuple[int, int]:
        states, actions = self.rollout()
        b, t = actions.shape
        log_r = self.log_reward(states[:, -1]).float()
        src = states[:, :-1].reshape(b * t, self.d)
        logits = self.net(self.feats(src)).masked_fill(~self.fmask(src), -math.inf)
        valid = actions >= 0
        log_pf = logits.log_softmax(-1).gather(1, actions.reshape(-1, 1).clamp(min=0)).view(b, t)
        child = states[:, 1:]
        n_parents = torch.where((child == self.h - 1).any(-1), 1, (child > 0).sum(-1)).clamp(min=1)
        log_pb = torch.where(valid & (actions < self.d), -n_parents.float().log(), 0.0)
        delta = log_r + log_pb.sum(1) - self.log_z - torch.where(valid, log_pf, 0.0).sum(1)
        loss = (delta**2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        loss.item()
        return b, int(valid.sum())


# ---- the library ---------------------------------------------------------------------------------
def library_runner(dim: int, height: int, method: str, seed: int = 0, package: str = "adaptive_teacher"):
    """A step function driving the library's Trainer as Trainer.train does, without evaluation."""
    lib = importlib.import_module(package)
    trainer_mod = importlib.import_module(package + ".trainer")
    config_mod = importlib.import_module(package + ".config")
    env = lib.DeceptiveGrid(dim, height)
    cfg = config_mod.resolve_config(method, seed=seed, batch_size=BATCH, n_evals=1, progress=False)
    trainer = trainer_mod.Trainer(env, cfg)
    milestones = getattr(trainer, "_apply_lr_milestones", None)  # newer trainers call it after every step

    def step() -> tuple[int, int]:
        before = trainer.reward_calls
        if hasattr(trainer, "train_one_step"):
            traj, _ = trainer.train_one_step()
            if len(trainer._losses) > 1000:  # evaluate() would clear these
                trainer._losses.clear()
                trainer._teacher_losses.clear()
            return trainer.reward_calls - before, int(traj.lengths.sum())
        # an older copy of the library (the --baseline-package run) has no train_one_step
        traj, is_new = trainer.next_batch(trainer.schedule[trainer.step % len(trainer.schedule)])
        result = trainer.train_step(traj, is_new)
        trainer.step += 1
        if milestones is not None:
            milestones()
        trainer._losses.append(result.loss)
        if not math.isnan(result.teacher_loss):
            trainer._teacher_losses.append(result.teacher_loss)
        if len(trainer._losses) > 1000:  # evaluate() would clear these
            trainer._losses.clear()
            trainer._teacher_losses.clear()
        return trainer.reward_calls - before, int(traj.lengths.sum())

    return step


# ---- torchgfn (optional) --------------------------------------------------------------------------
def torchgfn_available() -> str | None:
    try:
        import gfn  # noqa: F401
    except Exception:
        return None
    from importlib.metadata import version

    return version("torchgfn")


def torchgfn_runner(dim: int, height: int, seed: int = 0):
    """torchgfn's HyperGrid TB example configuration (with the deceptive reward and our optimiser settings)."""
    from gfn.estimators import DiscretePolicyEstimator
    from gfn.gflownet import TBGFlowNet
    from gfn.gym import HyperGrid
    from gfn.preprocessors import KHotPreprocessor
    from gfn.samplers import Sampler
    from gfn.utils.modules import MLP, DiscreteUniform

    torch.manual_seed(seed)
    env = HyperGrid(
        ndim=dim,
        height=height,
        reward_fn_str="deceptive",
        reward_fn_kwargs={"R0": 1e-5, "R1": 0.1, "R2": 2.0},
    )
    pre = KHotPreprocessor(height=height, ndim=dim)
    pf_module = MLP(pre.output_dim, env.n_actions, hidden_dim=256, n_hidden_layers=2, activation_fn="leaky_relu")
    pf = DiscretePolicyEstimator(pf_module, env.n_actions, preprocessor=pre, is_backward=False)
    pb = DiscretePolicyEstimator(DiscreteUniform(env.n_actions - 1), env.n_actions, preprocessor=pre, is_backward=True)
    gflownet = TBGFlowNet(pf=pf, pb=pb, init_logZ=0.0)
    sampler = Sampler(estimator=pf)
    opt = torch.optim.Adam(gflownet.pf_pb_parameters(), lr=1e-3)
    opt.add_param_group({"params": gflownet.logz_parameters(), "lr": 0.1})

    def step() -> tuple[int, int]:
        traj = sampler.sample_trajectories(env, n=BATCH, save_logprobs=True)
        opt.zero_grad()
        loss = gflownet.loss(env, traj, recalculate_all_logprobs=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gflownet.parameters(), 1.0)
        opt.step()
        loss.item()
        return BATCH, int(traj.terminating_idx.sum())  # transitions, the exit action included

    return step


# ---- timing ---------------------------------------------------------------------------------------
@dataclass
class Timing:
    name: str
    step: Callable[[], tuple[int, int]]
    seconds: float = 0.0
    trajectories: int = 0
    reward_calls: int = 0
    transitions: int = 0
    rounds: list[float] = field(default_factory=list)
    # Each runner draws from its own copy of the global RNG (captured right after it was built, seeded),
    # so interleaving does not change its trajectories: the bare loop and library tb sample alike.
    rng: torch.Tensor = field(default_factory=torch.get_rng_state)

    def run(self, steps: int, record: bool = True) -> None:
        calls = trajs = trans = 0
        torch.set_rng_state(self.rng)
        t0 = time.perf_counter()
        for _ in range(steps):
            c, n = self.step()
            calls += c
            trans += n
            trajs += BATCH
        dt = time.perf_counter() - t0
        self.rng = torch.get_rng_state()
        if record:
            self.seconds += dt
            self.trajectories += trajs
            self.reward_calls += calls
            self.transitions += trans
            self.rounds.append(dt)

    @property
    def traj_per_s(self) -> float:
        return self.trajectories / self.seconds

    @property
    def s_per_10k_calls(self) -> float:
        return self.seconds / max(self.reward_calls, 1) * 10_000


def bench_grid(dim: int, height: int, args: argparse.Namespace, gfn_version: str | None) -> list[Timing]:
    runners = [
        Timing("bare tb", BareTB(dim, height, seed=args.seed).step),
        Timing("library tb", library_runner(dim, height, "tb", args.seed)),
        Timing("library teacher", library_runner(dim, height, "teacher", args.seed)),
    ]
    for pkg in args.baseline_package or []:
        runners.append(Timing(f"{pkg} tb", library_runner(dim, height, "tb", args.seed, pkg)))
        runners.append(Timing(f"{pkg} teacher", library_runner(dim, height, "teacher", args.seed, pkg)))
    if gfn_version is not None and not args.no_torchgfn:
        runners.append(Timing(f"torchgfn {gfn_version} tb", torchgfn_runner(dim, height, args.seed)))
    for r in runners:
        r.run(args.warmup, record=False)
    per_round = max(1, args.steps // args.rounds)
    for _ in range(args.rounds):
        for r in runners:
            r.run(per_round)
    return runners


def ratio(a: Timing, b: Timing) -> float:
    """Time per trajectory of ``a`` over ``b``: the median of the per-round ratios (both ran the same number
    of steps in each round, back to back), which a load spike on a shared machine hardly moves."""
    return statistics.median(x / y for x, y in zip(a.rounds, b.rounds, strict=True))


def markdown(results: dict[tuple[int, int], list[Timing]]) -> str:
    with_gfn = any(r.name.startswith("torchgfn") for runners in results.values() for r in runners)
    head = "| grid | runner | traj/s | transitions/s | mean length | s / 10k reward calls | time vs bare tb |"
    rule = "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    if with_gfn:
        head += " speed-up vs torchgfn (traj/s) |"
        rule += " ---: |"
    lines = [head, rule]
    for (dim, height), runners in results.items():
        bare = next(r for r in runners if r.name == "bare tb")
        gfn = next((r for r in runners if r.name.startswith("torchgfn")), None)
        for r in runners:
            line = (
                f"| d={dim}, H={height} | {r.name} | {r.traj_per_s:.0f} | {r.transitions / r.seconds:.0f} | "
                f"{r.transitions / r.trajectories:.1f} | {r.s_per_10k_calls:.1f} | "
                f"{ratio(r, bare):.2f}x |"
            )
            if with_gfn:
                line += f" {ratio(gfn, r):.2f}x |" if gfn is not None else " |"
            lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run (< 30 s) for checking that everything works")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per runner and grid")
    p.add_argument("--warmup", type=int, default=None, help="untimed training steps per runner first")
    p.add_argument("--rounds", type=int, default=None, help="interleave the runners in this many rounds")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torchgfn", action="store_true", help="skip torchgfn even when it is importable")
    p.add_argument(
        "--baseline-package",
        action="append",
        help="also time another copy of the library importable under this package name (before/after)",
    )
    args = p.parse_args(argv)
    args.steps = args.steps or (24 if args.quick else 160)
    args.warmup = args.warmup if args.warmup is not None else (4 if args.quick else 20)
    args.rounds = args.rounds or (2 if args.quick else 8)
    torch.set_num_threads(args.threads)
    gfn_version = torchgfn_available()
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"torchgfn {gfn_version or 'not importable'}, {args.warmup} warm-up + {args.steps} timed steps "
        f"(batch {BATCH}) per runner in {args.rounds} rounds",
        file=sys.stderr,
    )
    results = {}
    t0 = time.perf_counter()
    for dim, height in GRIDS:
        results[(dim, height)] = bench_grid(dim, height, args, gfn_version)
    print(markdown(results))
    print(f"\n(total {time.perf_counter() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
