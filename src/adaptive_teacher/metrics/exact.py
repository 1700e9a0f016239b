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


_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # splitmix64 constants as wrapping int64
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def feature_hash(features: Tensor) -> Tensor:
    """An int64 hash per feature row: Σ_j splitmix64(bits(f_j) + (j+1)·φ) with wrapping arithmetic.

    Equal float32 rows (−0.0 folded into +0.0) share a hash; distinct rows collide with probability ~n²/2⁶⁴.
    """
    bits = (features.to(torch.float32) + 0.0).contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    x = bits + torch.arange(1, bits.shape[1] + 1, device=bits.device) * _GOLDEN
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return (x ^ _shr(x, 31)).sum(-1)


def state_feature_hashes(env: DiscreteEnv, states: Tensor, chunk: int = 65536) -> Tensor:
    """``feature_hash(env.features(states))``, in chunks of rows (features of a whole space can be large)."""
    return torch.cat([feature_hash(env.features(states[i : i + chunk])) for i in range(0, len(states), chunk)])


class TabularPolicy(nn.Module):
    """A fixed policy whose float64 logits are looked up per state by the hash of its feature row.

    ``features`` must be injective on the enumerated states (``optimal_policy`` checks it); a row whose
    hash is not in the table raises ValueError. ``log_Z`` is log F(s0).
    """

    def __init__(self, hashes: Tensor, logits: Tensor, log_Z: float):
        super().__init__()
        self._hashes, self._perm = torch.sort(hashes)
        self.table = logits  # [n_states, n_actions], row i belongs to the state of hash ``hashes[i]``
        self.log_Z = nn.Parameter(torch.tensor(float(log_Z), dtype=torch.float64), requires_grad=False)
        self.learn_pb = False
        self.flow_head = False

    def forward(self, features: Tensor) -> Tensor:
        h = feature_hash(features)
        pos = torch.searchsorted(self._hashes, h).clamp(max=len(self._hashes) - 1)
        found = self._hashes[pos] == h
        if not bool(found.all()):
            i = int((~found).nonzero()[0, 0])
            raise ValueError(f"TabularPolicy: feature row {i} belongs to no enumerated state")
        return self.table[self._perm[pos]]

    def split(self, out: Tensor) -> tuple[Tensor, None, None]:
        return out, None, None


def optimal_policy(env: DiscreteEnv, evaluator: ExactEvaluator | None = None) -> TabularPolicy:
    """The exact GFlowNet for uniform P_B, as a table (any env with ``enumerate_states`` and ``level``).

    F(s) = R(s)·1[s terminal] + Σ_{s→s'} F(s')·P_B(s|s'), P_B(s|s') = 1/|parents(s')|, from the highest
    level down; P_F(s'|s) = F(s')·P_B(s|s')/F(s), P_F(stop|s) = R(s)/F(s) (Bengio et al., 2021/2023).
    TB then holds with log Z = log F(s0) on every trajectory. Raises ValueError when the features of two
    enumerated states are equal (the table is keyed on them).
    """
    ev = ExactEvaluator(env) if evaluator is None else evaluator
    states = ev.states
    hashes = state_feature_hashes(env, states)
    if len(torch.unique(hashes)) < len(hashes):
        raise ValueError(f"{type(env).__name__}.features is not injective on the enumerated states")
    log_npar = env.backward_mask(states).sum(-1).clamp(min=1).to(torch.float64).log()
    log_flow = torch.full((ev.n_states,), -math.inf, dtype=torch.float64)
    log_r = env.log_reward(ev.terminal_states)
    log_flow[ev.terminal] = log_r
    edge = torch.empty(len(ev._src), dtype=torch.float64)
    for lo, hi in reversed(list(zip(ev._bounds[:-1], ev._bounds[1:], strict=True))):
        if hi == lo:
            continue
        src, dst = ev._src[lo:hi], ev._dst[lo:hi]
        val = log_flow[dst] - log_npar[dst]
        edge[lo:hi] = val
        rows, inv = torch.unique(src, return_inverse=True)  # grouped log-sum-exp with the stop term
        m = log_flow[rows].scatter_reduce(0, inv, val, "amax")
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        total = (log_flow[rows] - m).exp().index_add(0, inv, (val - m[inv]).exp())
        log_flow[rows] = m + total.log()
    logits = torch.full((ev.n_states, env.n_actions), -math.inf, dtype=torch.float64)
    logits[ev._src, ev._act] = edge - log_flow[ev._src]
    logits[ev.terminal, env.stop] = log_r - log_flow[ev.terminal]
    logits[~torch.isfinite(log_flow)] = 0.0  # states with no terminal descendant: never reached
    return TabularPolicy(hashes, logits, float(log_flow[ev.initial]))
