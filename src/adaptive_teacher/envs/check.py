"""``check_env``: test a user's environment against the contract the samplers rely on, before training.

In the spirit of Stable-Baselines3's env checker: every failure is one EnvironmentCheckError whose message
starts with the method to fix (``MyEnv.backward_step: ...``) and shows an offending state. Checks, in order:
declared attributes; ``initial_states``; masks and ``step`` on states reached by random walks (which always
move while they can, so they reach every level) and whether a walk can exceed ``max_length``; ``features``;
that ``step``/``backward_step`` and ``forward_action``/``backward_action`` invert each other (and the
vectorised ``step_or_stay``/``backward_step_or_stay`` agree with them); ``state_key``; uniform ``rollout`` and
``backward_rollout``, with finite log-probabilities and rewards > 0; and where ``enumerate_states()`` is not
None, the enumeration, ``level``, the parent counts of ``backward_mask``, and that the exact optimal policy
(``metrics.exact.optimal_policy``, a table keyed on ``state_key``) has a zero trajectory-balance residual
with log Z = log F(s0) = ``log_partition()``.
A DiffusionEnv gets a reduced check: finite log-rewards and int64 keys on Brownian-motion samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import torch
from torch import Tensor, nn

from adaptive_teacher.envs.base import DiscreteEnv, sample_categorical
from adaptive_teacher.errors import AdaptiveTeacherError, EnvironmentCheckError, RewardError
from adaptive_teacher.policies import PolicyOutputs


class _Uniform(nn.Module):
    """Uniform P_F over the allowed actions (zero logits), uniform P_B."""

    learn_pb = False
    flow_head = False

    def outputs(self, env: DiscreteEnv, states: Tensor) -> PolicyOutputs:
        zeros = torch.zeros(states.shape[0], env.n_actions, dtype=torch.float64, device=states.device)
        return PolicyOutputs(zeros, None, None)


class _ZeroDrift(nn.Module):
    """Drift 0 and the reference variance: Brownian motion."""

    def forward(self, x: Tensor, t: Any) -> tuple[Tensor, None]:
        return torch.zeros_like(x), None


class _Checker:
    def __init__(self, env: Any, n: int):
        self.env, self.n, self.cls = env, n, type(env).__name__

    def fail(self, method: str, message: str) -> NoReturn:
        raise EnvironmentCheckError(f"{self.cls}.{method}: {message}")

    def call(self, method: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a user method; an exception it raises becomes an error naming it."""
        try:
            return fn(*args)
        except EnvironmentCheckError:
            raise
        except RewardError as e:
            self.fail(method, str(e))
        except Exception as e:  # noqa: BLE001 -- any failure of user code is reported the same way
            shown = (
                f" (first state {args[0][0].tolist()})" if args and isinstance(args[0], Tensor) and len(args[0]) else ""
            )
            raise EnvironmentCheckError(f"{self.cls}.{method} raised {type(e).__name__}: {e}{shown}") from e

    def tensor(self, method: str, value: Any, shape: tuple[int, ...], dtype: torch.dtype | None, what: str) -> Tensor:
        if not isinstance(value, Tensor):
            self.fail(method, f"must return a torch.Tensor ({what}), got {type(value).__name__}")
        if tuple(value.shape) != shape:
            self.fail(method, f"must return shape {list(shape)} ({what}), got {list(value.shape)}")
        if dtype is not None and value.dtype != dtype:
            self.fail(method, f"must return dtype {dtype} ({what}), got {value.dtype}")
        return value

    def rows_equal(self, a: Tensor, b: Tensor) -> Tensor:
        return (a == b).reshape(len(a), -1).all(-1)

    # ---- user methods, with their outputs checked ----------------------------------------------------
    def forward_mask(self, s: Tensor) -> Tensor:
        m = self.call("forward_mask", self.env.forward_mask, s)
        m = self.tensor("forward_mask", m, (len(s), self.env.n_actions), torch.bool, "[n, n_actions] bool")
        if not bool(m.any(-1).all()):
            i = int((~m.any(-1)).nonzero()[0, 0])
            self.fail("forward_mask", f"allows no action (not even stop) at state {s[i].tolist()}")
        return m

    def backward_mask(self, s: Tensor) -> Tensor:
        m = self.call("backward_mask", self.env.backward_mask, s)
        return self.tensor("backward_mask", m, (len(s), self.env.n_backward_actions), torch.bool, "[n, n_back] bool")

    def states(self, method: str, s: Tensor, n: int) -> Tensor:
        return self.tensor(method, s, (n, *self.shape), self.env.state_dtype, "states like initial_states")

    def actions(self, method: str, a: Any, n: int, hi: int) -> Tensor:
        a = self.tensor(method, a, (n,), torch.long, "one action per state")
        if bool(((a < 0) | (a >= hi)).any()):
            self.fail(method, f"returned action {int(a[(a < 0) | (a >= hi)][0])} outside 0..{hi - 1}")
        return a

    def moved(self, method: str, fn: Callable[..., Tensor], s: Tensor, a: Tensor) -> Tensor:
        """``fn(s, a)``, checked to return states and to leave its inputs unchanged."""
        before = s.clone()
        out = self.states(method, self.call(method, fn, s, a), len(s))
        if not torch.equal(s, before):
            self.fail(method, "modified its input states in place; return a new tensor (e.g. states.clone())")
        return out

    # ---- the checks ---------------------------------------------------------------------------------
    def attributes(self) -> None:
        env = self.env
        for name, low in (("n_actions", 2), ("n_backward_actions", 1), ("max_length", 1), ("n_features", 1)):
            v = getattr(env, name, None)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                self.fail(name, f"must be declared as an int >= {low} (got {v!r})")
        if getattr(env, "family", None) not in ("discrete", "strings"):
            self.fail(
                "family",
                "a DiscreteEnv declares family = 'discrete' (or 'strings' for the string-design protocol; got "
                f"{getattr(env, 'family', None)!r})",
            )
        if not isinstance(env.state_dtype, torch.dtype):
            self.fail("state_dtype", f"must be a torch.dtype (got {env.state_dtype!r})")
        if env.stop != env.n_actions - 1:
            self.fail("stop", f"stop must be the last forward action, n_actions - 1 = {env.n_actions - 1}")

    def initial(self) -> Tensor:
        s0 = self.call("initial_states", self.env.initial_states, self.n)
        if not isinstance(s0, Tensor) or s0.dim() < 1 or len(s0) != self.n:
            self.fail("initial_states", f"initial_states(n) must return a tensor [n, ...], got {s0!r:.80}")
        if s0.dtype != self.env.state_dtype:
            self.fail(
                "initial_states", f"returned dtype {s0.dtype}; the env declares state_dtype {self.env.state_dtype}"
            )
        self.shape = tuple(s0.shape[1:])
        if not bool(self.rows_equal(s0, s0[:1].expand_as(s0)).all()):
            self.fail("initial_states", "must return n copies of the single initial state s0")
        if bool(self.backward_mask(s0).any()):
            self.fail("backward_mask", f"must be all False at s0 = {s0[0].tolist()} (s0 has no parent)")
        return s0

    def walk(self, s0: Tensor) -> list[Tensor]:
        """Uniform random moves (stop only when forced), checking the masks on every state reached."""
        env, stop = self.env, self.env.stop
        s, levels = s0, [s0]
        for t in range(env.max_length):
            moves = self.forward_mask(s)[:, :stop]
            can = moves.any(-1)
            if t > 0:
                orphan = ~self.backward_mask(s).any(-1)
                if bool(orphan.any()):
                    i = int(orphan.nonzero()[0, 0])
                    self.fail("backward_mask", f"allows no parent at {s[i].tolist()}, reached by step from s0")
            if not bool(can.any()):
                return levels
            if t == env.max_length - 1:
                i = int(can.nonzero()[0, 0])
                self.fail(
                    "max_length",
                    f"a state reached after max_length - 1 = {t} moves, {s[i].tolist()}, still allows moves, so a "
                    "trajectory can exceed max_length transitions: raise max_length or force stop (forward_mask)",
                )
            s = self.moved("step", env.step, s[can], sample_categorical(moves[can].float()))
            levels.append(s)
        return levels

    def features(self, pool: Tensor) -> None:
        f = self.call("features", self.env.features, pool)
        f = self.tensor("features", f, (len(pool), self.env.n_features), torch.float32, "[n, n_features] float32")
        bad = ~torch.isfinite(f).all(-1)
        if bool(bad.any()):
            self.fail("features", f"returned a non-finite value at state {pool[int(bad.nonzero()[0, 0])].tolist()}")

    def inverses(self, pool: Tensor) -> None:
        env, stop, nb = self.env, self.env.stop, self.env.n_backward_actions
        expand = (-1, *[1] * len(self.shape))
        fm = self.forward_mask(pool)[:, :stop]
        s = pool[fm.any(-1)]
        if len(s):  # forward: s --a--> s' = step(s, a), b = backward_action(s, a)
            a = sample_categorical(fm[fm.any(-1)].float())
            child = self.moved("step", env.step, s, a)
            b = self.actions("backward_action", self.call("backward_action", env.backward_action, s, a), len(s), nb)
            t = (s, a, child, b)
            ok = self.backward_mask(child).gather(1, b[:, None]).squeeze(1)
            self.require("backward_mask", ok, "backward_mask(s')[backward_action(s, a)] is False", t)
            back = self.moved("backward_step", env.backward_step, child, b)
            self.require(
                "backward_step", self.rows_equal(back, s), "backward_step(s', b) does not give back s", t, back
            )
            fa = self.actions("forward_action", self.call("forward_action", env.forward_action, s, b), len(s), stop)
            self.require("forward_action", fa == a, "forward_action(s, backward_action(s, a)) != a", t, fa)
            acts = torch.where(torch.rand(len(s), device=s.device) < 0.25, torch.full_like(a, stop), a)  # stop stays
            want = torch.where((acts == stop).view(expand), s, child)
            got = self.moved("step_or_stay", env.step_or_stay, s, acts)
            what = "step_or_stay(s, a) disagrees with step, or does not stay where a is stop"
            self.require("step_or_stay", self.rows_equal(got, want), what, (s, acts, want, b), got)
            alive = torch.rand(len(s), device=s.device) < 0.75
            par, fwd = self.call("backward_step_or_stay", env.backward_step_or_stay, child, b, alive)
            ok = self.rows_equal(
                self.states("backward_step_or_stay", par, len(s)), torch.where(alive.view(expand), s, child)
            )
            ok &= torch.where(alive, fwd == a, fwd == -1)
            what = "must return (backward_step, forward_action) where alive and (s', -1) elsewhere"
            self.require("backward_step_or_stay", ok, what, t)
        bm = self.backward_mask(pool)
        c = pool[bm.any(-1)]
        if len(c):  # backward: s = backward_step(s', b), a = forward_action(s, b)
            b = sample_categorical(bm[bm.any(-1)].float())
            p = self.moved("backward_step", env.backward_step, c, b)
            a = self.actions("forward_action", self.call("forward_action", env.forward_action, p, b), len(c), stop)
            t = (p, a, c, b)
            what = "backward_mask(s') allows b, but forward_mask(s)[a] is False for s = backward_step(s', b)"
            self.require("backward_mask", self.forward_mask(p).gather(1, a[:, None]).squeeze(1), what, t)
            again = self.moved("step", env.step, p, a)
            what = "step(s, forward_action(s, b)) does not give back s' for s = backward_step(s', b)"
            self.require("step", self.rows_equal(again, c), what, t, again)
            bb = self.actions("backward_action", self.call("backward_action", env.backward_action, p, a), len(c), nb)
            self.require("backward_action", bb == b, "backward_action(s, forward_action(s, b)) != b", t, bb)

    def require(self, method: str, ok: Tensor, what: str, t: tuple[Tensor, ...], got: Tensor | None = None) -> None:
        """Fail at the first False of ``ok``, showing the transition ``t = (s, a, s', b)`` there."""
        if bool(ok.all()):
            return
        i = int((~ok).nonzero()[0, 0])
        s, a, child, b = (v[i].tolist() for v in t)
        extra = "" if got is None else f"; got {got[i].tolist()}"
        self.fail(method, f"{what}: s = {s}, a = {a}, s' = {child}, b = {b}{extra}")

    def keys(self, pool: Tensor) -> None:
        keys = self.tensor(
            "state_key",
            self.call("state_key", self.env.state_key, pool),
            (len(pool),),
            torch.int64,
            "one int64 key per state",
        )
        uniq, inv = torch.unique(pool.reshape(len(pool), -1), dim=0, return_inverse=True)
        ref = keys.new_zeros(len(uniq)).scatter(0, inv, keys)
        differ = keys != ref[inv]
        if bool(differ.any()):
            self.fail("state_key", f"gives different keys to equal states {pool[int(differ.nonzero()[0, 0])].tolist()}")
        sk, order = torch.sort(ref)
        dup = (sk[1:] == sk[:-1]).nonzero()
        if len(dup):
            j = int(dup[0, 0])
            u, v = (uniq[order[j + k]].view(self.shape).tolist() for k in (0, 1))
            self.fail("state_key", f"gives the same key {int(sk[j])} to different states {u} and {v}")
        for name, other in (("a second call", pool), ("a cloned tensor", pool.clone())):
            if not torch.equal(self.call("state_key", self.env.state_key, other), keys):
                self.fail("state_key", f"is not stable: {name} gives other keys")

    def reward(self, x: Tensor) -> Tensor:
        where = getattr(self.env, "reward_name", "reward")
        try:
            return self.env.log_reward(x)
        except RewardError as e:
            raise EnvironmentCheckError(f"{where if '.' in where else f'{self.cls}.{where}'}: {e}") from e

    def rollouts(self, s0: Tensor) -> Tensor:
        env, model = self.env, _Uniform()
        try:
            traj = env.rollout(model, self.n)
        except AdaptiveTeacherError as e:
            raise EnvironmentCheckError(f"{self.cls}.forward_mask / max_length: uniform rollout: {e}") from e
        x = traj.terminal
        log_r = self.reward(x)
        modes = self.call("is_mode", env.is_mode, x)
        self.tensor("is_mode", modes, (len(x),), torch.bool, "one bool per terminal state")
        back = self.call("backward_rollout", env.backward_rollout, x)
        bad = ~self.rows_equal(back.states[:, 0], s0[: len(x)])
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            self.fail(
                "backward_mask",
                f"backward sampling from x = {x[i].tolist()} ends at "
                f"{back.states[i, 0].tolist()}, not at s0: only s0 may have no parent, and backward_step must "
                "reach s0 within max_length steps",
            )
        for name, t in (("rollout", traj), ("backward_rollout", back)):
            lp = self.call("log_probs", env.log_probs, model, t)
            total = lp.log_pf.sum(1) + lp.log_pb.sum(1)
            if not bool(torch.isfinite(total).all()):
                i = int((~torch.isfinite(total)).nonzero()[0, 0])
                self.fail(
                    "backward_mask",
                    f"a {name} trajectory to {t.terminal[i].tolist()} takes a masked action "
                    "(non-finite log P_F or log P_B): forward_mask and backward_mask disagree with step",
                )
        return log_r

    def exact(self, pool: Tensor) -> None:
        from adaptive_teacher.metrics.exact import ExactEvaluator, optimal_policy

        env, stop = self.env, self.env.stop
        states = self.call("enumerate_states", env.enumerate_states)
        if states is None:
            return
        if not isinstance(states, Tensor) or len(states) == 0:
            self.fail("enumerate_states", f"must return a non-empty tensor of states or None, got {states!r:.80}")
        states = self.states("enumerate_states", states, len(states))
        try:
            level = self.call("level", env.level, states)
        except EnvironmentCheckError as e:
            if isinstance(e.__cause__, NotImplementedError):
                self.fail(
                    "level", "must be implemented when enumerate_states() is not None (exact evaluation needs it)"
                )
            raise
        level = self.tensor("level", level, (len(states),), None, "one int per state")
        if level.is_floating_point() or level.dtype == torch.bool or bool((level < 0).any()):
            self.fail("level", f"must return non-negative integers (got dtype {level.dtype})")
        level = level.long()
        sk, perm = torch.sort(self.call("state_key", env.state_key, states))
        if bool((sk[1:] == sk[:-1]).any()):
            j = int((sk[1:] == sk[:-1]).nonzero()[0, 0])
            u, v = states[perm[j]], states[perm[j + 1]]
            method = "enumerate_states" if torch.equal(u, v) else "state_key"
            self.fail(method, f"two enumerated states share the key {int(sk[j])}: {u.tolist()} and {v.tolist()}")

        def position(s: Tensor, method: str, what: str) -> Tensor:
            k = env.state_key(s)
            pos = torch.searchsorted(sk, k).clamp(max=len(sk) - 1)
            missing = sk[pos] != k
            if bool(missing.any()):
                self.fail(method, f"{what} {s[int(missing.nonzero()[0, 0])].tolist()} is not in enumerate_states()")
            return perm[pos]

        level0 = int(level[position(env.initial_states(1), "enumerate_states", "s0 =")[0]])
        if level0 != 0:
            self.fail("level", f"level(s0) must be 0 (got {level0})")
        position(pool, "enumerate_states", "the state reached by random moves")
        fm = self.forward_mask(states)
        parents = torch.zeros(len(states), dtype=torch.long, device=states.device)
        for a in range(stop):
            src = fm[:, a].nonzero().squeeze(1)
            if len(src) == 0:
                continue
            moves = torch.full((len(src),), a, dtype=torch.long, device=src.device)
            child = self.moved("step", env.step, states[src], moves)
            dst = position(child, "enumerate_states", f"the child (action {a}) of an enumerated state,")
            low = level[dst] <= level[src]
            if bool(low.any()):
                i = int(low.nonzero()[0, 0])
                self.fail(
                    "level",
                    f"level(step(s, a)) must exceed level(s): s = {states[src[i]].tolist()}, a = {a}, "
                    f"levels {int(level[src[i]])} -> {int(level[dst[i]])}",
                )
            parents.index_add_(0, dst, torch.ones_like(dst))
        declared = self.backward_mask(states).sum(-1)
        wrong = declared != parents
        if bool(wrong.any()):
            i = int(wrong.nonzero()[0, 0])
            self.fail(
                "backward_mask",
                f"allows {int(declared[i])} parents of {states[i].tolist()}, but step reaches it "
                f"from {int(parents[i])} (state, action) pairs of enumerate_states()",
            )
        self.reward(states[fm[:, stop]])
        policy = optimal_policy(env, ExactEvaluator(env))
        log_f0 = policy.log_Z.item()
        log_z = self.call("log_partition", env.log_partition)
        if log_z is None or not abs(log_f0 - float(log_z)) <= 1e-6 * max(1.0, abs(log_f0)):
            self.fail(
                "log_partition",
                f"returned {log_z!r}, but log Σ_x R(x) over the enumerated terminal states, "
                f"log F(s0) of the exact flow, is {log_f0!r}",
            )
        traj = self.call("state_key", env.rollout, policy, self.n)  # the table policy looks states up by key
        lp = env.log_probs(policy, traj)
        delta = self.reward(traj.terminal) + lp.log_pb.sum(1) - log_f0 - lp.log_pf.sum(1)
        if not bool((delta.abs() < 1e-6).all()):
            i = int(delta.abs().argmax())
            self.fail(
                "forward_mask",
                f"the exact optimal policy has trajectory-balance residual {float(delta[i]):.3g} on "
                f"the trajectory to {traj.terminal[i].tolist()} (0 expected): forward_mask, backward_mask, "
                "reward or state_key differ between calls on the same state",
            )

    def diffusion(self) -> None:
        env = self.env
        traj = env.rollout(_ZeroDrift(), self.n)
        x = traj.states[:, -1]
        try:
            env.log_reward(x)
        except RewardError as e:
            raise EnvironmentCheckError(f"{type(env.density).__name__}.log_reward: {e}") from e
        self.tensor("state_key", env.state_key(x), (len(x),), torch.int64, "one int64 key per sample")


def check_env(env: object, n_samples: int = 64, seed: int = 0) -> None:
    """Check that ``env`` keeps the DiscreteEnv contract (see the module docstring for the list).

    Raises EnvironmentCheckError naming the method to fix. Uses its own random generator state (``seed``) and
    restores torch's. A DiffusionEnv gets the reduced check. Anything else is an EnvironmentCheckError.
    """
    from adaptive_teacher.envs.diffusion import DiffusionEnv

    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1 (got {n_samples!r})")
    c = _Checker(env, n_samples)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if isinstance(env, DiffusionEnv):
            c.diffusion()
            return
        if not isinstance(env, DiscreteEnv):
            raise EnvironmentCheckError(
                f"check_env checks a DiscreteEnv or a DiffusionEnv; got {type(env).__name__} (subclass DiscreteEnv)"
            )
        c.attributes()
        s0 = c.initial()
        pool = torch.cat(c.walk(s0))
        c.features(pool)
        c.inverses(pool)
        c.keys(pool)
        c.rollouts(s0)
        c.exact(pool)


__all__ = ["check_env"]
