"""Batch sources: on-policy samples (Student ±ε, Teacher), replayed x with fresh P_B trajectories,
back-and-forth local search on a batch, and what feeds the replay buffer (Teacher samples above a gate,
MALA local search on buffer samples).

Every terminal state whose reward is computed counts one reward call (``RewardCounter``); replayed states
do not (their log-rewards are stored in the buffer).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from adaptive_teacher.envs.base import Trajectories
from adaptive_teacher.metrics import ModeTracker
from adaptive_teacher.sources.buffer import ReplayBuffer
from adaptive_teacher.sources.local_search import back_and_forth

ScoreFn = Callable[[Trajectories], Tensor]


class RewardCounter:
    """Computes rewards for new samples, counts the reward calls and records the modes they find."""

    def __init__(self, env, modes: ModeTracker):
        self.env, self.modes = env, modes
        self.calls = 0

    def rewarded(self, traj: Trajectories, track_modes: bool = True) -> Trajectories:
        traj = self.env.with_rewards(traj)
        self.calls += traj.batch_size
        if track_modes:
            self.modes.update(traj.terminal, traj.log_reward)
        return traj


def on_policy(
    counter: RewardCounter, model: nn.Module, n: int, eps: float = 0.0, track_modes: bool = True
) -> Trajectories:
    """n rewarded trajectories of ``model`` (ε-uniform mixed in with ``eps``)."""
    return counter.rewarded(counter.env.rollout(model, n, eps=eps), track_modes)


def replayed(env, buffer: ReplayBuffer, n: int, backward_model: nn.Module | None = None) -> Trajectories:
    """n x from the buffer (rank-prioritised), each with a fresh P_B trajectory and its stored log-reward."""
    x, log_r = buffer.sample(n)
    traj = env.backward_rollout(x, backward_model)
    traj.log_reward = log_r
    return traj


def refined(
    counter: RewardCounter,
    model: nn.Module,
    traj: Trajectories,
    score: ScoreFn,
    iterations: int,
    back_ratio: float,
    accept: str,
    backward_model: nn.Module | None = None,
    back_steps: int | None = None,
    keep_proposals: bool = False,
) -> Trajectories:
    """Back-and-forth local search on ``traj``; every proposal costs a reward call.

    Default (the official grid code): the batch is the accepted trajectories and modes count on it only (pass
    ``traj`` sampled with ``track_modes=False``). ``keep_proposals`` (Kim et al.'s string code): the batch is
    ``traj`` (the seeds) plus every proposal, accepted or not, all counted for modes."""
    from adaptive_teacher.envs.base import concat_trajectories

    accepted, proposals = back_and_forth(
        counter.env, model, traj, score, iterations, back_ratio, accept, backward_model, back_steps
    )
    counter.calls += sum(p.batch_size for p in proposals)
    if not keep_proposals:
        counter.modes.update(accepted.terminal, accepted.log_reward)
        return accepted
    for p in proposals:
        counter.modes.update(p.terminal, p.log_reward)
    return concat_trajectories([traj, *proposals])


def teacher_into_buffer(
    counter: RewardCounter,
    teacher: nn.Module,
    buffer: ReplayBuffer,
    n: int,
    gate: float,
    priority: ScoreFn,
    backward_model: nn.Module | None = None,
) -> None:
    """The diffusion Teacher's samples above the gate (log R > ``gate``) enter the buffer with ``priority``,
    scored on a fresh backward trajectory of each x (the Student's δ there; Kim et al.'s diffusion code)."""
    traj = on_policy(counter, teacher, n)
    keep = traj.log_reward > gate
    if bool(keep.any()):
        traj = traj.select(keep.nonzero().squeeze(1))
        x = traj.terminal
        back = counter.env.backward_rollout(x, backward_model)
        back.log_reward = traj.log_reward
        buffer.add(x, counter.env.state_key(x), priority(back), traj.log_reward)


MALA_STEP_SIZE = 1e-3  # η at the start of every local-search call (``--ld_step`` of the official diffusion code)


def mala_into_buffer(
    counter: RewardCounter,
    buffer: ReplayBuffer,
    n: int,
    n_steps: int,
    priority: ScoreFn,
    backward_model: nn.Module | None = None,
    step_size: float = MALA_STEP_SIZE,
) -> float:
    """MALA local search from n buffer samples, as in Sendera et al.'s and Kim et al.'s diffusion code: η
    starts at ``step_size`` at every call and moves ±1 % per step toward 0.574 acceptance over all
    ``n_steps``; the proposals accepted after the first half (burn-in) join the buffer. Every MALA step of
    every chain costs a reward call. Returns the final step size (reported, not carried to the next call)."""
    from adaptive_teacher.sources.mala import mala

    env = counter.env
    x0, _ = buffer.sample(n)
    # Through the env: a non-finite energy or gradient is an error, not a silently rejected proposal.
    samples, step_size, _ = mala(
        env.log_reward,
        env.grad_log_reward,
        x0,
        n_steps=n_steps,
        burn_in=n_steps // 2,
        step_size=step_size,
        adaptation="every_step",
    )
    counter.calls += n * n_steps
    if len(samples):
        samples = samples.to(x0.dtype)
        log_r = env.log_reward(samples)
        traj = env.backward_rollout(samples, backward_model)
        traj.log_reward = log_r
        buffer.add(samples, env.state_key(samples), priority(traj), log_r)
    return step_size


__all__ = [
    "RewardCounter",
    "on_policy",
    "replayed",
    "refined",
    "teacher_into_buffer",
    "mala_into_buffer",
]
