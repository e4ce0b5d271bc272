import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


def options(group: str) -> list[str]:
    """Every option of a config group, from its YAML files: new options are tested with no edit here."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def with_task(overrides: list[str]) -> list[str]:
    """A model option's overrides with a task (any: models read vocab and length): the form tests/test_defaults.py and
    tests/test_help.py both compose, so that the session composes each option once (composed_once)."""
    return ["task=lm_text", *overrides] if overrides[0].startswith("model") else overrides


@pytest.fixture
def compose():
    """compose(overrides) -> the config `archbench` would run with those overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import harness  # noqa: F401  (registers the config resolvers, e.g. ${task_width:...})

    def make(overrides=()):
        with initialize_config_module(config_module="conf", version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))

    return make


@pytest.fixture(scope="session")
def composed_once():
    """composed_once(overrides) -> the config `archbench` would run with those overrides, composed once per session
    and read-only: the tests that only read composed configs (tests/test_defaults.py, tests/test_help.py) share them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    import harness  # noqa: F401  (the config resolvers)

    cache = {}

    def get(overrides=()):
        key = tuple(overrides)
        if key not in cache:
            with initialize_config_module(config_module="conf", version_base="1.3"):
                cache[key] = hydra_compose(config_name="config", overrides=list(key))
            OmegaConf.set_readonly(cache[key], True)
        return cache[key]

    return get
