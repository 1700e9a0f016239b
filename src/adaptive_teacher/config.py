"""Training configuration, method presets and validation.

A method name is a preset of composable options; any option given explicitly overrides the preset.
Resolution order: TrainConfig defaults < task-family defaults < the family's method preset < options given
explicitly. The family defaults and presets live in families.py.

Discrete defaults follow the official grid code of Kim et al. (ICLR 2025): batch 16, Adam lr 1e-3, log Z
lr 0.1, gradient clipping 1.0, ε-exploration 0.01, RND scale 0.01, C = 19, α = 0, local search 4 iterations
destroying half the trajectory. Diffusion defaults follow their diffusion code and Sendera et al. (2024):
batch 300, α = 0.5, ½δ² in the Teacher reward, Teacher lr 5× the Student's, Teacher samples gated at the
0.9 quantile of log R under the initial Student and fed to the replay buffer, lr ×0.1 at 40 % and 80 %,
exploration std 0.2 decaying to 0 over the first half, MALA local search every 50 iterations.
"""

from __future__ import annotations

import math
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any, get_type_hints

from adaptive_teacher.device import resolve_device
from adaptive_teacher.errors import ConfigError, option
from adaptive_teacher.families import REGISTRY, get_family
from adaptive_teacher.tracking import parse_log

BUFFER_PRIORITIES = ("none", "reward", "teacher_reward")

FAMILIES = tuple(REGISTRY)
DAG = ("discrete", "strings")  # the families whose tasks are DAGs of discrete states
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {name: f.defaults for name, f in REGISTRY.items()}
PRESETS: dict[str, dict[str, Any]] = REGISTRY["discrete"].presets  # the discrete methods (the largest list)
OBJECTIVES = {name: f.objectives for name, f in REGISTRY.items()}


def methods_for(family: str) -> list[str]:
    """Method names available for a task family (the keys of its presets)."""
    return get_family(family).methods


def _opt(
    default: Any,
    help: str,
    family: str | tuple[str, ...] | None = None,
    cli: bool = True,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A config field: its default, its help text (the command line's), the families it applies to (None:
    all) and, for strings, the allowed values."""
    return field(default=default, metadata={"help": help, "family": family, "cli": cli, "choices": choices})


@dataclass
class TrainConfig:
    """Every option of a run, defined once: the command line (``--name-with-dashes``) is generated from these
    fields and their help texts; ``family`` marks the options that only one task family uses."""

    method: str = _opt("teacher", "method preset", cli=False)
    reward_calls: int = _opt(16_000, "budget in reward calls (default: the paper's budget for the task)")
    iterations: int | None = _opt(None, "budget in training iterations instead of reward calls")
    seed: int = _opt(0, "random seed", cli=False)
    batch_size: int = _opt(16, "trajectories per training step")
    objective: str = _opt(
        "tb", "training objective: tb, db (discrete) or vargrad (diffusion)", choices=("tb", "db", "vargrad")
    )
    teacher: bool = _opt(False, "train an adaptive Teacher next to the Student")
    buffer: str = _opt(
        "none", "replay buffer priority: reward (PRT) or teacher_reward (PER)", choices=BUFFER_PRIORITIES
    )
    per_refresh: bool = _opt(
        False, "PER: refresh a replayed x's priority after training on it (the official code keeps its first one)"
    )
    buffer_size: int | None = _opt(None, "replay buffer capacity (discrete default: 10% of the terminal states)")
    buffer_sampling: str = _opt(
        "rank",
        "replay draws: rank-prioritised (Tripp et al.), or top_decile: half uniformly from the top 10% by priority, "
        "half from the rest (Shen et al.'s PRT)",
        choices=("rank", "top_decile"),
    )
    buffer_refresh_age: bool = _opt(
        True, "an x seen again counts as newly inserted for the buffer's FIFO eviction (strings code: no)"
    )
    local_search: bool = _opt(False, "local search: back-and-forth (discrete, LS-GFN) or MALA (diffusion)")
    ls_iterations: int = _opt(4, "local-search iterations (MALA steps for diffusion)")
    ls_back_ratio: float = _opt(0.5, "fraction of the trajectory that back-and-forth destroys", DAG)
    ls_back_steps: int | None = _opt(
        None, "back-and-forth undoes this many backward steps, stop included (instead of ls_back_ratio)", DAG
    )
    ls_accept: str = _opt(
        "greedy",
        "back-and-forth acceptance: greedy, mh (Metropolis-Hastings) or barker (probability σ(log A), the "
        "strings code)",
        DAG,
        choices=("greedy", "mh", "barker"),
    )
    ls_style: str = _opt(
        "refine",
        "refine: train on the refined batch (grid code); chain: batch_size/(ls_iterations+1) seeds and every "
        "proposal form the batch (strings code)",
        DAG,
        choices=("refine", "chain"),
    )
    ls_replaces_teacher: bool = _opt(
        True,
        "Teacher methods with chain local search: every online batch is the Student's local search and the "
        "Teacher never samples, as in the official strings code (default: yes; the teacher-ls preset: no, the "
        "Teacher keeps its rounds)",
        DAG,
    )
    eps: float = _opt(0.0, "exploration: ε-uniform actions (discrete) or extra noise std (diffusion)")
    explore_teacher: bool = _opt(False, "the Teacher's online samples use the Student's ε-exploration too")
    guide: str = _opt(
        "none",
        "guided TB (Shen et al. 2023): replayed x take the substructure guide's trajectories",
        "strings",
        choices=("none", "substructure"),
    )
    guide_mix: float = _opt(0.5, "guided TB target: w·Σlog P_B + (1 − w)·log p_guide (+ log R)", "strings")
    guide_temperature: float = _opt(1.0, "guided TB: the guide picks a child ∝ max(score, 1e-5)^τ", "strings")
    guide_offline: str = _opt(
        "resample",
        "guided TB, replayed x: the guide samples their trajectories (resample; Shen et al.'s QM9, sEH) or scores "
        "trajectories of the learned P_B (score_back; their TFBind8, RNA)",
        "strings",
        choices=("resample", "score_back"),
    )
    learn_pb: bool = _opt(False, "learn the backward policy", DAG)
    gafn: bool = _opt(False, "GAFN: RND intrinsic rewards with augmented flows", DAG)
    ri_scale: float = _opt(0.01, "GAFN intrinsic-reward scale", DAG)
    C: float = _opt(19.0, "Teacher reward weight of under-sampled x (δ > 0)")
    alpha: float = _opt(0.0, "Teacher reward exponent of R (R_T ∝ R^alpha)")
    teacher_eps: float = _opt(1e-3, "ε inside the Teacher reward log(1 + ε + w·δ²)")
    lr: float = _opt(1e-3, "Adam learning rate of the networks")
    lr_log_z: float = _opt(0.1, "learning rate of log Z")
    log_z_init: float = _opt(0.0, "initial log Z of both models")
    log_z_min: float | None = _opt(None, "log Z is clamped from below at this value after every step")
    loss_clamp: float | None = _opt(
        None,
        "clamp each squared TB residual at this value, in the TB losses and the Teacher reward's δ² (not DB, not "
        "GAFN's augmented TB: as the official code)",
    )
    teacher_lr: float | None = _opt(None, "Teacher learning rate (default: teacher_lr_scale × lr)")
    teacher_lr_scale: float = _opt(1.0, "Teacher lr as a multiple of the Student's")
    teacher_half_square: bool = _opt(False, "Teacher reward uses ½δ² (the paper's diffusion code)")
    teacher_gate_quantile: float | None = _opt(
        None, "the Teacher and buffer ignore samples below this quantile of log R under the initial Student"
    )
    teacher_into_buffer: bool = _opt(False, "Teacher samples go to the buffer; the Student replays them")
    teacher_clip_grad_norm: float | None = _opt(None, "Teacher gradient clipping (default: clip_grad_norm)")
    teacher_clip_scope: str = _opt(
        "all", "what Teacher gradient clipping covers", "diffusion", choices=("all", "time_encoder")
    )
    teacher_on_backward: bool = _opt(False, "the Teacher trains on fresh backward trajectories of the batch's x")
    clip_grad_norm: float = _opt(1.0, "gradient-norm clipping (0: none)")
    clip_log_z: bool = _opt(True, "gradient clipping covers log Z too (the strings code clips the policy only)")
    weight_decay: float = _opt(0.0, "Adam weight decay of both optimisers, log Z included")
    protocol: str = _opt("default", "a paper's settings for this family: default, or kim2025 (diffusion)")
    teacher_round_every: int = _opt(
        2, "Teacher methods with a buffer: one online batch in this many is the Teacher's (strings code: 3)", DAG
    )
    lr_milestones: tuple[float, ...] = _opt((), "comma-separated budget fractions where every lr is ×0.1")
    eps_decay: bool = _opt(False, "exploration decays linearly to 0 over the first half of the budget")
    ls_every: int = _opt(0, "MALA local search on a buffer batch every this many iterations", "diffusion")
    policy: str = _opt("mlp", "policy network: mlp, or ssr (relative edge flow; strings)", DAG, choices=("mlp", "ssr"))
    hidden: int = _opt(256, "hidden width of the policy network")
    layers: int = _opt(2, "hidden layers of the policy MLP", DAG)
    arch: str = _opt("pis", "drift network: PIS (hidden 64) or the 256-wide one", "diffusion", choices=("pis", "at256"))
    learn_var: bool = _opt(False, "learned per-step variance", "diffusion")
    n_evals: int = _opt(20, "evaluations (metrics lines) per run")
    exact_every: int = _opt(1, "exact metrics (L1, mode mass) every this many evaluations and at the end", "strings")
    eval_samples: int = _opt(2000, "samples per evaluation", ("diffusion", "strings"))
    final_eval_samples: int = _opt(10_000, "samples of the final evaluation", "diffusion")
    progress: bool = _opt(True, "show a progress bar", cli=False)
    threads: int | None = _opt(1, "torch threads while training (1 is fastest for these small networks)")
    device: str = _opt("cpu", "where every tensor of the run lives: cpu, or cuda (cuda:N: one GPU of several)")
    log: str = _opt(
        "none",
        "mirror the metrics to experiment trackers: tensorboard, wandb, or both comma-separated (tensorboard,wandb); "
        "the run directory stays the record",
    )
    family: str = _opt("discrete", "task family", cli=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config option(s): {', '.join(unknown)}")
        d = dict(d)
        if isinstance(d.get("lr_milestones"), list):
            d["lr_milestones"] = tuple(d["lr_milestones"])
        return cls(**d)


# Options that cannot change a run whose config has ``field == value``: matching a finished run (compare,
# sweep) and grouping runs (report) treat them as at their defaults there.
INERT_WHEN: dict[str, tuple[str, Any]] = {
    "guide_mix": ("guide", "none"),
    "guide_temperature": ("guide", "none"),
    "guide_offline": ("guide", "none"),
    "ls_replaces_teacher": ("ls_style", "refine"),
}


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config as compared with another's: the fields added since it was written at their defaults (as
    ``TrainConfig.from_dict``, and so ``train --resume``, reads it; new fields are added with the default that
    keeps the earlier behaviour, which benchmarks/behaviour_check.py checks) and the INERT_WHEN options at
    their defaults. Two runs with equal comparable configs (and tasks) give the same results."""
    defaults = TrainConfig().to_dict()
    full = {**defaults, **config}
    for name, (other, value) in INERT_WHEN.items():
        if full.get(other) == value:
            full[name] = defaults[name]
    return full


def option_fields() -> list[Field]:
    """The TrainConfig fields that are command-line options."""
    return [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]


def family_default(name: str, family: str) -> Any:
    """The default of option ``name`` for a task family (before any method preset)."""
    if name in FAMILY_DEFAULTS.get(family, {}):
        return FAMILY_DEFAULTS[family][name]
    f = next(f for f in fields(TrainConfig) if f.name == name)
    return f.default


def resolve_config(
    method: str, family: str = "discrete", task: dict[str, Any] | None = None, **overrides: Any
) -> TrainConfig:
    """Family defaults, then the task's own (``task``: its spec, e.g. the SSR width of a string task), then the
    protocol, preset ``method`` and explicit overrides (``None`` means 'not given')."""
    available = methods_for(family)
    if method not in available:
        raise ConfigError(f"{option('method')}: unknown method {method!r}; choose one of {', '.join(available)}")
    known = {f.name for f in fields(TrainConfig)}
    for k in overrides:
        if k not in known:
            raise ConfigError(f"unknown option {k!r}; the options are the fields of TrainConfig")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "reward_calls" in given and "iterations" in given:
        raise ConfigError(
            f"give one budget: {option('reward_calls')} or {option('iterations')}, not both "
            f"(got {given['reward_calls']} reward calls and {given['iterations']} iterations)"
        )
    fam = get_family(family)
    protocol = given.get("protocol", "default")
    if protocol not in fam.protocols:
        raise ConfigError(
            f"{option('protocol')} must be one of {', '.join(fam.protocols)} for {family} tasks (got {protocol!r})"
        )
    if "ls_back_ratio" in given and "ls_back_steps" in given:
        raise ConfigError(
            f"give one depth of the back-and-forth local search: {option('ls_back_ratio')} or "
            f"{option('ls_back_steps')}, not both"
        )
    per_task = fam.task_defaults(task) if task is not None and fam.task_defaults is not None else {}
    settings = {**fam.defaults, **per_task, **fam.protocols[protocol], **fam.presets[method], **given}
    if "ls_back_ratio" in given:  # the ratio a user asks for replaces a family's or task's k
        settings["ls_back_steps"] = None
    return replace(TrainConfig(method=method, family=family), **settings)


def _check_types(cfg: TrainConfig) -> None:
    """Each field has its declared type (an int where an int is expected, a finite float, ...)."""
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        value, hint = getattr(cfg, f.name), hints[f.name]
        if value is None:
            if type(None) in getattr(hint, "__args__", ()):
                continue
            raise ConfigError(f"{option(f.name)} must be given (got None)")
        args = getattr(hint, "__args__", ())
        if getattr(hint, "__origin__", None) is tuple:
            origin = tuple
        else:
            origin = next((a for a in args if a is not type(None)), hint) if args else hint
        if origin is bool:
            ok = isinstance(value, bool)
        elif origin is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif origin is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        elif origin is tuple:
            ok = isinstance(value, tuple | list) and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
            )
        else:
            ok = isinstance(value, origin)
        if not ok:
            kind = {bool: "True or False", int: "an integer", float: "a finite number", str: "a string"}.get(
                origin, "a list of finite numbers"
            )
            raise ConfigError(f"{option(f.name)} must be {kind} (got {value!r})")


def _check_family(cfg: TrainConfig) -> None:
    """Options of the other task family would do nothing: they must keep their defaults."""
    for f in fields(TrainConfig):
        only = f.metadata.get("family")
        allowed = (only,) if isinstance(only, str) else only
        if allowed is not None and cfg.family not in allowed and getattr(cfg, f.name) != f.default:
            raise ConfigError(
                f"{option(f.name)} applies to {' and '.join(allowed)} tasks only; this task is {cfg.family} "
                "(drop the option)"
            )


MAX_SEED = 2**63 - 1
LAYERS_DEFAULT = next(f.default for f in fields(TrainConfig) if f.name == "layers")


def validate(cfg: TrainConfig, n_terminal_states: int | None = None) -> None:
    """Raise ConfigError naming the first impossible option (in the caller's vocabulary, see errors.option)."""
    o = option
    objectives = get_family(cfg.family).objectives
    methods = methods_for(cfg.family)
    if cfg.method not in methods:
        raise ConfigError(f"{o('method')}: unknown method {cfg.method!r}; choose one of {', '.join(methods)}")
    _check_types(cfg)
    _check_family(cfg)
    checks: list[tuple[bool, str]] = [
        (0 <= cfg.seed <= MAX_SEED, f"{o('seed')} must be in [0, 2**63 - 1] (got {cfg.seed})"),
        (cfg.reward_calls > 0, f"{o('reward_calls')} must be > 0 (got {cfg.reward_calls})"),
        (cfg.iterations is None or cfg.iterations > 0, f"{o('iterations')} must be > 0 (got {cfg.iterations})"),
        (cfg.batch_size >= 1, f"{o('batch_size')} must be >= 1 (got {cfg.batch_size})"),
        (
            cfg.iterations is not None or cfg.batch_size <= cfg.reward_calls,
            f"{o('batch_size')} {cfg.batch_size} is larger than the budget of {cfg.reward_calls} reward calls "
            f"(one step would spend it); lower {o('batch_size')} or raise {o('reward_calls')}",
        ),
        (
            cfg.objective in objectives,
            f"{o('objective')} must be one of {', '.join(objectives)} for {cfg.family} tasks (got {cfg.objective!r})",
        ),
        (
            cfg.buffer in BUFFER_PRIORITIES,
            f"{o('buffer')} must be one of {', '.join(BUFFER_PRIORITIES)} (got {cfg.buffer!r})",
        ),
        (cfg.buffer_size is None or cfg.buffer_size >= 1, f"{o('buffer_size')} must be >= 1 (got {cfg.buffer_size})"),
        (cfg.ls_iterations >= 1, f"{o('ls_iterations')} must be >= 1 (got {cfg.ls_iterations})"),
        (0.0 < cfg.ls_back_ratio <= 1.0, f"{o('ls_back_ratio')} must be in (0, 1] (got {cfg.ls_back_ratio})"),
        (
            cfg.ls_accept in ("greedy", "mh", "barker"),
            f"{o('ls_accept')} must be 'greedy', 'mh' or 'barker' (got {cfg.ls_accept!r})",
        ),
        (cfg.ls_back_steps is None or cfg.ls_back_steps >= 1, f"{o('ls_back_steps')} must be >= 1"),
        (
            not cfg.local_search or cfg.ls_style != "chain" or cfg.batch_size % (cfg.ls_iterations + 1) == 0,
            f"{o('ls_style')} chain needs {o('batch_size')} divisible by {o('ls_iterations')} + 1 "
            f"(got {cfg.batch_size} and {cfg.ls_iterations})",
        ),
        (cfg.teacher_round_every >= 2, f"{o('teacher_round_every')} must be >= 2 (got {cfg.teacher_round_every})"),
        (cfg.exact_every >= 1, f"{o('exact_every')} must be >= 1 (got {cfg.exact_every})"),
        (0.0 <= cfg.guide_mix <= 1.0, f"{o('guide_mix')} must be in [0, 1] (got {cfg.guide_mix})"),
        (cfg.guide_temperature > 0, f"{o('guide_temperature')} must be > 0 (got {cfg.guide_temperature})"),
        (
            cfg.guide == "none" or (cfg.learn_pb and not cfg.teacher and cfg.buffer != "none"),
            f"{o('guide')} substructure needs {o('learn_pb')} (the guide trains P_B), a buffer, and no Teacher",
        ),
        (cfg.loss_clamp is None or cfg.loss_clamp > 0, f"{o('loss_clamp')} must be > 0 (got {cfg.loss_clamp})"),
        (0.0 <= cfg.eps <= 1.0, f"{o('eps')} must be in [0, 1] (got {cfg.eps})"),
        (cfg.C >= 0, f"{o('C')} must be >= 0 (got {cfg.C})"),
        (cfg.alpha >= 0, f"{o('alpha')} must be >= 0 (got {cfg.alpha})"),
        (cfg.teacher_eps > 0, f"{o('teacher_eps')} must be > 0 (got {cfg.teacher_eps})"),
        (cfg.ri_scale >= 0, f"{o('ri_scale')} must be >= 0 (got {cfg.ri_scale})"),
        (cfg.lr > 0, f"{o('lr')} must be > 0 (got {cfg.lr})"),
        (cfg.lr_log_z > 0, f"{o('lr_log_z')} must be > 0 (got {cfg.lr_log_z})"),
        (cfg.teacher_lr is None or cfg.teacher_lr > 0, f"{o('teacher_lr')} must be > 0 (got {cfg.teacher_lr})"),
        (cfg.hidden >= 1, f"{o('hidden')} must be >= 1 (got {cfg.hidden})"),
        (cfg.layers >= 1, f"{o('layers')} must be >= 1 (got {cfg.layers})"),
        (
            cfg.policy != "ssr" or cfg.layers == LAYERS_DEFAULT,
            f"{o('layers')} sets the depth of the MLP policy; the SSR policy has one hidden layer in its encoder "
            f"and one in its scorer (Kim et al.'s settings): drop {o('layers')} or use {o('policy')} mlp",
        ),
        (cfg.n_evals >= 1, f"{o('n_evals')} must be >= 1 (got {cfg.n_evals})"),
        (cfg.threads is None or cfg.threads >= 1, f"{o('threads')} must be >= 1 (got {cfg.threads})"),
        (not (cfg.gafn and cfg.teacher), f"{o('gafn')} cannot be combined with a Teacher"),
        (cfg.teacher_lr_scale > 0, f"{o('teacher_lr_scale')} must be > 0 (got {cfg.teacher_lr_scale})"),
        (
            cfg.teacher_gate_quantile is None or 0.0 <= cfg.teacher_gate_quantile < 1.0,
            f"{o('teacher_gate_quantile')} must be in [0, 1) (got {cfg.teacher_gate_quantile})",
        ),
        (
            cfg.teacher_clip_grad_norm is None or cfg.teacher_clip_grad_norm >= 0,
            f"{o('teacher_clip_grad_norm')} must be >= 0 (got {cfg.teacher_clip_grad_norm})",
        ),
        (cfg.clip_grad_norm >= 0, f"{o('clip_grad_norm')} must be >= 0 (got {cfg.clip_grad_norm})"),
        (cfg.weight_decay >= 0, f"{o('weight_decay')} must be >= 0 (got {cfg.weight_decay})"),
        (
            cfg.protocol in get_family(cfg.family).protocols,
            f"{o('protocol')} must be one of {', '.join(get_family(cfg.family).protocols)} (got {cfg.protocol!r})",
        ),
        (
            cfg.teacher_clip_scope in ("all", "time_encoder"),
            f"{o('teacher_clip_scope')} must be 'all' or 'time_encoder' (got {cfg.teacher_clip_scope!r})",
        ),
        (
            all(0.0 < m < 1.0 for m in cfg.lr_milestones),
            f"{o('lr_milestones')} must be in (0, 1) (got {cfg.lr_milestones})",
        ),
        (cfg.arch in ("pis", "at256"), f"{o('arch')} must be 'pis' or 'at256' (got {cfg.arch!r})"),
        (cfg.eval_samples >= 2, f"{o('eval_samples')} must be >= 2 (got {cfg.eval_samples})"),
        (cfg.final_eval_samples >= 2, f"{o('final_eval_samples')} must be >= 2 (got {cfg.final_eval_samples})"),
        (cfg.ls_every >= 0, f"{o('ls_every')} must be >= 0 (got {cfg.ls_every})"),
        (not (cfg.gafn and cfg.objective == "db"), f"{o('gafn')} is implemented for {o('objective')} tb only"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    parse_log(cfg.log)  # an unknown tracker is a ConfigError naming the allowed ones
    resolve_device(cfg.device)  # a name it does not know, or cuda without CUDA, is a one-line ConfigError
    if n_terminal_states is not None and cfg.buffer_size is not None and cfg.buffer_size > n_terminal_states:
        raise ConfigError(
            f"{o('buffer_size')} {cfg.buffer_size} is larger than the space ({n_terminal_states} terminal states)"
        )
