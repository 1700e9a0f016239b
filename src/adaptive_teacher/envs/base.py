"""The discrete environment interface and its generic, batched samplers.

A discrete environment is a DAG over tensor states with a single initial state s0. Forward actions
``0..n_actions-2`` move to a child; the last forward action is *stop*, which ends the trajectory and
makes the current state the terminal object x. Backward actions ``0..n_backward_actions-1`` move to a
parent. A subclass supplies masks, transitions, a featurisation and a reward; this module supplies
everything else: forward rollouts (optionally epsilon-uniform), backward rollouts with P_B, the
batched recomputation of per-step log-probabilities for the loss, trajectory splicing for local
search, and ``children`` (every state's child under every move, for policies that score children).
Every sampler asks the policy for its logits with one call, ``model.outputs(env, states)``
(policies.py: ``Policy``, ``PolicyOutputs``); the policy reads what it needs from the environment.
Nothing here loops over individual states in Python.

Devices: an environment is an ``OnDevice`` object (device.py): ``env.to(device)`` moves its tensor attributes
and returns it; ``initial_states`` and ``enumerate_states`` create their states on ``env.device``, and every
other method works on the device of the states it is given.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from adaptive_teacher.device import OnDevice
from adaptive_teacher.errors import EnvironmentCheckError, RewardError, TrainingDiverged
from adaptive_teacher.policies import Policy


@dataclass
class Trajectories:
    """A batch of complete trajectories, padded to a common length.

    ``states[:, t+1]`` follows ``states[:, t]`` by ``actions[:, t]`` for ``t < lengths``; the last valid
    transition (``t = lengths-1``) is *stop*, whose successor is the terminal state itself. Padding
    actions are ``-1``. ``log_reward`` is float64 and may be ``None`` until the reward is computed.
    """

    states: Tensor
    actions: Tensor
    lengths: Tensor
    log_reward: Tensor | None = None

    @property
    def terminal(self) -> Tensor:
        rows = torch.arange(self.states.shape[0], device=self.states.device)
        return self.states[rows, self.lengths]

    @property
    def batch_size(self) -> int:
        return int(self.states.shape[0])

    def valid(self) -> Tensor:
        """[B, L] mask of real (non-padding) transitions."""
        steps = torch.arange(self.actions.shape[1], device=self.actions.device)
        return steps[None, :] < self.lengths[:, None]

    def select(self, rows: Tensor) -> Trajectories:
        lr = None if self.log_reward is None else self.log_reward[rows]
        return Trajectories(self.states[rows], self.actions[rows], self.lengths[rows], lr)


def concat_trajectories(parts: list[Trajectories]) -> Trajectories:
    """Stack batches with different padded lengths into one."""
    length = max(p.actions.shape[1] for p in parts)
    states, actions = [], []
    for p in parts:
        pad = length - p.actions.shape[1]
        if pad:
            last = p.states[:, -1:].expand(-1, pad, *p.states.shape[2:])
            states.append(torch.cat([p.states, last], 1))
            actions.append(torch.cat([p.actions, p.actions.new_full((p.batch_size, pad), -1)], 1))
        else:
            states.append(p.states)
            actions.append(p.actions)
    rewards = None if any(p.log_reward is None for p in parts) else torch.cat([p.log_reward for p in parts])
    return Trajectories(torch.cat(states), torch.cat(actions), torch.cat([p.lengths for p in parts]), rewards)


def check_batch_output(value: object, n: int, where: str, trailing: tuple[int, ...] = ()) -> Tensor:
    """A user function's per-state output: a torch.Tensor of shape [n, *trailing] with a real dtype that
    does not require grad. Anything else is a RewardError that says what was expected and what came back."""
    expected = f"a torch.Tensor of shape {[n, *trailing]} (one value per state) with a float dtype"
    if not isinstance(value, Tensor):
        got = type(value).__name__ + (f" of shape {list(value.shape)}" if hasattr(value, "shape") else "")
        raise RewardError(f"{where} must return {expected}; it returned a {got} (convert with torch.as_tensor)")
    if tuple(value.shape) != (n, *trailing):
        raise RewardError(f"{where} must return {expected}; it returned shape {list(value.shape)} for {n} states")
    if value.is_complex() or value.dtype == torch.bool:
        raise RewardError(f"{where} must return {expected}; it returned dtype {value.dtype}")
    if value.requires_grad:
        raise RewardError(
            f"{where} returned a tensor that requires grad; compute it under torch.no_grad() or .detach()"
        )
    return value


def sample_categorical(probs: Tensor) -> Tensor:
    """One draw per row of ``probs`` [n, k] (rows need not be normalised; NaN rows give garbage).

    Exactly what ``torch.multinomial(probs, 1)`` computes for one sample (argmax of p / Exp(1) noise,
    the same random numbers, hence the same draws), without its input validation, which costs three
    synchronising reductions per call: the samplers call this once per step.
    """
    return (probs / torch.empty_like(probs).exponential_()).argmax(-1)


@dataclass
class StepLogProbs:
    """Per-transition log-probabilities, zero on padding. ``log_flow`` is log F(s_t) (DB only)."""

    log_pf: Tensor
    log_pb: Tensor
    log_flow: Tensor | None
    valid: Tensor


class DiscreteEnv(OnDevice, ABC):
    """Base class of discrete, DAG-structured environments with batched tensor states (on ``self.device``)."""

    n_actions: int  # forward actions, the last one is stop
    n_backward_actions: int
    max_length: int  # the most transitions (stop included) any trajectory can take
    n_features: int
    state_dtype: torch.dtype = torch.long
    family = "discrete"  # the task family (families.py): defaults, methods, evaluator, plots

    # ---- to be provided by a subclass -------------------------------------------------------------
    @abstractmethod
    def initial_states(self, n: int) -> Tensor:
        """n copies of s0, on ``self.device``."""

    @abstractmethod
    def forward_mask(self, states: Tensor) -> Tensor:
        """[n, n_actions] bool: which forward actions are allowed (stop included)."""

    @abstractmethod
    def backward_mask(self, states: Tensor) -> Tensor:
        """[n, n_backward_actions] bool: which parents exist (all False at s0)."""

    @abstractmethod
    def step(self, states: Tensor, actions: Tensor) -> Tensor:
        """Apply non-stop forward actions."""

    @abstractmethod
    def backward_step(self, states: Tensor, backward_actions: Tensor) -> Tensor:
        """Move to the parent chosen by each backward action."""

    @abstractmethod
    def backward_action(self, states: Tensor, actions: Tensor) -> Tensor:
        """The backward action that undoes forward ``actions`` taken from ``states``."""

    @abstractmethod
    def forward_action(self, parents: Tensor, backward_actions: Tensor) -> Tensor:
        """The forward action that leads from ``parents`` back to the child a backward action came from."""

    @abstractmethod
    def features(self, states: Tensor) -> Tensor:
        """[n, n_features] float32 network input."""

    @abstractmethod
    def reward(self, x: Tensor) -> Tensor:
        """R(x) >= 0 of terminal states, float64 [n]."""

    @abstractmethod
    def state_key(self, states: Tensor) -> Tensor:
        """A unique int64 key per state (for de-duplication and mode counting)."""

    def step_or_stay(self, states: Tensor, actions: Tensor) -> Tensor:
        """Apply the forward ``actions`` that are moves; rows whose action is stop or -1 stay as they are.

        The generic version steps only the moving rows; an environment may override it with one
        vectorised expression (the samplers call it once per step for the whole batch).
        """
        moving = (actions >= 0) & (actions != self.stop)
        nxt = states.clone()
        if bool(moving.any()):
            nxt[moving] = self.step(states[moving], actions[moving])
        return nxt

    def backward_step_or_stay(self, states: Tensor, backward_actions: Tensor, alive: Tensor) -> tuple[Tensor, Tensor]:
        """One backward-sampling step: the parents of the ``alive`` rows (the others stay), and the forward
        actions leading back to the children (-1 where not alive).

        The generic version steps only the alive rows; an environment may override it with vectorised ops.
        """
        parent = states.clone()
        fwd = torch.full_like(backward_actions, -1)
        if bool(alive.any()):
            parent[alive] = self.backward_step(states[alive], backward_actions[alive])
            fwd[alive] = self.forward_action(parent[alive], backward_actions[alive])
        return parent, fwd

    def children(self, states: Tensor) -> tuple[Tensor, Tensor]:
        """The child of each state under each move: ``(kids, exists)``, [n, n_actions-1, *state_shape] and
        [n, n_actions-1] bool.

        kids[i, a] = step(states[i], a) where exists[i, a] = forward_mask(states)[i, a], else states[i]
        itself (a valid state, safe to featurise; mask it out). For SSR-style policies (Shen et al.,
        2023), which give move a the logit score(enc(s), enc(kids[:, a])) and stop a logit of their own.
        One batched ``step_or_stay`` over n·(n_actions-1) rows; the samplers never call it, a policy does.
        """
        n, k, shape = states.shape[0], self.n_actions - 1, states.shape[1:]
        exists = self.forward_mask(states)[:, :k]
        rep = states[:, None].expand(n, k, *shape).reshape(n * k, *shape)
        moves = torch.arange(k, device=states.device).repeat(n).masked_fill(~exists.reshape(-1), -1)
        return self.step_or_stay(rep, moves).view(n, k, *shape), exists

    def parents(self, states: Tensor) -> tuple[Tensor, Tensor]:
        """The parent of each state under each backward action: ``(parents, exists)``, [n, n_backward_actions,
        *state_shape] and [n, n_backward_actions] bool (the state itself where the action is not allowed), for
        policies that score parents (a learned SSR P_B)."""
        n, k, shape = states.shape[0], self.n_backward_actions, states.shape[1:]
        exists = self.backward_mask(states)
        rep = states[:, None].expand(n, k, *shape).reshape(n * k, *shape)
        moves = torch.arange(k, device=states.device).repeat(n)
        parent, _ = self.backward_step_or_stay(rep, moves, exists.reshape(-1))
        return parent.view(n, k, *shape), exists

    def forced_stop(self, x: Tensor) -> Tensor:
        """Whether stop is the only action allowed at each terminal state x (e.g. a grid coordinate at H-1)."""
        mask = self.forward_mask(x)
        return mask[:, self.stop] & (mask.sum(-1) == 1)

    def is_initial(self, states: Tensor) -> Tensor:
        return ~self.backward_mask(states).any(-1)

    def enumerate_states(self) -> Tensor | None:
        """Every reachable state (terminal or not) on ``self.device``, or None when the space is too large."""
        return None

    def level(self, states: Tensor) -> Tensor:
        """Number of forward transitions from s0 to each state (for exact dynamic programming)."""
        raise NotImplementedError

    def is_mode(self, x: Tensor) -> Tensor:
        """Which terminal states count as modes (default: none)."""
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    n_modes: int | None = None

    def log_partition(self) -> float | None:
        """log Z = log Σ_x R(x) over every terminal state, or None when the space is too large."""
        states = self.enumerate_states()
        if states is None:
            return None
        terminal = states[self.forward_mask(states)[:, self.stop]]
        return float(torch.logsumexp(self.log_reward(terminal), 0))

    # ---- generic machinery ------------------------------------------------------------------------
    @property
    def stop(self) -> int:
        return self.n_actions - 1

    def log_reward(self, x: Tensor) -> Tensor:
        """log R(x) in float64 on x's device; a NaN, infinite, zero or negative reward raises RewardError naming x."""
        where = getattr(self, "reward_name", f"{type(self).__name__}.reward")
        r = check_batch_output(self.reward(x), len(x), where).to(device=x.device, dtype=torch.float64)
        bad = ~torch.isfinite(r) | (r <= 0)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise RewardError(
                f"reward {r[i].item()!r} at state {x[i].tolist()} ({int(bad.sum())} of {len(r)} bad in the batch): "
                "rewards must be finite and > 0; add a small floor such as 1e-8 to your reward function"
            )
        return r.log()

    @torch.no_grad()
    def rollout(
        self,
        model: Policy,
        n: int | None = None,
        start: Tensor | None = None,
        eps: float = 0.0,
        temperature: float = 1.0,
    ) -> Trajectories:
        """Sample trajectories forward with ``model`` from s0 (``n`` of them) or from ``start`` states.

        With ``eps > 0`` each action comes from (1-eps)·P_F + eps·Uniform(valid actions).
        """
        return self._rollout(model, n, start, eps, temperature, record=False)[0]

    @torch.no_grad()
    def rollout_with_log_probs(self, model: Policy, n: int) -> tuple[Trajectories, StepLogProbs]:
        """``n`` on-policy trajectories and their per-step log P_F, log P_B under ``model``, from the passes
        that sampled them (what ``log_probs(model, traj)`` gives to float32 rounding, without another pass)."""
        traj, lp = self._rollout(model, n, None, 0.0, 1.0, record=True)
        assert lp is not None
        return traj, lp

    def _rollout(
        self, model: Policy, n: int | None, start: Tensor | None, eps: float, temperature: float, record: bool
    ) -> tuple[Trajectories, StepLogProbs | None]:
        states = self.initial_states(n) if start is None else start
        done = torch.zeros(states.shape[0], dtype=torch.bool, device=states.device)
        all_states, all_actions = [states], []
        log_pf: list[Tensor] = []
        log_pb: list[Tensor] = []
        stop = self.stop
        for _ in range(self.max_length):
            mask = self.forward_mask(states)
            out = model.outputs(self, states)
            logits = out.forward
            if record and all_actions:  # P_B(previous state | these states) closes the previous transition
                prev = self._transition_log_pb(all_states[-2], all_actions[-1], states, out.backward, logits.dtype)
                log_pb.append(prev)
            if temperature != 1.0:
                logits = logits / temperature
            probs = torch.softmax(torch.where(mask, logits, -math.inf), -1)
            if eps > 0:
                probs = (1 - eps) * probs + eps * mask / mask.sum(-1, keepdim=True)
            # A row of NaN (a diverged model, or no allowed action) is all NaN: it ends, unstopped, and raises below.
            ended = done | probs[:, 0].isnan()
            actions = sample_categorical(probs).masked_fill(ended, -1)
            if record:
                chosen = torch.log_softmax(torch.where(mask, out.forward, -math.inf), -1)
                log_pf.append(chosen.gather(1, actions.clamp(min=0)[:, None]).squeeze(1).masked_fill(ended, 0.0))
            states = self.step_or_stay(states, actions)  # a new tensor: ``start`` is never written to
            done = ended | (actions == stop)
            all_states.append(states)
            all_actions.append(actions)
            if bool(done.all()):
                break
        actions_t = torch.stack(all_actions, 1)
        stopped = (actions_t == stop).any(1)
        if not bool(stopped.all()):
            i = int((~stopped).nonzero()[0, 0])
            why = (
                "met NaN action probabilities (a diverged model, or a state with no allowed action)"
                if bool(done[i])
                else "did not stop within max_length"
            )
            message = f"{type(self).__name__}: trajectory {i} {why}, at state {states[i].tolist()}"
            raise TrainingDiverged(message) if bool(done[i]) else EnvironmentCheckError(message)
        traj = Trajectories(torch.stack(all_states, 1), actions_t, (actions_t >= 0).sum(1))
        if not record:
            return traj, None
        log_pb.append(torch.zeros_like(log_pf[-1]))  # the last step of every row is a stop or padding
        return traj, StepLogProbs(torch.stack(log_pf, 1), torch.stack(log_pb, 1), None, traj.valid())

    def _transition_log_pb(
        self, src: Tensor, actions: Tensor, children: Tensor, child_logits: Tensor | None, dtype: torch.dtype
    ) -> Tensor:
        """log P_B(src | child) of the transitions src --actions--> children: uniform over the child's parents, or
        from the child's backward logits; 0 for stop and for padding (action -1)."""
        bmask = self.backward_mask(children)
        if child_logits is None:
            lpb = -bmask.sum(-1).clamp(min=1).to(dtype).log()
        else:
            log_b = torch.log_softmax(child_logits.masked_fill(~bmask, -math.inf), -1)
            b = self.backward_action(src, actions.clamp(min=0)).clamp(0, self.n_backward_actions - 1)
            lpb = log_b.gather(1, b[:, None]).squeeze(1).to(dtype)
        return torch.where((actions != self.stop) & (actions >= 0), lpb, torch.zeros_like(lpb))

    @torch.no_grad()
    def backward_rollout(self, x: Tensor, model: Policy | None = None) -> Trajectories:
        """Sample a trajectory ending in each terminal x with P_B (uniform, or the model's learned P_B)."""
        batch = x.shape[0]
        dev = x.device
        chain, back_actions = [x], []
        cur = x
        n_back = torch.zeros(batch, dtype=torch.long, device=dev)
        learned = model is not None and getattr(model, "learn_pb", False)
        for _ in range(self.max_length):
            mask = self.backward_mask(cur)
            alive = mask.any(-1)
            if not bool(alive.any()):
                break
            if learned:
                assert model is not None
                logits = model.outputs(self, cur).backward
                assert logits is not None, "a policy with learn_pb = True must return backward logits"
                probs = torch.softmax(logits.masked_fill(~mask, -math.inf), -1)
                probs = torch.where(alive[:, None], probs, 1.0 / probs.shape[1])
                b = torch.multinomial(probs, 1).view(-1)
            else:
                b = sample_categorical((mask | ~alive[:, None]).float())
            cur, fwd = self.backward_step_or_stay(cur, b, alive)
            n_back += alive
            chain.append(cur)
            back_actions.append(fwd)
        chain_t = torch.stack(chain, 1)  # chain_t[:, k] = state k steps before x
        k_max = chain_t.shape[1] - 1
        fwd_actions = torch.stack(back_actions, 1) if back_actions else x.new_zeros((batch, 0), dtype=torch.long)
        # Forward order: states[t] = chain[n - t] for t <= n, then x (the stop successor) as padding.
        t = torch.arange(k_max + 2, device=dev)
        src = (n_back[:, None] - t[None, :]).clamp(min=0)
        idx = src.view(batch, -1, *([1] * (x.dim() - 1))).expand(-1, -1, *x.shape[1:])
        states = chain_t.gather(1, idx)
        ta = torch.arange(k_max + 1, device=dev)
        a_src = (n_back[:, None] - ta[None, :] - 1).clamp(min=0)
        actions = (
            fwd_actions.gather(1, a_src.clamp(max=max(k_max - 1, 0)))
            if k_max > 0
            else fwd_actions.new_zeros((batch, 1))
        )
        actions = torch.where(ta[None, :] < n_back[:, None], actions, torch.full_like(actions, -1))
        actions = torch.where(ta[None, :] == n_back[:, None], torch.full_like(actions, self.stop), actions)
        return Trajectories(states, actions, n_back + 1)

    def log_probs(self, model: Policy, traj: Trajectories, dtype: torch.dtype | None = None) -> StepLogProbs:
        """Per-step log P_F, log P_B (and log F) of ``traj`` under ``model`` in one batched network pass.

        Only the real transitions are evaluated (network, masks, softmax); padding gets zeros. ``dtype``
        casts the results (e.g. float64 for log Z bounds); by default they keep the network's dtype.
        """
        states, actions = traj.states, traj.actions
        batch, length = actions.shape
        trail = states.shape[2:]
        valid = traj.valid()
        rows = valid.reshape(-1).nonzero().squeeze(1)  # real transitions, trajectory by trajectory, in order
        src = states[:, :length].reshape(batch * length, *trail).index_select(0, rows)
        a = actions.reshape(-1).index_select(0, rows)
        fwd_logits, bwd_logits, log_flow = model.outputs(self, src)

        log_p = torch.log_softmax(fwd_logits.masked_fill(~self.forward_mask(src), -math.inf), -1)
        lpf = log_p.gather(1, a[:, None]).squeeze(1)

        children = states[:, 1 : length + 1].reshape(batch * length, *trail).index_select(0, rows)
        child_logits = None
        if bwd_logits is not None:
            # The child of a move is the source of the next transition of the same trajectory: the next row.
            child_logits = torch.cat([bwd_logits[1:], bwd_logits.new_zeros((1, bwd_logits.shape[1]))])
        lpb = self._transition_log_pb(src, a, children, child_logits, lpf.dtype)

        def padded(v: Tensor) -> Tensor:
            return v.new_zeros(batch * length).index_put((rows,), v).view(batch, length)

        flow = None if log_flow is None else padded(log_flow)
        lp = StepLogProbs(padded(lpf), padded(lpb), flow, valid)
        if dtype is not None:
            lp.log_pf, lp.log_pb = lp.log_pf.to(dtype), lp.log_pb.to(dtype)
            lp.log_flow = None if lp.log_flow is None else lp.log_flow.to(dtype)
        return lp

    def splice(self, prefix: Trajectories, keep: Tensor, suffix: Trajectories) -> Trajectories:
        """Trajectory = the first ``keep`` transitions of ``prefix`` followed by ``suffix``.

        ``suffix`` must start at ``prefix.states[:, keep]``.
        """
        batch = prefix.batch_size
        dev = prefix.states.device
        lengths = keep + suffix.lengths
        total = int(lengths.max())
        t = torch.arange(total + 1, device=dev)[None, :]
        use_prefix = t <= keep[:, None]
        extra = [1] * (prefix.states.dim() - 2)
        trail = prefix.states.shape[2:]
        p_idx = t.clamp(max=prefix.states.shape[1] - 1).expand(batch, -1)
        s_idx = (t - keep[:, None]).clamp(min=0, max=suffix.states.shape[1] - 1)
        p_states = prefix.states.gather(1, p_idx.view(batch, -1, *extra).expand(-1, -1, *trail))
        s_states = suffix.states.gather(1, s_idx.view(batch, -1, *extra).expand(-1, -1, *trail))
        states = torch.where(use_prefix.view(batch, -1, *extra), p_states, s_states)
        ta = t[:, :total]
        pa = prefix.actions.gather(1, ta.clamp(max=prefix.actions.shape[1] - 1).expand(batch, -1))
        sa = suffix.actions.gather(1, (ta - keep[:, None]).clamp(min=0, max=suffix.actions.shape[1] - 1))
        actions = torch.where(ta < keep[:, None], pa, sa)
        actions = torch.where(ta < lengths[:, None], actions, torch.full_like(actions, -1))
        return Trajectories(states, actions, lengths)

    def with_rewards(self, traj: Trajectories) -> Trajectories:
        return replace(traj, log_reward=self.log_reward(traj.terminal))
