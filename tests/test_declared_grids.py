"""Tuned comparisons are the default protocol (issue 29): every suite and experiment that compares variants declares
the fields it tunes (`tune: [trainer.lr]`, MAD's lr x weight decay) and sweeps a grid of at least two values of each,
so the board selects each cell's best on validation with no flag. A new suite or experiment is checked with no edit
here; one that may not declare a grid is listed below with the reason."""

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tests.conftest import options

# group/option: why it compares variants at one setting. An entry that has since declared its grid fails below, so
# the list only shrinks.
EXCEPTIONS: dict[str, str] = {}

COMPARISONS = sorted(f"{group}/{name}" for group in ("suite", "experiment") for name in options(group))


def sweep(path: str) -> tuple[list[str], dict[str, list[str]]]:
    """The composed config's `tune` and its sweep: each swept key with its values, as Hydra expands them."""
    group, name = path.split("/")
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"{group}={name}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True) or {}
    parser = OverridesParser.create()
    values = {}
    for key, spec in params.items():
        override = parser.parse_override(f"{key}={spec}")
        values[key] = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(spec)]
    return list(cfg.tune), values


def problems(path: str, tune: list[str], values: dict[str, list[str]]) -> list[str]:
    """What is wrong with a comparison's declaration: one line each (none: it is tuned, or a listed exception)."""
    if path in EXCEPTIONS:
        return [f"{path} now declares tune={tune}: remove it from EXCEPTIONS"] if tune else []
    if not tune:
        return [f"{path}: declares no `tune` (e.g. `tune: [trainer.lr]` and a trainer.lr grid in its sweep)"]
    out = []
    for key in tune:
        grid = {float(v) for v in values.get(key, [])}
        if len(grid) < 2:
            out.append(f"{path}: tunes {key} but sweeps {values.get(key, 'no value')}: a grid needs >= 2 values")
    return out


@pytest.mark.parametrize("path", COMPARISONS, ids=str)
def test_every_comparison_declares_a_grid_for_each_field_it_tunes(path):
    assert not problems(path, *sweep(path))


def test_the_exceptions_name_existing_options():
    assert set(EXCEPTIONS) <= set(COMPARISONS)


def test_the_check_fails_a_missing_declaration_a_one_value_grid_and_a_stale_exception(monkeypatch):
    tune, values = sweep("suite/chomsky")
    assert not problems("suite/chomsky", tune, values)
    assert problems("suite/chomsky", [], values) == [
        "suite/chomsky: declares no `tune` (e.g. `tune: [trainer.lr]` and a trainer.lr grid in its sweep)"
    ]
    [one] = problems("suite/chomsky", tune, {**values, "trainer.lr": ["0.001"]})
    assert "a grid needs >= 2 values" in one
    [missing] = problems("suite/chomsky", ["trainer.weight_decay"], values)
    assert "sweeps no value" in missing
    monkeypatch.setitem(EXCEPTIONS, "suite/zoo_mqar", "a listed exception")
    stale = problems("suite/zoo_mqar", ["trainer.lr"], values)
    assert stale == ["suite/zoo_mqar now declares tune=['trainer.lr']: remove it from EXCEPTIONS"]
