"""The training schedule as typed steps, and the batch that records where it came from.

The schedule is cyclic, as in the paper's grid code (Kim et al., ICLR 2025): Teacher methods alternate
Student, Student, Teacher, Teacher (no buffer) or Student, replay, Teacher, replay (with a buffer); TB runs
Student (no buffer) or Student, replay. Back-and-forth local search refines the exploring source's batch on
the last two steps of every 16 (1/8 of the Student batches for TB, 1/4 of the Teacher batches); the
string code's chain local search is every Student batch, and the Teacher's batches stay unrefined. The
diffusion Teacher (the paper's diffusion code) runs Student, [Teacher samples → buffer] replay, Student,
replay: the Student never trains on the Teacher's trajectories directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from adaptive_teacher.envs.base import Trajectories

Source = Literal["student", "teacher", "replay"]


@dataclass(frozen=True)
class ScheduledStep:
    """One step: the batch's ``source``; ``local_search``: refine it by back-and-forth local search;
    ``teacher_feeds_buffer``: first put a Teacher batch into the replay buffer."""

    source: Source
    local_search: bool = False
    teacher_feeds_buffer: bool = False

    def __str__(self) -> str:
        text = ("teacher>" if self.teacher_feeds_buffer else "") + self.source
        return text + ("+ls" if self.local_search else "")


@dataclass
class Batch:
    """A batch of rewarded trajectories and the source that made it (``"replay"`` for replayed x)."""

    traj: Trajectories
    source: Source
    log_guide: Tensor | None = None  # guided TB: log p_guide of each replayed trajectory

    @property
    def fresh(self) -> bool:
        """Whether its terminal states were newly sampled (and rewarded) rather than replayed."""
        return self.source != "replay"


def build_schedule(
    teacher: bool,
    buffer: bool,
    local_search: bool,
    teacher_into_buffer: bool = False,
    teacher_every: int = 2,
    local_search_every_online: bool = False,
    local_search_replaces_teacher: bool = False,
) -> list[ScheduledStep]:
    """The cyclic schedule (see the module docstring); ``local_search`` is back-and-forth on a batch.

    ``teacher_every``: with a buffer, one online batch in this many is the Teacher's (the grid code 2, the
    string code 3: Student, replay, Student, replay, Teacher, replay). ``local_search_every_online``: every
    Student batch is its local search, and the Teacher keeps its rounds unrefined;
    ``local_search_replaces_teacher``: every online batch is the Student's local search and the Teacher never
    samples (the official string code, whose local-search branch comes before its Teacher branch: there a
    Teacher method with local search trains a Teacher that never explores, i.e. it is TB with local search)."""
    if teacher and teacher_into_buffer:
        return [
            ScheduledStep("student"),
            ScheduledStep("replay", teacher_feeds_buffer=True),
            ScheduledStep("student"),
            ScheduledStep("replay"),
        ]
    if local_search and local_search_every_online and (local_search_replaces_teacher or not teacher):
        return [ScheduledStep("student", local_search=True)] + ([ScheduledStep("replay")] if buffer else [])
    names: list[Source]
    if teacher:
        if buffer:
            names = ["student", "replay"] * (teacher_every - 1) + ["teacher", "replay"]
        else:
            names = ["student", "student", "teacher", "teacher"]
    else:
        names = ["student", "replay"] if buffer else ["student"]
    if local_search and local_search_every_online:
        return [ScheduledStep(n, local_search=True) if n == "student" else ScheduledStep(n) for n in names]
    length = math.lcm(len(names), 16)
    cycle = [ScheduledStep(n) for n in names * (length // len(names))]
    if local_search:
        explorer = "teacher" if teacher else "student"
        for i in range(length):
            if i % 16 in (14, 15) and cycle[i].source == explorer:
                cycle[i] = ScheduledStep(explorer, local_search=True)
    return cycle
