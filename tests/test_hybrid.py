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
from omegaconf import OmegaConf

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
    proc = _archbench(tmp_path, *SMALL, "model.pattern=[hyena,attention]")
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


# ---------------------------------------------------------------------------------------------------------------------
# layer plans: model.attention_every (harness/run/build.py layer_plan) and the presets of conf/model/hybrid/

from harness.record.keys import plan_label  # noqa: E402
from harness.run.build import ConfigError, check, layer_names, layer_plan  # noqa: E402
from models.mixers.gated_deltanet import GatedDeltaNet  # noqa: E402
from models.mixers.kda import KimiDeltaAttention as KDA  # noqa: E402
from models.mixers.sliding_window import SlidingWindowAttention  # noqa: E402

G, A = GatedDeltaNet, Attention


def test_attention_every_kth_layer_the_mixer_elsewhere(compose):
    model = build_model(compose([*SMALL, "model/mixer=gated_deltanet", "model.n_layers=8", "model.attention_every=4"]))
    assert [type(m) for m in mixers_of(model)] == [G, G, G, A] * 2
    assert model(torch.randint(0, 50, (2, 16))).shape == (2, 16, 32)


def test_attention_every_with_a_pattern_an_offset_and_another_attention(compose):
    cfg = compose(
        [
            *SMALL,
            "model.n_layers=6",
            "model.pattern=[hyena,mamba]",
            "model.attention_every=3",
            "model.attention_offset=0",
            "model.attention_mixer=sliding_window",
        ]
    )
    S = SlidingWindowAttention
    assert [type(m) for m in mixers_of(build_model(cfg))] == [S, Hyena, Mamba, S, Hyena, Mamba]


def test_mixer_overrides_reach_the_planned_layers_and_entries_take_options(compose):
    cfg = compose(
        [
            *SMALL,
            "model/mixer=gated_deltanet",
            "model.mixer.n_heads=2",
            "model.n_layers=2",
            "model.attention_every=2",
            "model.attention_mixer={name:attention,n_heads:4}",
        ]
    )
    gdn, attention = mixers_of(build_model(cfg))
    assert gdn.n_heads == 2 and attention.n_heads == 4


@pytest.mark.parametrize("layers", [[1, 2, 3], [2, 2], [1], [1, 1, 2, 3]])
@pytest.mark.parametrize("every", [None, 1, 2, 3, 4])
def test_plan_labels_spell_one_repetition_of_the_layers(layers, every):
    """Property: the label, read back (n×name runs joined by +) and repeated, gives every layer of the model."""
    base = [f"m{i}" for i in layers]
    built = layer_plan(base, "attention", 12, every, None)
    names = layer_names({"pattern": base, "n_layers": 12, "attention_every": every}, None)
    label = plan_label(names)
    period = [
        name
        for run in label.split("+")
        for name in ([run] if "×" not in run else int(run.split("×")[0]) * [run.split("×")[1]])
    ]
    assert [period[i % len(period)] for i in range(12)] == built
    assert not (every == 1) or set(built) == {"attention"}


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.attention_every=0"], "model.attention_every=0: must be an integer >= 1 or null"),
        (["model.attention_every=2", "model.attention_offset=2"], "attention_offset=2 must be < attention_every=2"),
        (["model.attention_every=4"], "model.attention_every=4 (offset 3) puts no attention layer in n_layers=2"),
        (["model.attention_every=2", "model.attention_mixer=atention"], "model.attention_mixer=atention is no mixer"),
        (["model.attention_offset=1"], "model.attention_offset=1 needs attention_every=k"),
        (["model.attention_mixer=gqa"], "model.attention_mixer=gqa needs attention_every=k"),
    ],
)
def test_bad_plans_are_refused_in_one_line_naming_the_field(compose, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check(compose([*SMALL, *overrides]))


def test_the_backbone_refuses_a_plan_it_cannot_resolve(compose):
    with pytest.raises(InstantiationException, match="resolved by harness.run.build.build_model"):
        instantiate(compose([*SMALL, "model.attention_every=2"]).model)


PRESETS = {  # conf/model/hybrid/<name>.yaml -> its mixers over one repetition, and its board label
    "kimi_linear": ([KDA, KDA, KDA, A], "3×kda+attention"),
    "jamba": ([Mamba] * 4 + [A] + [Mamba] * 3, "4×mamba+attention+3×mamba"),
    "samba": ([Mamba, SlidingWindowAttention], "mamba+sliding_window"),
}


@pytest.mark.parametrize("name", options("model/hybrid"))
def test_each_hybrid_preset_builds_its_plan_causally(compose, name):
    assert name in PRESETS, f"conf/model/hybrid/{name}.yaml has no expected plan here"
    types, label = PRESETS[name]
    cfg = compose([f"model=hybrid/{name}", "task.vocab_size=50", "task.seq_len=16", "task.num_kv_pairs=2"])
    check(cfg)
    model = build_model(cfg)
    layers = [type(m) for m in mixers_of(model)]
    assert [layers[i] for i in range(len(types))] == types and len(layers) % len(types) == 0
    config = OmegaConf.to_container(cfg, resolve=True)
    mixer = OmegaConf.to_container(compose([f"model=hybrid/{name}"]).model.mixer)["_target_"].rsplit(".", 1)[1]
    choice = {"KimiDeltaAttention": "kda", "Mamba": "mamba"}[mixer]
    assert plan_label(layer_names(config["model"], choice)) == label
    idx = torch.randint(0, 50, (2, 16))
    idx2 = idx.clone()
    idx2[:, 8] = (idx2[:, 8] + 1) % 50
    with torch.no_grad():
        torch.testing.assert_close(model(idx2)[:, :8], model(idx)[:, :8], rtol=0, atol=1e-6)


def test_cli_sweeps_the_ratio_and_labels_each_plan(tmp_path):
    env = {**os.environ, "ARCHBENCH_RESULTS": str(tmp_path / "results"), "WANDB_MODE": "offline"}
    smoke = ["trainer=smoke", "task.num_train=64", "task.num_val=16", "task.num_test=16"]
    cmd = [sys.executable, "-c", "from harness.run.cli import main; main()", "-m", *smoke]
    cmd += [*SMALL, "model=hybrid/kimi_linear", "model.attention_every=2,4"]  # small shapes: the labels are the point
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("result.json")]
    assert sorted(r["labels"]["mixer"] for r in records) == ["3×kda+attention", "kda+attention"]
    assert {r["status"] for r in records} == {"completed"}
