"""Fixed-length strings built by prepending and appending characters (Shen et al., 2023, "Towards understanding
and improving GFlowNet training", ICML; the MDP of the biochemical string tasks of Kim et al., ICLR 2025).

A terminal object x is a string of length L over an alphabet of A characters (indices 0..A-1); s0 is the empty
string. **State layout**: a long tensor [n, L], the string left-aligned (``states[:, j]`` is its j-th character,
read left to right) and -1 in the positions not yet written; the length is the number of entries >= 0.

**Forward actions** (n_actions = 2A + 1): ``c`` (0 <= c < A) prepends character c, ``A + c`` appends it, ``2A``
is stop, allowed (and forced) only at length L, so every trajectory has L + 1 transitions (L moves + stop).
**Duplicate children.** Prepending c and appending c give the same child exactly when the string is c^k (k >= 0;
the empty string for every c): ``c + s = s + c`` iff s is constant c. Shen et al. sum the probabilities of such
duplicate children; here the forward mask allows only "append c" there (every prepend at length 0, "prepend c"
at c^k), so each (parent, child) edge is one action. For a policy that scores unique children (SSR) the two are
the same distribution, and the DAG is simple, which keeps the exact DP of ``metrics.exact`` exact.

**Backward actions** (n_backward_actions = 2A, the same indices as the moves they undo): ``c`` removes the first
character, which is c; ``A + c`` removes the last, which is c. A string s of length k >= 1 has the parents
s[1:] and s[:-1]; they coincide iff s is constant (s = c^k, k >= 1), and then only "remove the last" is allowed
(undoing the one allowed edge, "append c"). P_B is uniform over the unique parents: 1/2, or 1 for c^k.
``backward_action(s, a) = a`` and ``forward_action(parent, b) = b``.

Features: the one-hot code of the left-aligned string, [n, L·A] float32, zero rows for empty positions (the
featurisation of the official code). ``state_key`` = Σ_j (x_j + 1)·(A+1)^j (0 for an empty position). Terminal
strings are numbered by ``terminal_index`` = Σ_j x_j·A^(L−1−j), the lexicographic row order of the tasks'
reward tables. ``enumerate_states`` lists every string of length 0..L while A^L <= ``enumerate_limit``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from adaptive_teacher.envs.base import DiscreteEnv
from adaptive_teacher.errors import ConfigError

StringRewardFn = Callable[[Tensor], Tensor]  # x [m, L] long in 0..A-1 -> R(x) > 0, float [m]
DEFAULT_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ENUMERATE_LIMIT = 250_000  # QM9 11^5 = 161,051 and TFBind8 4^8 = 65,536 fit; sEH 18^6 and RNA 4^14 do not


class PrependAppendStrings(DiscreteEnv):
    """Strings of ``length`` L over ``alphabet_size`` A characters, built by prepend/append moves (see the module).

    ``reward_fn(x [m, L] long) -> [m]`` gives R(x) > 0 of terminal strings (a subclass may override ``reward``
    instead and pass None). ``alphabet`` (A one-character symbols) is used by ``to_strings``/``from_strings``
    only. ``mode_fn(x) -> [m] bool`` and ``n_modes`` declare the modes (default: none known).
    """

    name = "strings"

    def __init__(
        self,
        alphabet_size: int,
        length: int,
        reward_fn: StringRewardFn | None,
        alphabet: str | None = None,
        mode_fn: Callable[[Tensor], Tensor] | None = None,
        n_modes: int | None = None,
        enumerate_limit: int = ENUMERATE_LIMIT,
    ):
        a, n = int(alphabet_size), int(length)
        if a < 1:
            raise ConfigError(f"alphabet_size must be >= 1 (got {alphabet_size})")
        if n < 1:
            raise ConfigError(f"length must be >= 1 (got {length})")
        if n * (a + 1).bit_length() > 62:
            raise ConfigError(f"(alphabet_size + 1)^length must fit in int64 state keys (got A={a}, L={n})")
        if alphabet is None:
            if a > len(DEFAULT_ALPHABET):
                raise ConfigError(f"give an alphabet of {a} one-character symbols (the default has 36)")
            alphabet = DEFAULT_ALPHABET[:a]
        if len(alphabet) != a or len(set(alphabet)) != a:
            raise ConfigError(f"alphabet must hold {a} distinct one-character symbols (got {alphabet!r})")
        if reward_fn is None and type(self).reward is PrependAppendStrings.reward:
            raise ConfigError("reward_fn is required (or subclass PrependAppendStrings and override reward)")
        self.alphabet_size, self.length, self.alphabet = a, n, alphabet
        self.n_actions, self.n_backward_actions = 2 * a + 1, 2 * a
        self.max_length, self.n_features = n + 1, n * a
        self.reward_fn, self.mode_fn = reward_fn, mode_fn
        if reward_fn is not None:
            self.reward_name = "reward_fn"  # how reward errors name it
        self.n_modes = n_modes if mode_fn is not None else None  # a subclass with its own is_mode sets it
        self.n_terminal_states = a**n
        self.enumerate_limit = int(enumerate_limit)
        dev = self.device
        self._chars = torch.arange(a, device=dev)
        self._key_pow = (a + 1) ** torch.arange(n, device=dev)  # state_key weights, position j -> (A+1)^j
        self._row_pow = a ** torch.arange(n - 1, -1, -1, device=dev)  # terminal_index weights, j -> A^(L-1-j)
        self._char_of = {ch: i for i, ch in enumerate(alphabet)}

    # ---- structure --------------------------------------------------------------------------------------
    def level(self, states: Tensor) -> Tensor:
        """The string length k (= forward transitions from s0)."""
        return (states >= 0).sum(-1)

    def _constant(self, states: Tensor) -> Tensor:
        """Whether each string is c^k for some character c and k >= 1."""
        written = states >= 0
        return written[:, 0] & ((states == states[:, :1]) | ~written).all(-1)

    def initial_states(self, n: int) -> Tensor:
        return torch.full((n, self.length), -1, dtype=torch.long, device=self.device)

    def forward_mask(self, states: Tensor) -> Tensor:
        """[prepend c | append c | stop]; prepend c is masked at c^k (its child is that of append c), and at k = 0."""
        k = self.level(states)
        full = (k == self.length)[:, None]
        duplicate = (k == 0)[:, None] | (self._constant(states)[:, None] & (states[:, :1] == self._chars))
        prepend = ~full & ~duplicate
        append = ~full.expand(-1, self.alphabet_size)
        return torch.cat([prepend, append, full], 1)

    def backward_mask(self, states: Tensor) -> Tensor:
        """[remove the first char, it is c | remove the last char, it is c]; only the latter at c^k."""
        k = self.level(states)
        first = states[:, :1]
        last = states.gather(1, (k - 1).clamp(min=0)[:, None])
        some = (k >= 1)[:, None]
        remove_first = some & ~self._constant(states)[:, None] & (first == self._chars)
        remove_last = some & (last == self._chars)
        return torch.cat([remove_first, remove_last], 1)

    # ---- transitions (vectorised, no Python loop over states) --------------------------------------------
    def _moved(self, states: Tensor, actions: Tensor) -> Tensor:
        """The child under each action read as a move (garbage for stop/-1 rows: callers discard them)."""
        a = actions.clamp(min=0)
        c = (a % self.alphabet_size)[:, None]
        k = self.level(states).clamp(max=self.length - 1)[:, None]
        prepended = torch.cat([c, states[:, :-1]], 1)
        appended = states.scatter(1, k, c)
        return torch.where((a < self.alphabet_size)[:, None], prepended, appended)

    def step(self, states: Tensor, actions: Tensor) -> Tensor:
        return self._moved(states, actions)

    def step_or_stay(self, states: Tensor, actions: Tensor) -> Tensor:
        moving = (actions >= 0) & (actions != self.stop)
        return torch.where(moving[:, None], self._moved(states, actions), states)

    def _parent(self, states: Tensor, backward_actions: Tensor) -> Tensor:
        k = self.level(states)
        first = torch.cat([states[:, 1:], states.new_full((len(states), 1), -1)], 1)
        last = states.scatter(1, (k - 1).clamp(min=0)[:, None], -1)
        return torch.where((backward_actions < self.alphabet_size)[:, None], first, last)

    def backward_step(self, states: Tensor, backward_actions: Tensor) -> Tensor:
        return self._parent(states, backward_actions)

    def backward_step_or_stay(self, states: Tensor, backward_actions: Tensor, alive: Tensor) -> tuple[Tensor, Tensor]:
        parent = torch.where(alive[:, None], self._parent(states, backward_actions), states)
        return parent, torch.where(alive, backward_actions, torch.full_like(backward_actions, -1))

    def backward_action(self, states: Tensor, actions: Tensor) -> Tensor:
        return actions  # undoing "prepend c" is "remove the first char, c"; "append c" is "remove the last, c"

    def forward_action(self, parents: Tensor, backward_actions: Tensor) -> Tensor:
        return backward_actions

    # ---- features, keys, rewards -------------------------------------------------------------------------
    def features(self, states: Tensor) -> Tensor:
        """[n, L·A]: one-hot characters of the left-aligned string, zeros where nothing is written."""
        hot = torch.nn.functional.one_hot(states.clamp(min=0), self.alphabet_size) * (states >= 0)[..., None]
        return hot.flatten(1).float()

    def state_key(self, states: Tensor) -> Tensor:
        """Σ_j (x_j + 1)·(A+1)^j: unique because the written characters are contiguous from position 0."""
        return ((states + 1) * self._key_pow).sum(-1)

    def terminal_index(self, x: Tensor) -> Tensor:
        """Σ_j x_j·A^(L−1−j): the row of a full string x in lexicographic (base-A, first character most
        significant) order, as in the tasks' ``rewards.npz`` tables."""
        return (x * self._row_pow).sum(-1)

    def from_index(self, rows: Tensor) -> Tensor:
        """The full strings [m, L] with ``terminal_index`` = rows (its inverse)."""
        return (rows.long()[:, None] // self._row_pow) % self.alphabet_size

    def reward(self, x: Tensor) -> Tensor:
        assert self.reward_fn is not None
        return self.reward_fn(x)

    def is_mode(self, x: Tensor) -> Tensor:
        if self.mode_fn is None:
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        return self.mode_fn(x)

    def enumerate_states(self) -> Tensor | None:
        """Every string of length 0..L (Σ_k A^k states), by length, each length in lexicographic order; None
        when A^L > ``enumerate_limit``."""
        if self.n_terminal_states > self.enumerate_limit:
            return None
        pos = torch.arange(self.length, device=self.device)
        out = []
        for k in range(self.length + 1):
            codes = torch.arange(self.alphabet_size**k, device=self.device)[:, None]
            weight = self.alphabet_size ** (k - 1 - pos).clamp(min=0)
            out.append(torch.where(pos < k, (codes // weight) % self.alphabet_size, -1))
        return torch.cat(out)

    # ---- strings at the edges ----------------------------------------------------------------------------
    def to_strings(self, states: Tensor) -> list[str]:
        """The strings of ``states`` (partial ones too), written with ``alphabet``."""
        return ["".join(self.alphabet[c] for c in row if c >= 0) for row in states.tolist()]

    def from_strings(self, strings: Sequence[str]) -> Tensor:
        """States [m, L] (on ``self.device``) of strings of length <= L written with ``alphabet`` (-1 padded);
        ValueError otherwise."""
        out = torch.full((len(strings), self.length), -1, dtype=torch.long, device="cpu")
        for i, s in enumerate(strings):
            if len(s) > self.length:
                raise ValueError(f"string {s!r} is longer than the length {self.length}")
            try:
                codes = [self._char_of[ch] for ch in s]
            except KeyError as e:
                raise ValueError(
                    f"string {s!r} has a character {e.args[0]!r} not in the alphabet {self.alphabet!r}"
                ) from None
            out[i, : len(codes)] = torch.tensor(codes, dtype=torch.long, device="cpu")
        return out.to(self.device)
