"""Random network distillation (Burda et al., 2019) as the intrinsic reward of GAFN (Pan et al., 2023)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adaptive_teacher.policies import mlp


class RandomNetworkDistillation(nn.Module):
    """Intrinsic reward r(s) = scale·‖f̂(s) − f(s)‖² with a fixed random target f and a trained predictor f̂."""

    def __init__(self, n_features: int, hidden: int = 256, latent: int = 128, scale: float = 0.01):
        super().__init__()
        self.scale = scale
        self.target = mlp(n_features, latent, hidden, 2)
        self.predictor = mlp(n_features, latent, hidden, 2)
        for p in self.target.parameters():
            p.requires_grad_(False)

    def error(self, features: Tensor) -> Tensor:
        return ((self.predictor(features) - self.target(features)) ** 2).sum(-1)

    def intrinsic_reward(self, features: Tensor) -> Tensor:
        with torch.no_grad():
            return self.scale * self.error(features)

    def augmented_log_reward(self, env, traj) -> tuple[Tensor, Tensor]:
        """GAFN's augmented log-reward log(R(x) + Σ_t r(s_t)) over the visited states s_1..x of each
        trajectory (intrinsic rewards detached), and the RND loss (mean prediction error) to train f̂."""
        t = torch.arange(traj.states.shape[1])[None, :]
        visited = (t >= 1) & (t <= traj.lengths[:, None] - 1)
        err = self.error(env.features(traj.states[visited]))
        intrinsic = torch.zeros(visited.shape, dtype=torch.float64)
        intrinsic[visited] = self.scale * err.detach().to(torch.float64)
        return torch.logaddexp(traj.log_reward, intrinsic.sum(1).log()), err.mean()
