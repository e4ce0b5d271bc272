import copy
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


def examples(n: int) -> int:
    """Hypothesis examples for a property test: n under CI (CI=true loads Hypothesis's ci profile: the same examples on
    every run), a fifth of n (at least 10) elsewhere, where every run draws new ones, so a developer's runs still add
    up to many more than CI's while README's `pytest` stays short."""
    from hypothesis import settings

    return n if settings.get_current_profile_name() == "ci" else max(10, n // 5)


def options(group: str) -> list[str]:
    """Every option of a config group, from its YAML files: new options are tested with no edit here."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def with_task(overrides: list[str]) -> list[str]:
    """A model option's overrides with a task (any: models read vocab and length): the form tests/test_defaults.py and
    tests/test_help.py both compose, so that the session composes each option once (composed_once)."""
    return ["task=lm_text", *overrides] if overrides[0].startswith("model") else overrides


@pytest.fixture(scope="session")
def composed_once():
    """composed_once(overrides) -> the config `archbench` would run with those overrides, read-only, composed once per
    session (Hydra's compose costs ~0.08 s of CPU; dozens of tests compose the same option)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    import harness  # noqa: F401  (registers the config resolvers, e.g. ${task_width:...})

    cache = {}

    def get(overrides=()):
        key = tuple(overrides)
        if key not in cache:
            with initialize_config_module(config_module="conf", version_base="1.3"):
                cache[key] = hydra_compose(config_name="config", overrides=list(key))
            OmegaConf.set_readonly(cache[key], True)
        return cache[key]

    return get


@pytest.fixture
def compose(composed_once):
    """compose(overrides) -> the config `archbench` would run with those overrides: a copy of its own, to change."""
    from omegaconf import OmegaConf

    def make(overrides=()):
        cfg = copy.deepcopy(composed_once(overrides))
        OmegaConf.set_readonly(cfg, None)
        return cfg

    return make
