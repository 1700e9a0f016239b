"""Sequence design against a user's own oracle: ``SequenceEnv(alphabet="ACGT", length=8, reward_fn=f)``.

The prepend/append string MDP of the biochemical tasks (``envs/strings.py``, Shen et al., 2023) with a reward
the user supplies, trained with the string tasks' protocol (the ``strings`` family: Kim et al.'s discovery
settings, the SSR policy, a prioritised replay buffer). ``reward_fn`` receives a batch of full sequences,
as a long tensor of character indices [m, L] (``inputs="indices"``, the default) or as a list of strings
(``inputs="strings"``), and returns one reward R(x) > 0 per sequence (a tensor, numpy array or list; on any
device: it is moved to the device of x, the run's).
``modes`` (a list of strings) makes the trainer count how many of them it has found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from adaptive_teacher.biochem import mean_pairwise_hamming
from adaptive_teacher.envs.base import check_batch_output
from adaptive_teacher.envs.strings import PrependAppendStrings
from adaptive_teacher.errors import ConfigError, RewardError


class SequenceEnv(PrependAppendStrings):
    """Fixed-length sequences over ``alphabet`` (one character per symbol) scored by ``reward_fn``.

    ``score(sequences)`` is the checked entry point for strings: a sequence of the wrong length or with a
    character outside the alphabet is a RewardError that names it. ``name`` labels the runs."""

    family = "strings"

    def __init__(
        self,
        alphabet: str,
        length: int,
        reward_fn: Callable[[Any], Any],
        inputs: str = "indices",
        modes: Sequence[str] | None = None,
        name: str = "sequences",
    ):
        if not isinstance(alphabet, str) or len(alphabet) < 1:
            raise ConfigError(f"alphabet must be a non-empty string of one-character symbols (got {alphabet!r})")
        if inputs not in ("indices", "strings"):
            raise ConfigError(f"inputs must be 'indices' or 'strings' (got {inputs!r})")
        if not callable(reward_fn):
            raise ConfigError(f"reward_fn must be callable (got {type(reward_fn).__name__})")
        super().__init__(len(alphabet), length, None, alphabet=alphabet)
        self.user_reward_fn, self.inputs, self.name = reward_fn, inputs, str(name)
        self.reward_name = "reward_fn"
        self._mode_rows: Tensor | None = None
        if modes is not None:
            x = self._parse(list(modes), "modes")
            self._mode_rows = torch.unique(self.terminal_index(x))
            self.n_modes = len(self._mode_rows)

    def _parse(self, sequences: Sequence[str], where: str) -> Tensor:
        if isinstance(sequences, str):
            sequences = [sequences]
        bad_len = [s for s in sequences if not isinstance(s, str) or len(s) != self.length]
        if bad_len:
            raise RewardError(
                f"{where}: {bad_len[0]!r} is not a sequence of length {self.length} ({len(bad_len)} such of "
                f"{len(sequences)})"
            )
        allowed = set(self.alphabet)
        for s in sequences:
            if not set(s) <= allowed:
                wrong = sorted(set(s) - allowed)
                raise RewardError(f"{where}: {s!r} has characters {wrong} outside the alphabet {self.alphabet!r}")
        return self.from_strings(list(sequences))

    def reward(self, x: Tensor) -> Tensor:
        expected = f"full sequences as a long tensor [m, {self.length}] of indices 0..{self.alphabet_size - 1}"
        if not isinstance(x, Tensor):
            raise RewardError(f"{self.name}: expected {expected} (got {type(x).__name__}; score() takes strings)")
        if (
            x.dim() != 2
            or x.shape[1] != self.length
            or x.dtype.is_floating_point
            or x.dtype == torch.bool
            or bool(((x < 0) | (x >= self.alphabet_size)).any())
        ):
            raise RewardError(f"{self.name}: expected {expected} (got {x.dtype} of shape {list(x.shape)})")
        value = self.user_reward_fn(self.to_strings(x) if self.inputs == "strings" else x.clone())
        if not isinstance(value, Tensor):
            try:
                value = torch.as_tensor(value, dtype=torch.float64, device=x.device)
            except (TypeError, ValueError, RuntimeError):
                pass  # check_batch_output names what came back
        return check_batch_output(value, len(x), "reward_fn").to(device=x.device, dtype=torch.float64)

    def score(self, sequences: Sequence[str]) -> Tensor:
        """R of the given sequences (strings over the alphabet), float64 [m]; a malformed one is an error."""
        return self.reward(self._parse(sequences, "score"))

    def is_mode(self, x: Tensor) -> Tensor:
        if self._mode_rows is None:
            return torch.zeros(len(x), dtype=torch.bool, device=x.device)
        rows = self.terminal_index(x)
        pos = torch.searchsorted(self._mode_rows, rows).clamp(max=len(self._mode_rows) - 1)
        return self._mode_rows[pos] == rows

    def diversity(self, x: Tensor) -> float | None:
        """Mean pairwise Hamming distance of the distinct sequences of x (None for fewer than two)."""
        x = torch.unique(x, dim=0)
        return mean_pairwise_hamming(x) if len(x) >= 2 else None

    def task_spec(self) -> dict[str, Any]:
        return {"name": self.name, "alphabet": self.alphabet, "length": self.length}
