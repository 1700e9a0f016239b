"""Task families as objects: what differs between the grid-like DAG tasks and the diffusion samplers.

A family bundles its config defaults (over TrainConfig's), its method presets (the list of methods is
derived from them), the objectives it supports, its local-search machinery, the policy and evaluator
factories, the result-table columns, the progress-bar fields and the end-of-run plots. Environments declare
their family by name (``family = "discrete"`` on DiscreteEnv, ``"diffusion"`` on DiffusionEnv); an object
that declares none is refused with a message that says what to add.

Discrete defaults follow the official grid code of Kim et al. (ICLR 2025); diffusion defaults follow their
diffusion code and Sendera et al. (2024) (see config.py and docs/diffusion.md for every constant).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptive_teacher.errors import ConfigError, EnvironmentCheckError


def _discrete_policy(env, cfg):
    from adaptive_teacher.device import resolve_device
    from adaptive_teacher.policies import DiscretePolicy

    if cfg.policy == "ssr":
        from adaptive_teacher.ssr import make_ssr_policy

        return make_ssr_policy(env, cfg)
    return DiscretePolicy(
        env.n_features,
        env.n_actions,
        env.n_backward_actions,
        cfg.hidden,
        cfg.layers,
        learn_pb=cfg.learn_pb,
        flow_head=cfg.objective == "db" or cfg.gafn,  # GAFN's edge terms use the learned state flow F(s)
        device=resolve_device(cfg.device),
    )


def _diffusion_policy(env, cfg):
    from adaptive_teacher.device import resolve_device
    from adaptive_teacher.diffusion_policies import DiffusionPolicy

    return DiffusionPolicy(
        env.dim,
        t_scale=env.t_scale,
        arch=cfg.arch,
        hidden=cfg.hidden,
        learn_var=cfg.learn_var,
        device=resolve_device(cfg.device),
    )


def _discrete_evaluator(env, cfg):
    from adaptive_teacher.metrics.evaluators import DiscreteEvaluator

    return DiscreteEvaluator(env)


def _string_evaluator(env, cfg):
    from adaptive_teacher.metrics.strings import StringEvaluator

    return StringEvaluator(env, cfg)


def _string_plots(out: Path, history: list[dict], evaluator, env, title: str) -> None:
    from adaptive_teacher.plots import plot_string_run

    plot_string_run(out, history, evaluator, env, title=title)


def _string_task_defaults(task: dict[str, Any]) -> dict[str, Any]:
    from adaptive_teacher.biochem import task_config_defaults

    return task_config_defaults(task.get("name"))


def _diffusion_evaluator(env, cfg):
    from adaptive_teacher.metrics.evaluators import DiffusionEvaluator

    return DiffusionEvaluator(env, cfg.eval_samples, cfg.final_eval_samples, cfg.seed)


def _discrete_plots(out: Path, history: list[dict], evaluator, env, title: str) -> None:
    from adaptive_teacher.plots import plot_discrete_run

    plot_discrete_run(out, history, title=title)


def _diffusion_plots(out: Path, history: list[dict], evaluator, env, title: str) -> None:
    from adaptive_teacher.plots import plot_diffusion_run

    plot_diffusion_run(out, history, evaluator.snapshots, env, title=title)


@dataclass(frozen=True)
class TaskFamily:
    """Everything the library does differently for one kind of task (see the module docstring)."""

    name: str
    defaults: dict[str, Any]  # config values over TrainConfig's defaults
    presets: dict[str, dict[str, Any]]  # method name -> the options it sets; the methods of this family
    objectives: tuple[str, ...]
    local_search: str  # "back_and_forth" (refines a scheduled batch) or "mala" (feeds the replay buffer)
    make_policy: Callable[[Any, Any], Any]
    make_evaluator: Callable[[Any, Any], Any]
    plot_run: Callable[[Path, list[dict], Any, Any, str], None]
    columns: list[tuple[str, str]]  # (metric key, title) of the results table
    progress_keys: tuple[str, ...]  # metrics shown beside the progress bar
    summary_metric: str  # the metric compare plots against the budget
    tasks: tuple[str, ...] = field(default=())  # built-in task names of this family
    # Named settings of a paper's protocol (config values over the defaults) and the task parameters they fix.
    protocols: dict[str, dict[str, Any]] = field(default_factory=lambda: {"default": {}})
    protocol_tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Config values a task sets for itself (from its spec), over the family defaults, under protocol and preset.
    task_defaults: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    top_k: int = 0  # track the top-k distinct x by reward seen (reported as top{k}_r, top{k}_diversity)

    @property
    def methods(self) -> list[str]:
        return list(self.presets)


DISCRETE = TaskFamily(
    name="discrete",
    defaults={},
    presets={
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
    },
    objectives=("tb", "db"),
    local_search="back_and_forth",
    make_policy=_discrete_policy,
    make_evaluator=_discrete_evaluator,
    plot_run=_discrete_plots,
    columns=[
        ("modes_found", "modes found"),
        ("l1", "L1 (Σ)"),
        ("l1_mean", "L1 (mean)"),
        ("log_Z_error", "abs(log Z error)"),
    ],
    progress_keys=("modes_found", "l1"),
    summary_metric="modes_found",
    tasks=("deceptive-grid",),
)

DIFFUSION = TaskFamily(
    name="diffusion",
    defaults={
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
        "n_evals": 10,
        "buffer_size": 50_000,
        "eps_decay": True,
        "ls_every": 50,
        "ls_iterations": 200,
        # Kim et al.'s diffusion code (both optimisers, log Z included; the Teacher's time encoder only is
        # clipped; the Teacher trains on fresh bridge trajectories of the batch's x).
        "weight_decay": 1e-7,
        "teacher_clip_scope": "time_encoder",
        "teacher_on_backward": True,
    },
    presets={
        "tb": {},
        "tb-eps": {"eps": 0.2},
        "tb-per": {"buffer": "teacher_reward"},
        "tb-per-ls": {"buffer": "teacher_reward", "local_search": True},
        "teacher": {"teacher": True, "buffer": "teacher_reward"},
        "teacher-ls": {"teacher": True, "buffer": "teacher_reward", "local_search": True},
        "vargrad": {"objective": "vargrad"},
    },
    objectives=("tb", "vargrad"),
    local_search="mala",
    make_policy=_diffusion_policy,
    make_evaluator=_diffusion_evaluator,
    plot_run=_diffusion_plots,
    columns=[
        ("delta_log_Z_elbo", "Δlog Z (ELBO)"),
        ("delta_log_Z_is", "Δlog Z (IS; Kim et al.'s Δlog Z)"),
        ("eubo", "EUBO"),
        ("w2", "W2"),
        ("elbo", "ELBO"),
    ],
    progress_keys=("elbo", "eubo"),
    summary_metric="eubo",
    tasks=("gmm25", "manywell"),
    protocols={
        # Sendera et al. (2024): batch 300, PIS-64, σ² = 5 on 25GMM and 1 on Manywell (the defaults above).
        "default": {},
        # Kim et al.'s diffusion code (ICLR 2025): batch 500, the 256-wide network, σ² = 1 on both targets, no
        # exploration, lr ×0.1 at 40 % and 80 %, evaluation every 1 % of the budget (every 100 of the default
        # 10,000 iterations).
        "kim2025": {"batch_size": 500, "arch": "at256", "hidden": 256, "n_evals": 100},
    },
    protocol_tasks={"kim2025": {"t_scale": 1.0}},
)

STRINGS = TaskFamily(
    name="strings",
    # Kim et al.'s discovery code (settings.yaml, trainers.py, basegfn.py, teacher.py): every round one online
    # batch of 32 (Student with ε = 0.01 over unique children; one round in three the Teacher, with the same ε)
    # and one replayed batch of 32 from the last 1,000 distinct x (half from the top 10 % by priority, half
    # from the rest), both models trained on both; squared residuals clamped at 5,000; log Z starts at 5 and
    # stays >= 0; lr 1e-4 (Teacher 5e-4), log Z lr 1e-2, clipping 10 (not log Z); PER refreshes replayed
    # priorities; local search: 4 seeds × 7 back-and-forth rounds of k = 3 moves, σ(log A) acceptance, all 32
    # x trained on.
    defaults={
        "batch_size": 32,
        "lr": 1e-4,
        "lr_log_z": 1e-2,
        "teacher_lr_scale": 5.0,
        "clip_grad_norm": 10.0,
        "clip_log_z": False,
        "eps": 0.01,
        "explore_teacher": True,
        "alpha": 0.5,
        "log_z_init": 5.0,
        "log_z_min": 0.0,
        "loss_clamp": 5000.0,
        "buffer": "reward",
        "buffer_size": 1000,
        "buffer_sampling": "top_decile",
        "buffer_refresh_age": False,
        "per_refresh": True,
        "teacher_round_every": 3,
        "policy": "ssr",
        "hidden": 128,
        "eval_samples": 2048,
        "n_evals": 40,
        "ls_iterations": 7,
        "ls_back_steps": 3,
        "ls_accept": "barker",
        "ls_style": "chain",
    },
    presets={
        "tb": {},
        "tb-eps": {"eps": 0.05},
        "tb-per": {"buffer": "teacher_reward"},
        "gafn": {"gafn": True},
        "tb-ls": {"local_search": True},
        "teacher": {"teacher": True},
        "teacher-per": {"teacher": True, "buffer": "teacher_reward"},
        # the Teacher keeps its rounds; ls_replaces_teacher (the official code) makes it TB + LS (docs/strings.md)
        "teacher-ls": {"teacher": True, "local_search": True, "ls_replaces_teacher": False},
        # Shen et al. (2023): the substructure guide and a learned P_B regressed onto it. Their clamp of squared
        # errors at 100 is not used: at Kim et al.'s β it zeroes the gradient of every low-reward sample (|δ| >
        # 10) and the Student collapsed onto the reward floor (docs/strings.md); the family's 5,000 applies.
        "gtb": {"guide": "substructure", "learn_pb": True},
    },
    objectives=("tb", "db"),
    local_search="back_and_forth",
    make_policy=_discrete_policy,
    make_evaluator=_string_evaluator,
    plot_run=_string_plots,
    columns=[
        ("modes_found", "modes found"),
        ("onpolicy_modes", "on-policy modes (of 2,048)"),
        ("top100_r", "top-100 mean r"),
        ("top100_diversity", "top-100 diversity"),
        ("mean_r", "on-policy mean r"),
        ("log_Z_is", "log Ẑ (IS)"),
        ("eubo", "EUBO"),
        ("pearson", "corr(log P_F, log R)"),
        ("l1", "exact L1 (Σ)"),
        ("mode_mass", "exact mode mass"),
    ],
    progress_keys=("modes_found", "top100_r"),
    summary_metric="modes_found",
    tasks=("qm9", "seh", "tfbind8", "rna1", "rna2", "rna3"),
    task_defaults=_string_task_defaults,
    top_k=100,
)

REGISTRY: dict[str, TaskFamily] = {f.name: f for f in (DISCRETE, DIFFUSION, STRINGS)}


def register(family: TaskFamily) -> TaskFamily:
    """Add a task family (its name must be new)."""
    if family.name in REGISTRY:
        raise ConfigError(f"a task family named {family.name!r} is already registered")
    REGISTRY[family.name] = family
    return family


def get_family(name: str) -> TaskFamily:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown task family {name!r}; choose one of {', '.join(REGISTRY)}") from None


def family_of(env: Any) -> TaskFamily:
    """The family an environment declares; an environment that declares none is an error saying what to add."""
    name = getattr(env, "family", None)
    if name is None:
        raise EnvironmentCheckError(
            f"{type(env).__name__} does not declare its task family: subclass adaptive_teacher.DiscreteEnv "
            "(family 'discrete') or wrap a Density in DiffusionEnv ('diffusion'), or set the class attribute "
            f"family to one of {', '.join(repr(n) for n in REGISTRY)}"
        )
    return get_family(name)


def family_of_task(task: dict[str, Any]) -> TaskFamily:
    """The family of a built-in task spec ``{"name": ..., ...}``."""
    for family in REGISTRY.values():
        if task.get("name") in family.tasks:
            return family
    raise ConfigError(f"{task.get('name')!r} is not a built-in task; pass the environment itself")
