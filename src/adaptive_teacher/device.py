"""Where a run's tensors live: the ``device`` option (``cpu`` or ``cuda``) and the objects that follow it.

Placement rule: every tensor of a run is created on the run's device, never on torch's default device.
Environments, densities and oracles with tables are ``OnDevice`` objects: ``obj.to(device)`` moves their
tensor attributes (and nested ``OnDevice`` attributes) and returns the object, like ``nn.Module.to``; the
trainer calls ``env.to(cfg.device)`` once. Hot paths take the device from their inputs
(``torch.arange(n, device=x.device)``), policies and buffers are built with ``device=``.
"""

from __future__ import annotations

import re
from typing import TypeVar

import torch
from torch import Tensor

from adaptive_teacher.errors import ConfigError, option

CPU = torch.device("cpu")
DEVICE_NAMES = ("cpu", "cuda")  # what --device takes (cuda:N picks one GPU of several)
_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")

T = TypeVar("T", bound="OnDevice")


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch.device of a ``device`` option: ``cpu``, ``cuda`` (the current GPU, with its index) or
    ``cuda:N``. ConfigError (one line, naming the option) for another name or a GPU this machine lacks."""
    text = str(name)
    if not _PATTERN.match(text):
        raise ConfigError(f"{option('device')} must be cpu, cuda or cuda:N (got {text!r})")
    if text == "cpu":
        return CPU
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise ConfigError(
            f"{option('device')} {text}: CUDA is not available ({why}; torch {torch.__version__}); "
            f"use {option('device')} cpu"
        )
    dev = torch.device(text)
    if dev.index is not None:
        index = dev.index
    else:  # the current GPU; 0 before CUDA is initialised (asking would initialise it, e.g. in compare's parent)
        index = torch.cuda.current_device() if torch.cuda.is_initialized() else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"{option('device')} {text}: this machine has {torch.cuda.device_count()} GPU(s) (cuda:0 .. "
            f"cuda:{torch.cuda.device_count() - 1})"
        )
    return torch.device("cuda", index)


class OnDevice:
    """An object whose tensor attributes live on one device (``device``, CPU until moved).

    ``to(device)`` moves every tensor attribute and every nested ``OnDevice`` attribute and returns ``self``;
    ``device`` is a ``device`` option (cpu, cuda, cuda:N) or any torch.device (the tests use "meta").
    Subclasses whose data is not tensor attributes (numpy tables) override ``to`` and call ``super().to``."""

    device: torch.device = CPU

    def to(self: T, device: str | torch.device) -> T:
        given = isinstance(device, torch.device) and device.type not in DEVICE_NAMES
        dev = device if given else resolve_device(device)
        for name, value in list(vars(self).items()):
            if isinstance(value, Tensor):
                setattr(self, name, value.to(dev))
            elif isinstance(value, OnDevice) and value is not self:
                value.to(dev)
        self.device = dev
        return self
