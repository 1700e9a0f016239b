"""The SSR ("state × state → R", relative edge flow) policy of Shen et al. (2023, "Towards understanding and
improving GFlowNet training", ICML), used on the biochemical string tasks by Kim et al. (ICLR 2025).

An encoder MLP maps a state's features to an embedding, e(s) = enc(φ(s)); the same encoder embeds every
child s' of s (``env.children``); a scorer MLP gives each child the logit

    logit(s → s') = clip(score([e(s), e(s')]), −50, 50),        P_F(s'|s) = softmax over the allowed moves,

and stop the logit clip(score([e(s), e(s)]), −50, 50): the official code scores stop as the move to the
terminal copy of s, which it featurises like s itself. P_B is uniform (``learn_pb = False``) or, with
``learn_pb``, a second SSR network of the same shape scores each unique parent p of s, clip(score_B([e_B(s),
e_B(p)])) (Shen et al.'s separate backward policy, for guided TB); with ``flow_head`` a linear head on e(s)
gives log F(s) for detailed balance (and GAFN's edge terms). Sizes of
Kim et al.'s ``settings.yaml``: one hidden layer in the encoder and in the scorer, hidden = embedding width
= 1024 on QM9 and sEH, 128 on TFBind8 and RNA.

Cost. The scorer's first layer is linear in the concatenation, W·[e(s), e(s')] = W_s·e(s) + W_c·e(s'), so it
is applied once per state and once per child, and only the rest of the scorer runs per (state, child) pair
(the same outputs up to float32 rounding, fewer FLOPs). A child needs only W_c·e(s'), and the encoder's last
layer is linear too: without gradients (sampling, evaluation) and with more than 2·embed_dim distinct rows in
a call, W_c·e(s') = (W_c·W_last)·a(s') + W_c·b_last is one product per child with the folded matrix (half the
multiply-adds per child, for one extra hidden × hidden × embed product per call; measured: QM9's evaluation
on 2,048 samples 31 s → 22 s at width 1024). With gradients the fold's backward costs what it saves.
Only the allowed moves are scored (a full string's 2A children are all masked), states that appear several times in a
batch (a child of two parents) are embedded once, and without gradients (sampling, exact evaluation) the states go
through in blocks of about ``chunk`` (state, child) pairs, which bounds memory (QM9's exact DP at width 1024: about
0.7 GB instead of 6.5 GB, 63 s on one busy core).
``SSRExactEvaluator`` embeds every enumerated state once instead (about 1 GB, 16 s there with the table pass of this
release; 25 s before).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from adaptive_teacher.device import resolve_device
from adaptive_teacher.metrics.exact import ExactEvaluator
from adaptive_teacher.policies import Policy, PolicyOutputs, mlp

if TYPE_CHECKING:
    from adaptive_teacher.envs.base import DiscreteEnv

LOGIT_CLIP = 50.0  # clip_policy_logit_min/max of Kim et al.'s discovery settings.yaml
PAIRS_PER_BLOCK = 4096  # (state, child) pairs per block of SSRExactEvaluator's scorer loop


class SSRPolicy(nn.Module):
    """SSR policy: P_F logits from score([enc(s), enc(s')]) over the children of s, and stop from
    score([enc(s), enc(s)]); uniform P_B; optional log F(s) head (see the module docstring).

    ``hidden`` is the width of every hidden layer, ``embed_dim`` that of the embedding (default ``hidden``);
    the parameters are created on ``device`` (None: torch's default device).
    """

    def __init__(
        self,
        n_features: int,
        hidden: int = 128,
        embed_dim: int | None = None,
        encoder_layers: int = 1,
        scorer_layers: int = 1,
        flow_head: bool = False,
        logit_clip: float = LOGIT_CLIP,
        chunk: int = 16_384,
        learn_pb: bool = False,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        embed = int(embed_dim or hidden)
        self.embed_dim, self.logit_clip, self.chunk = embed, float(logit_clip), int(chunk)
        self.encoder = mlp(n_features, embed, hidden, encoder_layers, device)
        self.scorer = mlp(2 * embed, 1, hidden, scorer_layers, device)
        self.flow_head = bool(flow_head)
        self.flow = nn.Linear(embed, 1, device=device) if flow_head else None
        self.learn_pb = bool(learn_pb)
        self.back_encoder = mlp(n_features, embed, hidden, encoder_layers, device) if learn_pb else None
        self.back_scorer = mlp(2 * embed, 1, hidden, scorer_layers, device) if learn_pb else None
        self.log_Z = nn.Parameter(torch.zeros((), device=device))

    def _unique(self, env: DiscreteEnv, states: Tensor) -> tuple[Tensor, Tensor | None]:
        """One row of each distinct state (by ``env.state_key``) and the index of every row's copy, or
        ``(states, None)`` when they are all distinct."""
        uniq, inverse = torch.unique(env.state_key(states), return_inverse=True)
        if len(uniq) == len(states):
            return states, None
        first = torch.empty(len(uniq), dtype=torch.long, device=states.device)
        first.scatter_(0, inverse, torch.arange(len(states), device=states.device))  # any row of each key
        return states[first], inverse

    def embed(self, env: DiscreteEnv, states: Tensor) -> Tensor:
        """e(s) = enc(φ(s)) [n, embed_dim], each distinct state encoded once."""
        rep, inverse = self._unique(env, states)
        e = self.encoder(env.features(rep))
        return e if inverse is None else e[inverse]

    def score(self, e_state: Tensor, e_child: Tensor) -> Tensor:
        """score([e_state, e_child]) [m], unclipped: the plain scorer on the concatenation (a reference for tests)."""
        return self.scorer(torch.cat([e_state, e_child], -1)).squeeze(-1)

    def project(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """The scorer's first layer split by its input halves: (W_s·e + b, W_c·e), so that its pre-activation on
        [e(s), e(s')] is ``h(s) + g(s')`` (``h, g = project(e)``)."""
        first = self.scorer[0]
        assert isinstance(first, nn.Linear)
        w_s, w_c = first.weight[:, : self.embed_dim], first.weight[:, self.embed_dim :]
        return e @ w_s.T + first.bias, e @ w_c.T

    def pair_logits(
        self, h_s: Tensor, g_s: Tensor, g_c: Tensor, rows: Tensor, moves: Tensor, k: int, in_place: bool = False
    ) -> Tensor:
        """[n, k + 1] logits from the projections of n states (h_s, g_s) and of their allowed children g_c (the
        child of state ``rows[i]`` under move ``moves[i]``): moves clip(rest(h(s) + g(s'))), 0 where masked, then
        stop clip(rest(h(s) + g(s))). ``in_place`` (no gradients; g_c is overwritten) saves two copies of the
        [pairs, hidden] pre-activations, for the exact evaluation's millions of pairs."""
        rest, clip, n = self.scorer[1:], self.logit_clip, len(h_s)
        if in_place:
            moving = rest(g_c.add_(h_s[rows])).squeeze(-1).clamp(-clip, clip)
            stop = rest(h_s + g_s).squeeze(-1).clamp(-clip, clip)
        else:
            scores = rest(torch.cat([h_s[rows] + g_c, h_s + g_s])).squeeze(-1).clamp(-clip, clip)
            moving, stop = scores[: len(rows)], scores[len(rows) :]
        move_logits = moving.new_zeros((n, k)).index_put((rows, moves), moving)
        return torch.cat([move_logits, stop[:, None]], 1)

    def outputs(self, env: DiscreteEnv, states: Tensor) -> PolicyOutputs:
        """[allowed moves' scores (0 where masked) | stop score] and log F(s) (flow head); without gradients, in
        blocks of about ``chunk`` (state, child) pairs."""
        per_block = max(1, self.chunk // env.n_actions)
        if torch.is_grad_enabled() or len(states) <= per_block:
            return self._outputs(env, states)
        parts = [self._outputs(env, states[i : i + per_block]) for i in range(0, len(states), per_block)]
        flows = [p.log_flow for p in parts]
        flow = None if flows[0] is None else torch.cat(flows)  # type: ignore[arg-type]
        back = None if not self.learn_pb else torch.cat([p.backward for p in parts])  # type: ignore[misc]
        return PolicyOutputs(torch.cat([p.forward for p in parts]), back, flow)

    def _outputs(self, env: DiscreteEnv, states: Tensor) -> PolicyOutputs:
        n, k = states.shape[0], env.n_actions - 1
        kids, exists = env.children(states)
        rows, moves = exists.nonzero(as_tuple=True)  # the allowed moves, as (state row, action)
        rep, inverse = self._unique(env, torch.cat([states, kids[rows, moves]]))
        if not torch.is_grad_enabled() and len(rep) > 2 * self.embed_dim:  # fold W_c·W_last (sampling, evaluation)
            a = self.encoder[:-1](env.features(rep))
            last, first = self.encoder[-1], self.scorer[0]
            assert isinstance(last, nn.Linear) and isinstance(first, nn.Linear)
            w_c = first.weight[:, self.embed_dim :]
            g = torch.addmm(w_c @ last.bias, a, (w_c @ last.weight).T)
            a_s = a[:n] if inverse is None else a[inverse[:n]]
            e_s = last(a_s)
        else:
            e = self.encoder(env.features(rep))
            _, g = self.project(e)  # W_c·e once per distinct state
            e_s = e[:n] if inverse is None else e[inverse[:n]]
        g_s, g_c = (g[:n], g[n:]) if inverse is None else (g[inverse[:n]], g[inverse[n:]])
        h_s, _ = self.project(e_s)
        log_flow = None if self.flow is None else self.flow(e_s).squeeze(-1)
        back = self.backward_logits(env, states) if self.learn_pb else None
        return PolicyOutputs(self.pair_logits(h_s, g_s, g_c, rows, moves, k), back, log_flow)

    def backward_logits(self, env: DiscreteEnv, states: Tensor) -> Tensor:
        """[n, n_backward_actions]: clip(score_B([e_B(s), e_B(p)])) for each allowed parent p, 0 where masked."""
        assert self.back_encoder is not None and self.back_scorer is not None
        n = states.shape[0]
        parents, exists = env.parents(states)
        rows, moves = exists.nonzero(as_tuple=True)
        rep, inverse = self._unique(env, torch.cat([states, parents[rows, moves]]))
        e = self.back_encoder(env.features(rep))
        e = e if inverse is None else e[inverse]
        first = self.back_scorer[0]
        assert isinstance(first, nn.Linear)
        h = e[:n] @ first.weight[:, : self.embed_dim].T + first.bias
        g = e[n:] @ first.weight[:, self.embed_dim :].T
        scores = self.back_scorer[1:](h[rows] + g).squeeze(-1).clamp(-self.logit_clip, self.logit_clip)
        return scores.new_zeros((n, env.n_backward_actions)).index_put((rows, moves), scores)


class SSRExactEvaluator(ExactEvaluator):
    """ExactEvaluator whose ``action_probs`` of an SSRPolicy encodes every enumerated state once.

    The generic path encodes each child again for each parent (about 3 encoder passes per state on QM9);
    here the projections h(s), g(s) of e(s) are computed once per state, each in one product with the encoder's
    last layer folded into the scorer's first, and a child's g is looked up by its position in the
    enumeration; h only for states that have a move (on QM9 the 161,051 full strings, 91 % of the states, only
    stop). The same probabilities to float32 rounding; other policies take the generic path. Holds g of every
    state and h of the others: (n_states + n_moving)·hidden float32 (0.8 GB for QM9 at width 1024)."""

    @torch.no_grad()
    def action_probs(self, model: Policy) -> Tensor:
        if not isinstance(model, SSRPolicy):
            return super().action_probs(model)
        env, k, step = self.env, self.env.n_actions - 1, model.chunk
        # [h; g] = [W_s; W_c]·(W_last·a + b_last) + [b; 0] with a the encoder's last hidden layer: one product.
        # A state whose only allowed action is stop (a full string) stops with probability 1: it needs no h.
        last, first = model.encoder[-1], model.scorer[0]
        assert isinstance(last, nn.Linear) and isinstance(first, nn.Linear)
        w_s, w_c = first.weight[:, : model.embed_dim], first.weight[:, model.embed_dim :]
        m_h, c_h = w_s @ last.weight, w_s @ last.bias + first.bias
        m_g, c_g = w_c @ last.weight, w_c @ last.bias
        movers = self.forward_mask[:, :k].any(1)
        slot = torch.cumsum(movers, 0) - 1  # row of h for each state that has a move
        width = first.weight.shape[0]
        g_all = torch.empty((self.n_states, width), dtype=m_g.dtype, device=m_g.device)
        h_movers = torch.empty((int(movers.sum()), width), dtype=m_h.dtype, device=m_h.device)
        for i in range(0, self.n_states, step):
            a = model.encoder[:-1](env.features(self.states[i : i + step]))
            torch.addmm(c_g, a, m_g.T, out=g_all[i : i + step])
            moving = movers[i : i + step]
            if bool(moving.any()):
                h_movers[slot[i : i + step][moving]] = torch.addmm(c_h, a[moving], m_h.T)
        probs = torch.zeros((self.n_states, env.n_actions), dtype=torch.float64, device=m_g.device)
        probs[~movers, env.stop] = 1.0
        moving_states = movers.nonzero().squeeze(1)
        per_block = max(1, PAIRS_PER_BLOCK // env.n_actions)  # [pairs, hidden] intermediates that fit in cache
        for j in range(0, len(moving_states), per_block):
            idx = moving_states[j : j + per_block]
            kids, exists = env.children(self.states[idx])
            rows, moves = exists.nonzero(as_tuple=True)
            g_c = g_all[self.position(kids[rows, moves])]
            logits = model.pair_logits(h_movers[slot[idx]], g_all[idx], g_c, rows, moves, k, in_place=True)
            probs[idx] = torch.softmax(logits.to(torch.float64).masked_fill(~self.forward_mask[idx], -math.inf), -1)
        return probs


def make_ssr_policy(env: DiscreteEnv, cfg: Any) -> SSRPolicy:
    """The SSR policy a TrainConfig asks for: width ``cfg.hidden``, a flow head for DB and GAFN (as the MLP
    factory of families.py), a learned SSR P_B with ``learn_pb`` (guided TB; Kim et al. use the uniform one), on
    the run's device."""
    flow = getattr(cfg, "objective", "tb") == "db" or bool(getattr(cfg, "gafn", False))
    device = resolve_device(getattr(cfg, "device", "cpu"))
    return SSRPolicy(env.n_features, hidden=int(cfg.hidden), flow_head=flow, learn_pb=bool(cfg.learn_pb), device=device)
