"""Named tasks for the command line, and the spec that rebuilds a task from a run's config.json."""

from __future__ import annotations

from typing import Any

from adaptive_teacher.envs.hypergrid import DeceptiveGrid
from adaptive_teacher.errors import ConfigError, option

TASKS = ("deceptive-grid", "gmm25", "manywell", "qm9", "seh", "tfbind8", "rna1", "rna2", "rna3")
DIFFUSION_TASKS = {"gmm25": "25gmm", "manywell": "manywell"}
STRING_TASKS = ("qm9", "seh", "tfbind8", "rna1", "rna2", "rna3")


def make_task(spec: dict[str, Any]):
    """Build a task from ``{"name": ..., **parameters}`` (parameters left out or None take their defaults)."""
    name = spec.get("name")

    def given(key: str, default: Any) -> Any:
        return default if spec.get(key) is None else spec[key]

    if name == "deceptive-grid":
        return DeceptiveGrid(int(given("dim", 2)), int(given("height", 16)))
    if name in DIFFUSION_TASKS:
        from adaptive_teacher.densities import make_density
        from adaptive_teacher.envs.diffusion import DiffusionEnv

        dim = spec.get("dim")
        if name == "gmm25" and dim not in (None, 2):
            raise ConfigError(f"{option('dim')}: gmm25 is 2-dimensional (got {dim})")
        density = make_density(DIFFUSION_TASKS[name], None if dim is None else int(dim))
        return DiffusionEnv(density, int(given("n_steps", 100)), spec.get("t_scale"))
    if name in STRING_TASKS:
        from adaptive_teacher.biochem import make_string_task

        return make_string_task(name, spec.get("beta"), bool(given("reward_floor", True)))
    raise ConfigError(f"{option('task')}: unknown task {name!r}; choose one of {', '.join(TASKS)}")


def perfect_sampler_modes(spec: dict[str, Any], max_calls: float) -> tuple[list[float], list[float], str] | None:
    """The modes-found reference curve of a built-in task (``metrics.exact.exact_sampler_curve``): None where
    its states cannot be enumerated, it has no modes, or it cannot be built here (its data is missing)."""
    from adaptive_teacher.errors import AdaptiveTeacherError
    from adaptive_teacher.metrics.exact import exact_sampler_curve

    if spec.get("name") in DIFFUSION_TASKS:
        return None
    try:
        return exact_sampler_curve(make_task(spec), max_calls)
    except AdaptiveTeacherError:
        return None


def task_family(env) -> str:
    """The name of the task family ``env`` declares (an environment that declares none is an error)."""
    from adaptive_teacher.families import family_of

    return family_of(env).name


def task_spec(env) -> dict[str, Any]:
    """The JSON spec of a task (``name`` plus the parameters that rebuild it)."""
    if task_family(env) == "diffusion":
        name = next((k for k, v in DIFFUSION_TASKS.items() if v == env.density.name), env.density.name)
        return {"name": name, "dim": env.dim, "n_steps": env.n_steps, "t_scale": env.t_scale}
    if hasattr(env, "task_spec"):
        return env.task_spec()
    spec: dict[str, Any] = {"name": getattr(env, "name", type(env).__name__)}
    for attr in ("dim", "height"):
        if hasattr(env, attr):
            spec[attr] = getattr(env, attr)
    return spec


def default_budget(env) -> dict[str, int]:
    """The papers' budgets. Grid (Kim et al.'s equal-budget rule, batch 16): 4000 steps for d=2 (8000 when
    H > 256), for d=4 4000 when H <= 16 else 16000, ×1.5 without local search; replay steps are free, so
    every method gets the same reward calls (96,000 for d=2,H=32 and d=4,H=16; 384,000 for d=4,H=32).
    Diffusion: 10,000 iterations (Kim et al.'s diffusion code). Biochemical strings (Kim et al.'s discovery
    code): 1,000 rounds on QM9, 2,000 on the others, 32 reward calls each (32,000 / 64,000)."""
    if task_family(env) == "diffusion":
        return {"iterations": 10_000}
    if task_family(env) == "strings":
        from adaptive_teacher.biochem import SAMPLES_PER_ROUND

        rounds = env.info.rounds if hasattr(env, "info") else 2000  # a user's SequenceEnv: the others' budget
        return {"reward_calls": rounds * SAMPLES_PER_ROUND}
    dim, height = getattr(env, "dim", 2), getattr(env, "height", 16)
    if dim == 2:
        steps = 4000 if height <= 256 else 8000
    elif dim == 4:
        steps = 4000 if height <= 16 else 16000
    else:
        steps = 4000
    return {"reward_calls": int(steps * 1.5) * 16}


def task_info(env) -> dict[str, Any]:
    """What ``adaptive-teacher info`` prints: size, modes and the exact log Z (None when too large)."""
    if task_family(env) == "diffusion":
        log_z = env.density.log_Z
        return {**task_spec(env), "log_Z": None if log_z is None else float(log_z)}
    n_terminal = getattr(env, "n_terminal_states", None)
    if not hasattr(env, "info"):  # the string tasks know their size without enumerating
        states = env.enumerate_states()
        if states is not None:
            n_terminal = int(env.forward_mask(states)[:, env.stop].sum())
    return {
        **task_spec(env),
        "n_terminal_states": n_terminal,
        "n_modes": env.n_modes,
        "log_Z": env.log_partition(),
    }
