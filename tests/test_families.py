"""Task families as objects: methods derived from presets, declared families, no silent grid defaults."""

from __future__ import annotations

import pytest

from adaptive_teacher.config import methods_for, resolve_config
from adaptive_teacher.densities import GMM25
from adaptive_teacher.envs import DeceptiveGrid, DiffusionEnv
from adaptive_teacher.errors import ConfigError, EnvironmentCheckError
from adaptive_teacher.families import REGISTRY, family_of, family_of_task, get_family
from adaptive_teacher.trainer import Trainer


def test_methods_are_the_keys_of_each_familys_presets():
    for name, family in REGISTRY.items():
        assert methods_for(name) == list(family.presets)
        for method, preset in family.presets.items():
            cfg = resolve_config(method, name)
            assert all(getattr(cfg, k) == v for k, v in preset.items()), (name, method)
    assert "gafn" in methods_for("discrete") and "gafn" not in methods_for("diffusion")


def test_environments_declare_their_family():
    assert family_of(DeceptiveGrid(2, 6)).name == "discrete"
    assert family_of(DiffusionEnv(GMM25(), n_steps=5)).name == "diffusion"
    assert family_of_task({"name": "manywell", "dim": 32}).name == "diffusion"


class Undeclared:
    """Duck-typed like an environment but declaring no family: it must not silently get the grid's defaults."""

    n_features = 4


def test_an_environment_without_a_family_is_an_error_that_says_what_to_add():
    with pytest.raises(EnvironmentCheckError, match="does not declare its task family.*subclass"):
        family_of(Undeclared())
    with pytest.raises(EnvironmentCheckError, match="Undeclared does not declare"):
        Trainer(Undeclared(), resolve_config("tb"))


def test_an_unknown_family_is_an_error():
    with pytest.raises(ConfigError, match="unknown task family 'proteins'"):
        get_family("proteins")
    with pytest.raises(ConfigError, match="unknown task family"):
        resolve_config("tb", "proteins")
