"""Random network distillation (Burda et al., 2019) as the intrinsic reward of GAFN (Pan et al., 2023).

As in the grid code of Kim et al. (2025): target and predictor are MLPs n_features → 256 → 256 → 128
(LeakyReLU), the intrinsic reward of a state is r(s) = 0.01·‖f̂(s) − f(s)‖₂ (the norm, not its square) and
the predictor's loss is the mean of the same norm over the states of each trajectory, averaged over the
batch, with weight 1 and no gradient clipping.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adaptive_teacher.policies import mlp


class RandomNetworkDistillation(nn.Module):
    """Intrinsic reward r(s) = scale·‖f̂(s) − f(s)‖₂ with a fixed random target f and a trained predictor f̂."""

    def __init__(
        self,
        n_features: int,
        hidden: int = 256,
        latent: int = 128,
        scale: float = 0.01,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.scale = scale
        self.target = mlp(n_features, latent, hidden, 2, device)
        self.predictor = mlp(n_features, latent, hidden, 2, device)
        for p in self.target.parameters():
            p.requires_grad_(False)

    def error(self, features: Tensor) -> Tensor:
        """‖f̂(s) − f(s)‖₂ per row (differentiable in the predictor)."""
        return (self.predictor(features) - self.target(features)).norm(dim=-1)

    def intrinsic_reward(self, features: Tensor) -> Tensor:
        with torch.no_grad():
            return self.scale * self.error(features)

    def on_trajectories(self, env, traj) -> tuple[Tensor, Tensor, Tensor]:
        """(r(s_t) for every state of each trajectory [B, L+1] float64 detached, 0 on padding; which
        trajectories ended with a forced stop [B]; the RND loss).

        A trajectory's states are s_0..s_k = x and x again after the stop; where the stop was forced the
        official environment has no stop step, so that duplicate is left out of the RND loss."""
        states = traj.states
        batch, n_states = states.shape[0], states.shape[1]
        rows = torch.arange(batch, device=states.device)
        forced_stop = env.forced_stop(states[rows, traj.lengths - 1])
        t = torch.arange(n_states, device=states.device)[None, :]
        last = traj.lengths - forced_stop.long()  # index of the last state the loss averages over
        in_traj = t <= last[:, None]
        err = self.error(env.features(states[in_traj]))
        per_state = torch.zeros((batch, n_states), dtype=err.dtype, device=states.device)
        per_state[in_traj] = err
        loss = (per_state.sum(1) / in_traj.sum(1)).mean()
        intrinsic = torch.zeros((batch, n_states), dtype=torch.float64, device=states.device)
        intrinsic[in_traj] = self.scale * err.detach().to(torch.float64)
        return intrinsic, forced_stop, loss
