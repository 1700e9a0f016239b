"""The exact terminal distribution of a discrete sampler, by dynamic programming over its DAG.

reach(s0) = 1;  reach(s') = Σ_{s→s'} reach(s)·P_F(s'|s), level by level;  p(x) = reach(x)·P_F(stop|x).
Everything is vectorised: one network pass over every state (in chunks) and one ``index_add_`` per level.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from adaptive_teacher.envs.base import DiscreteEnv


class ExactEvaluator:
    """Precomputes the enumeration, the level structure and the target; then evaluates any policy."""

    def __init__(self, env: DiscreteEnv, chunk: int = 65536):
        states = env.enumerate_states()
        if states is None:
            raise ValueError(f"{type(env).__name__}: the state space is too large to enumerate")
        self.env, self.chunk = env, chunk
        self.states = states
        n = len(states)
        keys = env.state_key(states)
        self._sorted_keys, self._perm = torch.sort(keys)
        self.forward_mask = env.forward_mask(states)
        self.terminal = self.forward_mask[:, env.stop]
        self.terminal_states = states[self.terminal]
        log_r = env.log_reward(self.terminal_states)
        self.log_Z = float(torch.logsumexp(log_r, 0))
        self.target = (log_r - self.log_Z).exp()
        self.initial = self.position(env.initial_states(1))[0]

        level = env.level(states)
        src, act, dst, lvl = [], [], [], []
        for a in range(env.n_actions - 1):
            s = self.forward_mask[:, a].nonzero().squeeze(1)
            if len(s) == 0:
                continue
            child = env.step(states[s], torch.full((len(s),), a, dtype=torch.long))
            src.append(s)
            act.append(torch.full_like(s, a))
            dst.append(self.position(child))
            lvl.append(level[s])
        src_t, act_t, dst_t, lvl_t = (torch.cat(v) for v in (src, act, dst, lvl))
        order = torch.argsort(lvl_t, stable=True)
        self._src, self._act, self._dst = src_t[order], act_t[order], dst_t[order]
        counts = torch.bincount(lvl_t, minlength=int(level.max()) + 1).tolist()
        self._bounds = [0]
        for c in counts:
            self._bounds.append(self._bounds[-1] + c)
        self.n_states = n

    @property
    def n_terminal(self) -> int:
        return int(self.terminal.sum())

    def position(self, states: Tensor) -> Tensor:
        keys = self.env.state_key(states)
        pos = torch.searchsorted(self._sorted_keys, keys)
        return self._perm[pos]

    @torch.no_grad()
    def action_probs(self, model: nn.Module) -> Tensor:
        out = []
        for i in range(0, self.n_states, self.chunk):
            s = self.states[i : i + self.chunk]
            logits = model(self.env.features(s))[:, : self.env.n_actions].to(torch.float64)
            out.append(torch.softmax(logits.masked_fill(~self.forward_mask[i : i + self.chunk], -math.inf), -1))
        return torch.cat(out)

    @torch.no_grad()
    def distribution(self, model: nn.Module) -> Tensor:
        """p(x) over ``terminal_states`` (float64, sums to 1)."""
        probs = self.action_probs(model)
        reach = torch.zeros(self.n_states, dtype=torch.float64)
        reach[self.initial] = 1.0
        flow = probs[self._src, self._act]
        for lo, hi in zip(self._bounds[:-1], self._bounds[1:], strict=True):
            if hi > lo:
                src = self._src[lo:hi]
                reach.index_add_(0, self._dst[lo:hi], reach[src] * flow[lo:hi])
        p = reach * probs[:, self.env.stop]
        return p[self.terminal]

    def l1(self, model: nn.Module) -> dict[str, float]:
        """L1 = Σ_x |p(x) − p*(x)| and the paper's mean convention L1 / N."""
        total = float((self.distribution(model) - self.target).abs().sum())
        return {"l1": total, "l1_mean": total / self.n_terminal}
