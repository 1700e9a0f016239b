"""Transition replay for detailed balance with PER, as in the grid code of Kim et al. (2025, ``trainer_db.py``).

The buffer holds single transitions s → s' (1,000 by default), keyed by the pair, FIFO, rank-prioritised by
the per-transition Teacher reward of the Student's DB residual (``ReplayBuffer`` over stacked pairs). A replay
step draws ``batch_size · (H // 2)`` transitions (H the grid's side; 8·batch_size elsewhere) and trains both
models on them with the per-transition DB loss; the stop transition s → x has target log R(x), a move uses the
learned log F(s').
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from adaptive_teacher.envs.base import DiscreteEnv, Trajectories
from adaptive_teacher.policies import Policy
from adaptive_teacher.sources.buffer import ReplayBuffer

DEFAULT_CAPACITY = 1000  # ``--buffer_size`` of the official trainer_db.py
KEY_MIX = 0x9E3779B97F4A7C15 - 2**64  # an odd 64-bit constant (as int64) that mixes the pair's two keys


@dataclass
class Transitions:
    """A batch of single transitions s → s': parents, forward actions, children, log R of x (stop transitions;
    0 for moves) and which transitions are the stop."""

    parents: Tensor
    actions: Tensor
    children: Tensor
    log_reward: Tensor
    stop: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.parents.shape[0])


def transitions_of(env: DiscreteEnv, traj: Trajectories) -> Transitions:
    """Every real transition of every trajectory (the stop included)."""
    valid = traj.valid()
    length = traj.actions.shape[1]
    parents = traj.states[:, :length][valid]
    children = traj.states[:, 1 : length + 1][valid]
    actions = traj.actions[valid]
    assert traj.log_reward is not None
    log_r = traj.log_reward[:, None].expand(-1, length)[valid]
    stop = actions == env.stop
    return Transitions(parents, actions, children, torch.where(stop, log_r, torch.zeros_like(log_r)), stop)


def pair_keys(env: DiscreteEnv, t: Transitions) -> Tensor:
    """One int64 key per (s, s') pair (wrapping int64 arithmetic)."""
    return env.state_key(t.parents) * KEY_MIX + env.state_key(t.children)


def make_buffer(env: DiscreteEnv, capacity: int | None) -> ReplayBuffer:
    shape = tuple(env.initial_states(1).shape[1:])
    device = getattr(env, "device", torch.device("cpu"))
    return ReplayBuffer(capacity or DEFAULT_CAPACITY, (2, *shape), env.state_dtype, device=device)


def add(env: DiscreteEnv, buffer: ReplayBuffer, t: Transitions, priority: Tensor) -> None:
    pairs = torch.stack([t.parents, t.children], 1)
    buffer.add(pairs, pair_keys(env, t), priority, t.log_reward)


def sample(env: DiscreteEnv, buffer: ReplayBuffer, n: int) -> Transitions:
    """n transitions (rank-prioritised, with replacement); the action of a move is found among the children."""
    pairs, log_r = buffer.sample(n)
    parents, children = pairs[:, 0], pairs[:, 1]
    same = (parents == children).flatten(1).all(1)
    kids, exists = env.children(parents)
    match = (kids == children[:, None]).flatten(2).all(2) & exists
    moves = match.float().argmax(1)
    actions = torch.where(same, torch.full_like(moves, env.stop), moves)
    return Transitions(parents, actions, children, log_r, same)


def residuals(env: DiscreteEnv, model: Policy, t: Transitions, terminal_log_reward: Tensor) -> Tensor:
    """d = log F(s) + log P_F(a|s) − log F(s') − log P_B(s|s') per transition; a stop transition uses
    log F(x) := ``terminal_log_reward`` and P_B = 1."""
    out_s, out_next = model.outputs(env, t.parents), model.outputs(env, t.children)
    assert out_s.log_flow is not None and out_next.log_flow is not None, "DB needs a policy with a flow head"
    log_p = torch.log_softmax(out_s.forward.masked_fill(~env.forward_mask(t.parents), -torch.inf), -1)
    log_pf = log_p.gather(1, t.actions[:, None]).squeeze(1)
    bmask = env.backward_mask(t.children)
    if out_next.backward is None:
        log_pb = -bmask.sum(-1).clamp(min=1).to(log_pf.dtype).log()
    else:
        log_b = torch.log_softmax(out_next.backward.masked_fill(~bmask, -torch.inf), -1)
        b = env.backward_action(t.parents, t.actions).clamp(0, env.n_backward_actions - 1)
        log_pb = log_b.gather(1, b[:, None]).squeeze(1)
    log_pb = torch.where(t.stop, torch.zeros_like(log_pb), log_pb)
    next_flow = torch.where(t.stop, terminal_log_reward.to(log_pf.dtype), out_next.log_flow)
    return out_s.log_flow + log_pf - next_flow - log_pb


def replay_size(env: DiscreteEnv, batch_size: int) -> int:
    """Transitions per replay step: batch_size · (H // 2) on a grid of side H (the official rule), else 8×."""
    height = getattr(env, "height", None)
    return batch_size * max(1, height // 2) if isinstance(height, int) else 8 * batch_size
