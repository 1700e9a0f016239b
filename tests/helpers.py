"""Test helpers: the exact optimal GFlowNet policy of a small grid, as a lookup table."""

from __future__ import annotations

import math

import torch
from torch import nn

from adaptive_teacher.envs.hypergrid import Hypergrid


class TabularPolicy(nn.Module):
    """A policy whose logits are looked up per state (decoded from the grid's one-hot features)."""

    def __init__(self, env: Hypergrid, logits: torch.Tensor, log_Z: float):
        super().__init__()
        self.env = env
        self.table = logits  # [H^d, n_actions] indexed by state_key
        self.log_Z = nn.Parameter(torch.tensor(float(log_Z)))
        self.learn_pb = False
        self.flow_head = False

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        states = features.view(len(features), self.env.dim, self.env.height).argmax(-1)
        return self.table[self.env.state_key(states)].to(torch.float32)

    def split(self, out):
        return out, None, None


def optimal_policy(env: Hypergrid) -> TabularPolicy:
    """P_F(s'|s) = F(s')·P_B(s|s')/F(s), P_F(stop|s) = R(s)/F(s), with F computed backwards from the leaves."""
    states = env.enumerate_states()
    keys = env.state_key(states)
    size = env.height**env.dim
    log_flow = torch.full((size,), -math.inf, dtype=torch.float64)
    level = env.level(states)
    fmask = env.forward_mask(states)
    log_r = env.log_reward(states)
    logits = torch.full((size, env.n_actions), -1e9, dtype=torch.float64)
    for lv in range(int(level.max()), -1, -1):
        sel = (level == lv).nonzero().squeeze(1)
        for i in sel.tolist():
            s = states[i : i + 1]
            edge = [log_r[i]]  # stop edge
            acts = [env.stop]
            for a in range(env.n_actions - 1):
                if fmask[i, a]:
                    c = env.step(s, torch.tensor([a]))
                    n_parents = int(env.backward_mask(c).sum())
                    edge.append(log_flow[env.state_key(c)][0] - math.log(n_parents))
                    acts.append(a)
            edges = torch.stack([torch.as_tensor(e, dtype=torch.float64) for e in edge])
            total = torch.logsumexp(edges, 0)
            log_flow[keys[i]] = total
            logits[keys[i], acts] = edges - total
    s0 = env.state_key(env.initial_states(1))[0]
    return TabularPolicy(env, logits, float(log_flow[s0]))
