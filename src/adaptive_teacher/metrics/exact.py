"""The exact terminal distribution of a discrete sampler, by dynamic programming over its DAG.

reach(s0) = 1;  reach(s') = Σ_{s→s'} reach(s)·P_F(s'|s), level by level;  p(x) = reach(x)·P_F(stop|x).
Everything is vectorised: one policy pass, ``model.outputs(env, states)``, over every state (in chunks) and
one ``index_add_`` per level. ``optimal_policy`` builds the exact GFlowNet for uniform P_B as a table keyed on
``env.state_key``. Every table lives on the environment's device (that of ``env.enumerate_states()``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from adaptive_teacher.envs.base import DiscreteEnv
from adaptive_teacher.policies import Policy, PolicyOutputs


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
            child = env.step(states[s], torch.full((len(s),), a, dtype=torch.long, device=s.device))
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
    def action_probs(self, model: Policy) -> Tensor:
        """P_F(a|s) of every enumerated state, [n_states, n_actions] float64 (zero on masked actions)."""
        out = []
        for i in range(0, self.n_states, self.chunk):
            s = self.states[i : i + self.chunk]
            logits = model.outputs(self.env, s).forward.to(torch.float64)
            out.append(torch.softmax(logits.masked_fill(~self.forward_mask[i : i + self.chunk], -math.inf), -1))
        return torch.cat(out)

    @torch.no_grad()
    def distribution(self, model: Policy, probs: Tensor | None = None) -> Tensor:
        """p(x) over ``terminal_states`` (float64, sums to 1); ``probs``: ``action_probs(model)`` if known."""
        probs = self.action_probs(model) if probs is None else probs
        reach = torch.zeros(self.n_states, dtype=torch.float64, device=probs.device)
        reach[self.initial] = 1.0
        flow = probs[self._src, self._act]
        for lo, hi in zip(self._bounds[:-1], self._bounds[1:], strict=True):
            if hi > lo:
                src = self._src[lo:hi]
                reach.index_add_(0, self._dst[lo:hi], reach[src] * flow[lo:hi])
        p = reach * probs[:, self.env.stop]
        return p[self.terminal]

    def expected_modes(self, n_samples: Sequence[float]) -> list[float]:
        """The modes a perfect sampler finds: E[distinct modes among n independent draws of the target p ∝ R]
        = Σ_{m mode} 1 − (1 − p_m)^n, for each n of ``n_samples`` (0 for a task without modes). A reference
        for the modes-found curves, which reward off-target exploration: at QM9's β = 20 the target puts
        most of its mass on few modes, so a perfect sampler finds fewer of them than an imperfect one."""
        p = self.target[self.env.is_mode(self.terminal_states)].to(torch.float64)
        log_miss = torch.log1p(-p.clamp(max=1.0 - 1e-16))
        return [float((-torch.expm1(float(n) * log_miss)).sum()) for n in n_samples]

    def table_policy(self, probs: Tensor, log_Z: float, backward_from: Policy | None = None) -> TabularPolicy:
        """The policy whose P_F(a|s) is ``probs`` (``action_probs(model)``) on every enumerated state, as float32
        log-probabilities like a network's logits: sampling and scoring trajectories with it costs lookups
        instead of network passes (and draws the same random numbers as the network would). A learned P_B is
        taken from ``backward_from`` (its ``backward_logits`` if it has them, else its outputs)."""
        return TabularPolicy(self.env.state_key(self.states), probs.log().float(), log_Z, backward_from)

    def l1(self, model: Policy) -> dict[str, float]:
        """L1 = Σ_x |p(x) − p*(x)| and the paper's mean convention L1 / N."""
        total = float((self.distribution(model) - self.target).abs().sum())
        return {"l1": total, "l1_mean": total / self.n_terminal}


class TabularPolicy(nn.Module):
    """A fixed policy whose float64 P_F logits are looked up per state by ``env.state_key``.

    Row i of ``logits`` [n_states, n_actions] belongs to the state whose key is ``keys[i]``; a state whose
    key is not in the table raises ValueError. No flow head; ``log_Z`` is log F(s0). P_B is uniform, or that
    of ``backward_from`` when it learns one.
    """

    def __init__(self, keys: Tensor, logits: Tensor, log_Z: float, backward_from: Policy | None = None):
        super().__init__()
        self._keys, self._perm = torch.sort(keys)
        self.table = logits
        self.log_Z = nn.Parameter(
            torch.tensor(float(log_Z), dtype=torch.float64, device=logits.device), requires_grad=False
        )
        self._backward: Callable[[DiscreteEnv, Tensor], Tensor | None] | None = None  # not a submodule
        if backward_from is not None and bool(getattr(backward_from, "learn_pb", False)):
            source = backward_from
            own = getattr(source, "backward_logits", None)
            self._backward = own if own is not None else (lambda env, states: source.outputs(env, states).backward)
        self.learn_pb = self._backward is not None
        self.flow_head = False

    def outputs(self, env: DiscreteEnv, states: Tensor) -> PolicyOutputs:
        k = env.state_key(states)
        pos = torch.searchsorted(self._keys, k).clamp(max=len(self._keys) - 1)
        found = self._keys[pos] == k
        if not bool(found.all()):
            i = int((~found).nonzero()[0, 0])
            raise ValueError(f"TabularPolicy: state {states[i].tolist()} is not in the table (not enumerated)")
        back = None if self._backward is None else self._backward(env, states)
        return PolicyOutputs(self.table[self._perm[pos]], back, None)


def exact_sampler_curve(
    env: object, max_calls: float, points: int = 100, evaluator: ExactEvaluator | None = None
) -> tuple[list[float], list[float], str] | None:
    """(reward calls 0..max_calls, the modes a perfect sampler finds in that many calls, a label): the reference
    curve of a modes-found plot (``ExactEvaluator.expected_modes``, one reward call per sample; ``evaluator``:
    one already built for ``env``). None for a task whose states cannot be enumerated or that has no modes."""
    if max_calls <= 0 or (evaluator is None and not isinstance(env, DiscreteEnv)):
        return None
    if evaluator is None:
        try:
            evaluator = ExactEvaluator(env)
        except (ValueError, NotImplementedError):
            return None
    calls = [max_calls * i / (points - 1) for i in range(points)]
    modes = evaluator.expected_modes(calls)
    return (calls, modes, "a perfect sampler (expected)") if modes[-1] > 0 else None


def optimal_policy(env: DiscreteEnv, evaluator: ExactEvaluator | None = None) -> TabularPolicy:
    """The exact GFlowNet for uniform P_B, as a table (any env with ``enumerate_states`` and ``level``).

    F(s) = R(s)·1[s terminal] + Σ_{s→s'} F(s')·P_B(s|s'), P_B(s|s') = 1/|parents(s')|, from the highest
    level down; P_F(s'|s) = F(s')·P_B(s|s')/F(s), P_F(stop|s) = R(s)/F(s) (Bengio et al., 2021/2023).
    TB then holds with log Z = log F(s0) on every trajectory. The table is keyed on ``env.state_key``.
    """
    ev = ExactEvaluator(env) if evaluator is None else evaluator
    states = ev.states
    log_npar = env.backward_mask(states).sum(-1).clamp(min=1).to(torch.float64).log()
    dev = states.device
    log_flow = torch.full((ev.n_states,), -math.inf, dtype=torch.float64, device=dev)
    log_r = env.log_reward(ev.terminal_states)
    log_flow[ev.terminal] = log_r
    edge = torch.empty(len(ev._src), dtype=torch.float64, device=dev)
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
    logits = torch.full((ev.n_states, env.n_actions), -math.inf, dtype=torch.float64, device=dev)
    logits[ev._src, ev._act] = edge - log_flow[ev._src]
    logits[ev.terminal, env.stop] = log_r - log_flow[ev.terminal]
    logits[~torch.isfinite(log_flow)] = 0.0  # states with no terminal descendant: never reached
    return TabularPolicy(env.state_key(states), logits, float(log_flow[ev.initial]))
