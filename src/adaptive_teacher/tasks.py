"""Named tasks for the command line, and the spec that rebuilds a task from a run's config.json."""

from __future__ import annotations

from typing import Any

from adaptive_teacher.envs.base import DiscreteEnv
from adaptive_teacher.envs.hypergrid import DeceptiveGrid
from adaptive_teacher.errors import ConfigError

TASKS = ("deceptive-grid",)


def make_task(spec: dict[str, Any]) -> DiscreteEnv:
    """Build a task from ``{"name": ..., **parameters}``."""
    name = spec.get("name")
    if name == "deceptive-grid":
        return DeceptiveGrid(int(spec.get("dim", 2)), int(spec.get("height", 16)))
    raise ConfigError(f"--task: unknown task {name!r}; choose one of {', '.join(TASKS)}")


def task_spec(env: DiscreteEnv) -> dict[str, Any]:
    """The JSON spec of a task (``name`` plus the parameters that rebuild it)."""
    name = getattr(env, "name", type(env).__name__)
    spec: dict[str, Any] = {"name": name}
    for attr in ("dim", "height"):
        if hasattr(env, attr):
            spec[attr] = getattr(env, attr)
    return spec


def task_info(env: DiscreteEnv) -> dict[str, Any]:
    """What ``adaptive-teacher info`` prints: size, number of modes, exact log Z (None when too large)."""
    states = env.enumerate_states()
    n_terminal = getattr(env, "n_terminal_states", None)
    if states is not None:
        n_terminal = int(env.forward_mask(states)[:, env.stop].sum())
    return {
        **task_spec(env),
        "n_terminal_states": n_terminal,
        "n_modes": env.n_modes,
        "log_Z": env.log_partition(),
    }
