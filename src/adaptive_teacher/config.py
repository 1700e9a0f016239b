"""Training configuration, method presets and validation.

A method name is a preset of composable options; any option given explicitly overrides the preset.
Defaults follow the official grid code of Kim et al. (ICLR 2025): batch 16, Adam lr 1e-3, log Z lr 0.1,
gradient clipping 1.0, ε-exploration 0.01, RND scale 0.01, C = 19, α = 0, local search 4 iterations
destroying half the trajectory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from adaptive_teacher.errors import ConfigError

BUFFER_PRIORITIES = ("none", "reward", "teacher_reward")

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


@dataclass
class TrainConfig:
    method: str = "teacher"
    reward_calls: int = 16_000
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
    teacher_lr: float | None = None  # default: the Student's
    clip_grad_norm: float = 1.0
    hidden: int = 256
    layers: int = 2
    n_evals: int = 20
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config option(s): {', '.join(unknown)}")
        return cls(**d)


def resolve_config(method: str, **overrides: Any) -> TrainConfig:
    """Preset ``method`` plus explicit overrides (``None`` means 'not given')."""
    if method not in PRESETS:
        raise ConfigError(f"--method: unknown method {method!r}; choose one of {', '.join(PRESETS)}")
    known = {f.name for f in fields(TrainConfig)}
    for k in overrides:
        if k not in known:
            raise ConfigError(f"unknown option {k!r}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(TrainConfig(method=method), **{**PRESETS[method], **given})


def validate(cfg: TrainConfig, n_terminal_states: int | None = None) -> None:
    """Raise ConfigError naming the first impossible option."""
    checks: list[tuple[bool, str]] = [
        (
            cfg.method in PRESETS,
            f"--method: unknown method {cfg.method!r}; choose one of {', '.join(PRESETS)}",
        ),
        (cfg.reward_calls > 0, f"--reward-calls must be > 0 (got {cfg.reward_calls})"),
        (cfg.batch_size >= 1, f"--batch-size must be >= 1 (got {cfg.batch_size})"),
        (cfg.objective in ("tb", "db"), f"--objective must be 'tb' or 'db' (got {cfg.objective!r})"),
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
        (not (cfg.gafn and cfg.teacher), "--gafn cannot be combined with a Teacher"),
        (not (cfg.gafn and cfg.objective == "db"), "--gafn is implemented for --objective tb only"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if n_terminal_states is not None and cfg.buffer_size is not None and cfg.buffer_size > n_terminal_states:
        raise ConfigError(
            f"--buffer-size {cfg.buffer_size} is larger than the space ({n_terminal_states} terminal states)"
        )
