"""Training configuration, method presets and validation.

A method name is a preset of composable options; any option given explicitly overrides the preset.
Resolution order: TrainConfig defaults < task-family defaults < method preset (family-specific where the
families differ) < options given explicitly.

Discrete defaults follow the official grid code of Kim et al. (ICLR 2025): batch 16, Adam lr 1e-3, log Z
lr 0.1, gradient clipping 1.0, ε-exploration 0.01, RND scale 0.01, C = 19, α = 0, local search 4 iterations
destroying half the trajectory. Diffusion defaults follow their diffusion code and Sendera et al. (2024):
batch 300, α = 0.5, ½δ² in the Teacher reward, Teacher lr 5× the Student's, Teacher samples gated at the
0.9 quantile of log R under the initial Student and fed to the replay buffer, lr ×0.1 at 40 % and 80 %,
exploration std 0.2 decaying to 0 over the first half, MALA local search every 50 iterations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from adaptive_teacher.errors import ConfigError

BUFFER_PRIORITIES = ("none", "reward", "teacher_reward")

FAMILIES = ("discrete", "diffusion")

FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "discrete": {},
    "diffusion": {
        "batch_size": 300,
        "alpha": 0.5,
        "teacher_half_square": True,
        "teacher_lr_scale": 5.0,
        "teacher_gate_quantile": 0.9,
        "teacher_into_buffer": True,
        "teacher_clip_grad_norm": 0.1,
        "lr_milestones": (0.4, 0.8),
        "clip_grad_norm": 0.0,
        "hidden": 64,
        "layers": 2,
        "n_evals": 10,
        "buffer_size": 50_000,
        "eps_decay": True,
        "ls_every": 50,
        "ls_iterations": 200,
    },
}

# Method presets whose meaning is the same in every family but whose numbers differ.
FAMILY_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "discrete": {},
    "diffusion": {
        "tb-eps": {"eps": 0.2},
        "tb-per-ls": {"buffer": "teacher_reward", "local_search": True},
        "teacher": {"teacher": True, "buffer": "teacher_reward"},
        "teacher-ls": {"teacher": True, "buffer": "teacher_reward", "local_search": True},
        "vargrad": {"objective": "vargrad"},
    },
}

PRESETS: dict[str, dict[str, Any]] = {
    "tb": {},
    "tb-eps": {"eps": 0.01},
    "gafn": {"gafn": True},
    "tb-prt": {"buffer": "reward"},
    "tb-per": {"buffer": "teacher_reward"},
    "tb-ls": {"local_search": True},
    "teacher": {"teacher": True},
    "teacher-prt": {"teacher": True, "buffer": "reward"},
    "teacher-per": {"teacher": True, "buffer": "teacher_reward"},
    "teacher-ls": {"teacher": True, "local_search": True},
    "db": {"objective": "db"},
    "teacher-db": {"teacher": True, "objective": "db"},
}

OBJECTIVES = {"discrete": ("tb", "db"), "diffusion": ("tb", "vargrad")}


def methods_for(family: str) -> list[str]:
    """Method names available for a task family."""
    if family == "diffusion":
        return ["tb", "tb-eps", "tb-per", "tb-per-ls", "teacher", "teacher-ls", "vargrad"]
    return list(PRESETS)


@dataclass
class TrainConfig:
    method: str = "teacher"
    reward_calls: int = 16_000
    iterations: int | None = None  # budget in training iterations instead of reward calls
    seed: int = 0
    batch_size: int = 16
    objective: str = "tb"
    teacher: bool = False
    buffer: str = "none"
    buffer_size: int | None = None  # default: 10 % of the terminal states
    local_search: bool = False
    ls_iterations: int = 4
    ls_back_ratio: float = 0.5
    ls_accept: str = "greedy"
    eps: float = 0.0
    learn_pb: bool = False
    gafn: bool = False
    ri_scale: float = 0.01
    C: float = 19.0
    alpha: float = 0.0
    teacher_eps: float = 1e-3
    lr: float = 1e-3
    lr_log_z: float = 0.1
    teacher_lr: float | None = None  # default: teacher_lr_scale × the Student's lr
    teacher_lr_scale: float = 1.0
    teacher_half_square: bool = False
    teacher_gate_quantile: float | None = None  # gate Teacher samples below this quantile of initial log R
    teacher_into_buffer: bool = False  # Teacher samples go to the buffer; the Student replays them
    teacher_clip_grad_norm: float | None = None  # default: clip_grad_norm
    clip_grad_norm: float = 1.0
    lr_milestones: tuple[float, ...] = ()  # fractions of the budget where all lrs are multiplied by 0.1
    eps_decay: bool = False  # exploration decays linearly to 0 over the first half of the budget
    ls_every: int = 0  # diffusion: MALA on a buffer batch every this many iterations
    hidden: int = 256
    layers: int = 2
    arch: str = "pis"  # diffusion network: "pis" (hidden 64) or "at256"
    learn_var: bool = False  # diffusion: learned per-step variance
    n_evals: int = 20
    eval_samples: int = 2000  # diffusion: samples per evaluation (10,000 at the end)
    final_eval_samples: int = 10_000
    progress: bool = True
    threads: int | None = 1  # torch threads while training (1 is fastest for these small networks); None: leave

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    family: str = "discrete"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config option(s): {', '.join(unknown)}")
        d = dict(d)
        if "lr_milestones" in d:
            d["lr_milestones"] = tuple(d["lr_milestones"])
        return cls(**d)


def resolve_config(method: str, family: str = "discrete", **overrides: Any) -> TrainConfig:
    """Family defaults, then preset ``method``, then explicit overrides (``None`` means 'not given')."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown task family {family!r}")
    available = methods_for(family)
    if method not in available:
        raise ConfigError(f"--method: unknown method {method!r}; choose one of {', '.join(available)}")
    known = {f.name for f in fields(TrainConfig)}
    for k in overrides:
        if k not in known:
            raise ConfigError(f"unknown option {k!r}")
    given = {k: v for k, v in overrides.items() if v is not None}
    preset = FAMILY_PRESETS[family].get(method, PRESETS.get(method, {}))
    return replace(TrainConfig(method=method, family=family), **{**FAMILY_DEFAULTS[family], **preset, **given})


def validate(cfg: TrainConfig, n_terminal_states: int | None = None) -> None:
    """Raise ConfigError naming the first impossible option."""
    checks: list[tuple[bool, str]] = [
        (cfg.family in FAMILIES, f"unknown task family {cfg.family!r}"),
        (
            cfg.method in methods_for(cfg.family),
            f"--method: unknown method {cfg.method!r}; choose one of {', '.join(methods_for(cfg.family))}",
        ),
        (cfg.reward_calls > 0, f"--reward-calls must be > 0 (got {cfg.reward_calls})"),
        (cfg.iterations is None or cfg.iterations > 0, f"--iterations must be > 0 (got {cfg.iterations})"),
        (cfg.batch_size >= 1, f"--batch-size must be >= 1 (got {cfg.batch_size})"),
        (
            cfg.objective in OBJECTIVES[cfg.family],
            f"--objective must be one of {', '.join(OBJECTIVES[cfg.family])} for this task (got {cfg.objective!r})",
        ),
        (
            cfg.buffer in BUFFER_PRIORITIES,
            f"--buffer must be one of {', '.join(BUFFER_PRIORITIES)} (got {cfg.buffer!r})",
        ),
        (
            cfg.buffer_size is None or cfg.buffer_size >= 1,
            f"--buffer-size must be >= 1 (got {cfg.buffer_size})",
        ),
        (cfg.ls_iterations >= 1, f"--ls-iterations must be >= 1 (got {cfg.ls_iterations})"),
        (0.0 < cfg.ls_back_ratio <= 1.0, f"--ls-back-ratio must be in (0, 1] (got {cfg.ls_back_ratio})"),
        (cfg.ls_accept in ("greedy", "mh"), f"--ls-accept must be 'greedy' or 'mh' (got {cfg.ls_accept!r})"),
        (0.0 <= cfg.eps <= 1.0, f"--eps must be in [0, 1] (got {cfg.eps})"),
        (cfg.C >= 0, f"--C must be >= 0 (got {cfg.C})"),
        (cfg.teacher_eps > 0, f"--teacher-eps must be > 0 (got {cfg.teacher_eps})"),
        (cfg.ri_scale >= 0, f"--ri-scale must be >= 0 (got {cfg.ri_scale})"),
        (cfg.lr > 0, f"--lr must be > 0 (got {cfg.lr})"),
        (cfg.lr_log_z > 0, f"--lr-log-z must be > 0 (got {cfg.lr_log_z})"),
        (cfg.teacher_lr is None or cfg.teacher_lr > 0, f"--teacher-lr must be > 0 (got {cfg.teacher_lr})"),
        (cfg.hidden >= 1 and cfg.layers >= 1, "--hidden and --layers must be >= 1"),
        (cfg.n_evals >= 1, f"--n-evals must be >= 1 (got {cfg.n_evals})"),
        (cfg.threads is None or cfg.threads >= 1, f"--threads must be >= 1 (got {cfg.threads})"),
        (not (cfg.gafn and cfg.teacher), "--gafn cannot be combined with a Teacher"),
        (not (cfg.gafn and cfg.family != "discrete"), "--gafn is implemented for discrete tasks only"),
        (cfg.teacher_lr_scale > 0, f"--teacher-lr-scale must be > 0 (got {cfg.teacher_lr_scale})"),
        (
            cfg.teacher_gate_quantile is None or 0.0 <= cfg.teacher_gate_quantile < 1.0,
            f"--teacher-gate-quantile must be in [0, 1) (got {cfg.teacher_gate_quantile})",
        ),
        (all(0.0 < m < 1.0 for m in cfg.lr_milestones), f"--lr-milestones must be in (0, 1) (got {cfg.lr_milestones})"),
        (cfg.arch in ("pis", "at256"), f"--arch must be 'pis' or 'at256' (got {cfg.arch!r})"),
        (cfg.eval_samples >= 2 and cfg.final_eval_samples >= 2, "--eval-samples must be >= 2"),
        (cfg.ls_every >= 0, f"--ls-every must be >= 0 (got {cfg.ls_every})"),
        (not (cfg.gafn and cfg.objective == "db"), "--gafn is implemented for --objective tb only"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if n_terminal_states is not None and cfg.buffer_size is not None and cfg.buffer_size > n_terminal_states:
        raise ConfigError(
            f"--buffer-size {cfg.buffer_size} is larger than the space ({n_terminal_states} terminal states)"
        )
