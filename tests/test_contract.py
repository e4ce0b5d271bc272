"""The mixer contract (models/mixers/base.py) on every option of conf/model/mixer/, and what follows from it: the
trainer's no-decay group is built from `no_weight_decay()`, and each part initialises its own weights (the backbone
touches only the embedding and the head)."""

import importlib
from typing import Annotated

import pytest
import torch
import yaml
from annotated_types import Ge
from hydra.utils import instantiate
from torch import Tensor, nn

from harness.run import build
from harness.run.train import TrainConfig, configure_optimizer
from models.mixers.base import Mixer, contract_errors
from tests.conftest import CONF, options

SMALL = ["model.d_model=32", "task.vocab_size=50", "task.seq_len=16", "task.num_kv_pairs=2"]


def target(path) -> type:
    module, name = yaml.safe_load(path.read_text())["_target_"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", options("model/mixer"))
def test_every_mixer_keeps_the_contract(name):
    assert contract_errors(target(CONF / "model" / "mixer" / f"{name}.yaml")) == []


class NoFlops(Mixer):
    def __init__(self, d_model: int, *, max_seq_len: int, layer_idx: int):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)

    def forward(self, x: Tensor) -> Tensor:
        return x


class Kwargs(NoFlops):
    def __init__(self, d_model: int, *, max_seq_len: int, layer_idx: int, **options):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)

    def flops_per_token(self, seq_len: int) -> int:
        return 0


class Loose(Kwargs):
    def __init__(self, d_model: int, *, max_seq_len: int, layer_idx: int, width=4, depth: Annotated[int, Ge(1)] = 0):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)


class NotAMixer(nn.Module):
    def __init__(self, d_model: int, *, max_seq_len: int, layer_idx: int):
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x


@pytest.mark.parametrize(
    "cls,message",
    [
        (NoFlops, "NoFlops does not implement flops_per_token"),
        (Kwargs, "Kwargs.__init__ takes **options: options must be named"),
        (Loose, "Loose.__init__: option width has no type annotation"),
        (Loose, "Loose.__init__: the default breaks its own declaration: mixer.depth=0 must be positive"),
        (NotAMixer, "NotAMixer does not subclass models.mixers.base.Mixer"),
    ],
)
def test_a_broken_mixer_is_reported(cls, message):
    assert any(e.startswith(message) for e in contract_errors(cls)), contract_errors(cls)


@pytest.mark.parametrize(
    "name,message",
    [
        ("NoFlops", "Can't instantiate abstract class NoFlops"),
        ("NotAMixer", "does not subclass models.mixers.base.Mixer"),
    ],
)
def test_the_config_check_reports_a_broken_mixer_in_one_line(compose, name, message):
    swap = ["model/mixer=rwkv", "~model.mixer.chunk_size", f"model.mixer._target_=tests.test_contract.{name}"]
    cfg = compose([*SMALL, *swap])
    with pytest.raises(build.ConfigError, match=message) as e:
        build.check(cfg)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "name,override,message",
    [
        ("mamba", "d_state=0", "mixer.d_state=0 must be positive"),
        ("mamba", "dt_min=0.5", "mixer.dt_min=0.5 and dt_max=0.1 must satisfy dt_min <= dt_max"),
        ("s4d", "d_state=3", "mixer.d_state=3 must be a multiple of 2"),
        ("hyena", "order=1", "mixer.order=1 must be >= 2"),
        ("linear_attention", "feature_map=softmax", "mixer.feature_map='softmax' must be one of elu, taylor"),
        ("gla", "gate_temperature=0", "mixer.gate_temperature=0 must be positive"),
        ("rwkv", "chunk_size=0", "mixer.chunk_size=0 must be positive"),
    ],
)
def test_a_declared_range_is_checked_when_the_mixer_is_built(compose, name, override, message):
    factory = instantiate(compose([f"model/mixer={name}", f"model.mixer.{override}"]).model.mixer)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        factory(32, max_seq_len=16, layer_idx=0)


def decay_groups(model):
    decay, no_decay = configure_optimizer(model, TrainConfig(), torch.device("cpu")).param_groups
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0
    return {id(p) for p in decay["params"]}, {id(p) for p in no_decay["params"]}


@pytest.mark.parametrize(
    "name,excluded",
    [
        ("mamba", ["A_log", "D"]),
        ("s4d", ["kernel.log_dt", "kernel.log_a", "kernel.a_im"]),
        ("h3", ["diag.log_dt", "diag.log_a", "diag.a_im"]),
        ("rwkv", ["time_decay", "time_first"]),
        ("hyena", ["filter.out", "filter.weights.0", "filter.weights.1"]),
    ],
)
def test_reference_no_decay_parameters_take_no_weight_decay(compose, name, excluded):
    model = instantiate(compose([*SMALL, f"model/mixer={name}"]).model)
    decayed, _ = decay_groups(model)
    params = dict(model.blocks[0].mixer.named_parameters())
    assert [p for p in excluded if id(params[p]) in decayed] == []


@pytest.mark.parametrize("name", options("model/mixer"))
def test_no_weight_decay_names_own_parameters_and_the_trainer_honours_it(compose, name):
    model = instantiate(compose([*SMALL, f"model/mixer={name}"]).model)
    decayed, not_decayed = decay_groups(model)
    for block in model.blocks:
        own = {id(p) for p in block.mixer.parameters()}
        named = {id(p) for p in block.mixer.no_weight_decay()}
        assert named <= own and named <= not_decayed
    assert id(model.head.weight) in decayed and id(model.embedding.weight) not in decayed


@pytest.mark.parametrize(
    "group,name",
    [("model/mixer", n) for n in options("model/mixer")]
    + [("model/ffn", n) for n in options("model/ffn") if n != "none"],
)
def test_the_backbone_leaves_the_parts_weights_as_they_made_them(compose, group, name):
    """Each part built inside the backbone has exactly the weights it has when built alone from the same random
    state: the backbone initialises only what it creates (embedding, head)."""
    cfg = compose([*SMALL, f"{group}={name}", "model.n_layers=2"])
    key = "mixer" if group == "model/mixer" else "ffn"
    factory, states = instantiate(cfg.model[key]), []

    def recording(*args, **kwargs):
        states.append(torch.get_rng_state())
        return factory(*args, **kwargs)

    recording.func = factory.func  # the backbone reads accepts_position from the class
    torch.manual_seed(0)
    model = instantiate(cfg.model, _partial_=True)(**{key: recording})
    for i, block in enumerate(model.blocks):
        torch.set_rng_state(states[i])
        kwargs = {} if key == "ffn" else {"max_seq_len": model.max_seq_len, "layer_idx": i}
        if key == "mixer" and block.mixer.accepts_position and getattr(model.position, "kind", None) == "attention":
            kwargs["position"] = model.position
        alone = factory(32, **kwargs).state_dict()
        inside = getattr(block, key).state_dict()
        assert alone.keys() == inside.keys()
        assert [k for k in alone if not torch.equal(alone[k], inside[k])] == [], f"layer {i}"
