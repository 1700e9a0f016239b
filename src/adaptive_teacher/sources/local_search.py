"""Back-and-forth local search (LS-GFN, Kim et al., ICLR 2024), as in the grid code of Kim et al. (2025).

Each iteration takes a fresh P_B trajectory to the current x, destroys its back part and rebuilds from
there with a forward policy. The destroyed part is the last ``int(back_ratio · n)`` of the trajectory's n
states, counting x twice after a free stop (s_0, …, x, x) and once after a forced one (the official
environment has no stop step there). The proposal x' is accepted greedily (score(x') > score(x), strictly:
on the reward plateaus of the deceptive grid ``>=`` would make greedy search a random walk) or by
Metropolis–Hastings with proposal q(x'|x) = P_B(s|x)·P_F(x'|s):
    log A = score(x') − score(x) + [Σ log P_B − Σ log P_F](s→x') − [Σ log P_B − Σ log P_F](s→x),
accepted with probability min(1, A) (``"mh"``) or σ(log A) (``"barker"``: the Bernoulli(logits = log A)
filter of Kim et al.'s string code). ``back_steps`` destroys that many moves instead of a fraction.
A rejected x keeps its previous trajectory. The score is log R for the Student and log R_T for the Teacher.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from adaptive_teacher.envs.base import DiscreteEnv, Trajectories, concat_trajectories
from adaptive_teacher.policies import Policy

ScoreFn = Callable[[Trajectories], torch.Tensor]


def _suffix_log_ratio(env: DiscreteEnv, model: Policy, traj: Trajectories, keep: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        lp = env.log_probs(model, traj)
    steps = torch.arange(lp.log_pf.shape[1], device=keep.device)[None, :]
    in_suffix = (steps >= keep[:, None]).to(lp.log_pf.dtype)
    return ((lp.log_pb - lp.log_pf) * in_suffix).sum(1).to(torch.float64)


def kept_moves(env: DiscreteEnv, back: Trajectories, back_ratio: float, back_steps: int | None = None) -> torch.Tensor:
    """How many moves of each trajectory the destroy step keeps: the trajectory's n states are s_0..s_k, x
    (k moves, x twice after a free stop, once after a forced one) and the last int(back_ratio·n) go. With
    ``back_steps`` = k, k backward transitions are undone, the stop transition being the first of them, so
    k − 1 moves go (Kim et al.'s string code, whose stopped string is a leaf state left by an "unstop" step:
    k = 3 resamples 2 characters)."""
    moves = back.lengths - 1
    if back_steps is not None:
        return (moves - (back_steps - 1)).clamp(min=0).minimum(moves)
    forced = env.forced_stop(back.terminal).long()
    n_back = torch.floor((moves + 2 - forced).to(torch.float64) * back_ratio).long()
    return (moves - (n_back - 1 + forced)).clamp(min=0).minimum(moves)


def back_and_forth(
    env: DiscreteEnv,
    model: Policy,
    traj: Trajectories,
    score_fn: ScoreFn,
    iterations: int = 4,
    back_ratio: float = 0.5,
    accept: str = "greedy",
    backward_model: Policy | None = None,
    back_steps: int | None = None,
) -> tuple[Trajectories, list[Trajectories]]:
    """Refine ``traj`` (with rewards). Returns the accepted trajectories and every rewarded proposal batch."""
    if accept not in ("greedy", "mh", "barker"):
        raise ValueError(f"local-search acceptance must be 'greedy', 'mh' or 'barker' (got {accept!r})")
    cur, cur_score = traj, score_fn(traj)
    rows = torch.arange(traj.batch_size, device=traj.states.device)
    proposals: list[Trajectories] = []
    for _ in range(iterations):
        back = env.backward_rollout(cur.terminal, backward_model)
        back.log_reward = cur.log_reward
        keep = kept_moves(env, back, back_ratio, back_steps)
        suffix = env.rollout(model, start=back.states[rows, keep])
        prop = env.with_rewards(env.splice(back, keep, suffix))
        proposals.append(prop)
        new_score = score_fn(prop)
        if accept == "greedy":
            accepted = new_score > cur_score
        else:
            log_a = (new_score - cur_score) + _suffix_log_ratio(env, model, prop, keep)
            log_a = log_a - _suffix_log_ratio(env, model, back, keep)
            u = torch.rand(len(log_a), dtype=torch.float64, device=log_a.device)
            accepted = u.log() < log_a if accept == "mh" else u < torch.sigmoid(log_a)
        both = concat_trajectories([prop, cur])
        cur = both.select(torch.where(accepted, rows, rows + traj.batch_size))
        cur_score = torch.where(accepted, new_score, cur_score)
    return cur, proposals
