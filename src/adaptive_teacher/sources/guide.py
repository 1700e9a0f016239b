"""The substructure guide of guided trajectory balance (GTB; Shen et al., 2023, "Towards understanding and
improving GFlowNet training", ICML), for the prepend/append string MDP.

A replayed x gets its trajectory from the guide instead of P_B: from the empty string, step by step, among
the children of the current state that are windows (substrings) of x, choose c with probability

    p(c) ∝ max(score(c), 1e-5)^τ,    score(c) = mean R(x') over the other observed x' ≠ x that contain c,

uniformly when no other observed x' contains any of them (τ = ``temperature``, 1 in Shen et al.'s QM9
setting). log p_guide(τ) is the sum of the chosen log-probabilities. The sums and counts of R over every
substring of every distinct observed x are kept incrementally, so a score is a dictionary lookup (an x
contributes its own R to each of its windows, which ``score`` subtracts again). The walk is a Python loop over
strings: its draws are made on the CPU (the CPU generator, whatever the run's device) and the trajectories come
back on the device of x.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adaptive_teacher.envs.base import Trajectories
from adaptive_teacher.envs.strings import PrependAppendStrings

SCORE_FLOOR = 1e-5


class SubstructureGuide:
    def __init__(self, env: PrependAppendStrings, temperature: float = 1.0):
        self.env, self.temperature = env, float(temperature)
        self.total: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self.seen: set[str] = set()

    def observe(self, x: Tensor, log_reward: Tensor) -> None:
        """Add the distinct new x (full strings) with their rewards R = exp(log R)."""
        for s, log_r in zip(self.env.to_strings(x), log_reward.tolist(), strict=True):
            if s in self.seen:
                continue
            self.seen.add(s)
            r = math.exp(log_r)
            for w in _windows(s):
                self.total[w] = self.total.get(w, 0.0) + r
                self.count[w] = self.count.get(w, 0) + 1

    def _score(self, window: str, own_r: float, own_seen: bool) -> float | None:
        """Mean R of the other observed strings that contain ``window`` (None when there are none)."""
        count = self.count.get(window, 0) - (1 if own_seen else 0)
        if count <= 0:
            return None
        return (self.total[window] - (own_r if own_seen else 0.0)) / count

    def _step(self, s: str, cur: str, own_r: float, own_seen: bool) -> dict[str, tuple[float, int]]:
        """The guide's distribution over the children of ``cur`` that are windows of ``s``: child string ->
        (probability, forward action); prepend and append of the same child are one child (append's action)."""
        env, a = self.env, self.env.alphabet_size
        options: dict[str, int] = {}
        for c in range(a):
            ch = env.alphabet[c]
            if cur and ch + cur in s:
                options.setdefault(ch + cur, c)
            if cur + ch in s:
                options[cur + ch] = a + c
        kids = list(options)
        scores = [self._score(k, own_r, own_seen) for k in kids]
        if all(v is None for v in scores):
            probs = [1.0 / len(kids)] * len(kids)
        else:
            weights = [max(v or 0.0, SCORE_FLOOR) ** self.temperature for v in scores]
            total = sum(weights)
            probs = [w / total for w in weights]
        return {k: (p, options[k]) for k, p in zip(kids, probs, strict=True)}

    def log_prob(self, traj: Trajectories) -> Tensor:
        """log p_guide of given trajectories (e.g. sampled by a learned P_B: Shen et al.'s offline style
        ``guide_scores_back_policy_traj``), float64 [n] on the trajectories' device."""
        env, length = self.env, self.env.length
        n = traj.states.shape[0]
        x = env.to_strings(traj.states[:, length])
        steps = [env.to_strings(traj.states[:, t]) for t in range(length + 1)]
        log_p = torch.zeros(n, dtype=torch.float64)
        for i, s in enumerate(x):
            own_r, own_seen = math.exp(float(traj.log_reward[i])), s in self.seen
            for t in range(length):
                log_p[i] += math.log(self._step(s, steps[t][i], own_r, own_seen)[steps[t + 1][i]][0])
        return log_p.to(traj.states.device)

    def trajectories(self, x: Tensor, log_reward: Tensor) -> tuple[Trajectories, Tensor]:
        """A guide trajectory to each full string of x, and log p_guide of each, float64 [n]."""
        env = self.env
        n, length = x.shape[0], env.length
        cpu = torch.device("cpu")
        actions = torch.full((n, length + 1), env.stop, dtype=torch.long, device=cpu)
        log_p = torch.zeros(n, dtype=torch.float64, device=cpu)
        for i, (s, log_r) in enumerate(zip(env.to_strings(x), log_reward.tolist(), strict=True)):
            own_r, own_seen = math.exp(log_r), s in self.seen
            cur = ""
            for t in range(length):
                dist = self._step(s, cur, own_r, own_seen)
                kids = list(dist)
                probs = torch.tensor([dist[k][0] for k in kids], dtype=torch.float64, device=cpu)
                j = int(torch.multinomial(probs, 1))
                log_p[i] += math.log(dist[kids[j]][0])
                cur = kids[j]
                actions[i, t] = dist[cur][1]
        dev = x.device
        actions = actions.to(dev)
        states = [env.initial_states(n).to(dev)]
        for t in range(length):
            states.append(env.step(states[-1], actions[:, t]))
        states.append(states[-1])  # the stop successor: x itself
        lengths = torch.full((n,), length + 1, dtype=torch.long, device=dev)
        traj = Trajectories(torch.stack(states, 1), actions, lengths)
        traj.log_reward = log_reward
        return traj, log_p.to(dev)

    def state_dict(self) -> dict:
        return {"total": dict(self.total), "count": dict(self.count), "seen": sorted(self.seen)}

    def load_state_dict(self, d: dict) -> None:
        self.total, self.count, self.seen = dict(d["total"]), dict(d["count"]), set(d["seen"])


def _windows(s: str) -> set[str]:
    """Every distinct non-empty substring of s."""
    return {s[i:j] for i in range(len(s)) for j in range(i + 1, len(s) + 1)}
