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
