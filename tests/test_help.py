"""`archbench --help` lists every option in the form the command line takes: each listed `group: option` composes as
`group=option` (`model=deletang/lstm`, not `model/deletang=lstm`), and no YAML in conf/ is left out."""

import logging
import sys

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException

import harness
from harness.run.cli import main
from tests.conftest import CONF, with_task

LINES = harness.choices().splitlines()
PRESETS = [line for line in LINES if "/" in line.split(": ")[1]]  # model: deletang/gru, ...; task: zoology/mqar_64, ...
EXTRAS = {"hparams_search": "hydra_plugins.hydra_optuna_sweeper"}  # a group whose options need an extra installed


def parse(line: str) -> tuple[str, list[str]]:
    group, items = line.split(": ")
    return group, items.split(", ")


def test_help_prints_the_listing(capsys, monkeypatch):
    """`archbench --help`, in this process (Hydra prints the help, then exits 0; its logging setup is undone after)."""
    monkeypatch.setattr(sys, "argv", ["archbench", "--help"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        GlobalHydra.instance().clear()
        root.handlers[:], root.level = handlers, level
    out = capsys.readouterr().out
    assert exited.value.code in (0, None)
    assert "\n".join(LINES) in out
    assert "model: deletang/gru, deletang/lstm" in out and "model/deletang:" not in out


@pytest.mark.parametrize("line", PRESETS, ids=lambda line: line.split(", ")[0])
def test_every_listed_preset_composes_in_the_listed_form(composed_once, line):
    group, items = parse(line)
    for item in items:
        cfg = composed_once(with_task([f"{group}={item}"]))  # as tests/test_defaults.py composes it: once a session
        assert "_target_" in cfg[group], f"{group}={item} composes no {group}"


def test_a_preset_folder_is_no_group():
    """The form the issue tried, `model/deletang=lstm`, is refused (and the help does not list it)."""
    with initialize_config_module(config_module="conf", version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="Could not override 'model/deletang'"):
            compose(config_name="config", overrides=["model/deletang=lstm"])


@pytest.mark.parametrize("line", [line for line in LINES if line not in PRESETS], ids=lambda line: line.split(":")[0])
def test_every_listed_group_is_a_group(line):
    """group=option composes (one option each: that the options are loadable is tests/test_defaults.py's part)."""
    group, items = parse(line)
    if group in EXTRAS:
        pytest.importorskip(EXTRAS[group])
    with initialize_config_module(config_module="conf", version_base="1.3"):
        compose(config_name="config", overrides=[f"{group}={items[0]}"])


def test_no_yaml_is_left_out():
    """Every YAML in conf/ is listed, or is a fragment that options include (protocol/length_generalization@_here_)."""
    listed = {f"{g}/{item}" for g, items in map(parse, LINES) for item in items}
    included = set()
    for path in CONF.rglob("*.yaml"):
        here = path.parent.relative_to(CONF).as_posix()
        for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults") or []:
            if isinstance(entry, str) and entry.endswith("@_here_"):
                name = entry.removesuffix("@_here_")
                included.add(name[1:] if name.startswith("/") else f"{here}/{name}")
    every = {p.relative_to(CONF).with_suffix("").as_posix() for p in CONF.rglob("*.yaml")} - {"config"}
    assert every - listed <= included, sorted(every - listed - included)
