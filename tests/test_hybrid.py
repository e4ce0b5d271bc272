"""Hybrids from the command line: `model.pattern=[...]` stripes mixer options over depth (harness/run/build.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from harness.run.build import available_mixers, build_model
from models.mixers.attention import Attention
from models.mixers.hyena import Hyena
from models.mixers.mamba import Mamba
from tests.conftest import options

SMALL = ["model.d_model=32", "task.vocab_size=50", "task.seq_len=16", "task.num_kv_pairs=2"]


def mixers_of(model) -> list:
    return [block.mixer for block in model.blocks]


def test_pattern_is_striped_over_depth(compose):
    model = build_model(compose([*SMALL, "model.n_layers=5", "model.pattern=[hyena,attention]"]))
    assert [type(m) for m in mixers_of(model)] == [Hyena, Attention, Hyena, Attention, Hyena]
    idx = torch.randint(0, 50, (2, 16))
    assert model(idx).shape == (2, 16, 32)
    per_layer = [m.flops_per_token(16) for m in mixers_of(model)]
    assert model.flops_per_token(16) == 6 * model.num_params(non_embedding=True) + sum(per_layer)


def test_entries_take_options_and_positions_reach_the_mixers_that_accept_them(compose):
    cfg = compose(
        [
            *SMALL,
            "model/position=rope",
            "model.n_layers=3",
            "model.pattern=[mamba,{name:attention,n_heads:4},{name:mamba,d_state:4}]",
        ]
    )
    first, attention, last = mixers_of(build_model(cfg))
    assert isinstance(first, Mamba) and isinstance(last, Mamba)
    assert (first.d_state, last.d_state) == (16, 4)
    assert attention.n_heads == 4 and attention.rotation is not None


def test_without_a_pattern_the_model_is_what_it_was(compose):
    cfg = compose(SMALL)
    torch.manual_seed(0)
    built = build_model(cfg)
    torch.manual_seed(0)
    plain = instantiate(cfg.model)
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), plain.state_dict().values(), strict=True))


def test_available_mixers_are_the_config_options():
    assert available_mixers() == options("model/mixer")


@pytest.mark.parametrize(
    "pattern,message",
    [
        ("[hyena,nope]", "pattern[1]=nope is no mixer option (available: "),
        ("[]", "must be a non-empty list"),
        ("hyena", "must be a non-empty list"),
        ("[{n_heads:2}]", "pattern[0]=None is no mixer option"),
    ],
)
def test_bad_patterns_name_the_entry(compose, pattern, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        build_model(compose([*SMALL, f"model.pattern={pattern}"]))


def test_instantiating_a_pattern_without_the_harness_fails_loudly(compose):
    with pytest.raises(InstantiationException, match="resolved by harness.run.build.build_model"):
        instantiate(compose([*SMALL, "model.pattern=[hyena]"]).model)


def _archbench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ARCHBENCH_RESULTS": str(tmp_path / "results"), "WANDB_MODE": "offline"}
    cmd = [
        sys.executable,
        "-c",
        "from harness.run.cli import main; main()",
        "trainer=smoke",
        "task.num_train=64",
        "task.num_val=16",
        "task.num_test=16",
        *args,
    ]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_cli_runs_a_hybrid_and_records_its_pattern(tmp_path):
    proc = _archbench(tmp_path, "model.pattern=[hyena,attention]")
    assert proc.returncode == 0, proc.stderr
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("result.json")]
    assert record["status"] == "completed"
    assert "model.pattern=[hyena,attention]" in record["overrides"]
    assert record["config"]["model"]["pattern"] == ["hyena", "attention"]
    assert record["labels"]["mixer"] == "hyena+attention"  # wandb names, tags and the board's rows say so


def test_cli_names_an_unknown_mixer_in_one_line(tmp_path):
    proc = _archbench(tmp_path, "model.pattern=[hyena,hyenna]")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("archbench: error: model.pattern[1]=hyenna is no mixer option (available: ")
    assert "hyena" in line and "attention" in line
