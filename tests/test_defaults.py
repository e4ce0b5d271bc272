"""One place for every default. Every YAML in conf/model/** and conf/task/** holds only parameters of the class it
instantiates; and each class has one registration, the YAML named after its module (conf/model/mixer/attention.yaml
for models/mixers/attention.py, conf/task/mqar.yaml for tasks/mqar.py) or, for norms, feed-forwards and positions,
after the class (layernorm, mlp, learned), or else the only YAML that targets it. A registration lists every option
with exactly the class's default. Every other YAML targeting the class is a preset (gqa, zoology/mqar_64,
induction_heads_mamba, ...) and may set other values."""

import dataclasses
import importlib
import inspect
from collections import defaultdict

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from models.mixers.base import REQUIRED, Mixer
from tests.conftest import CONF, with_task

HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_", "defaults"}
MODEL_PARTS = ("mixer", "norm", "ffn", "position")
# Classes targeted by several YAMLs, none named after them: which one registers them.
REGISTRATIONS = {
    "models.backbone.LanguageModel": "model/transformer",
    "models.ffn.GLU": "model/ffn/swiglu",  # GLU's default activation is SiLU
    # one class, a YAML per group (S5, A5, Z60): every one of them a preset, none the registration
    "tasks.state_tracking.word_problem.WordProblem": "task/word_problem",
}


def option_of(path) -> tuple[str, list[str]]:
    """(name, overrides) that compose a YAML file: conf/model/mixer/gqa.yaml -> model/mixer=gqa."""
    rel = path.relative_to(CONF).with_suffix("")
    parts = rel.parts
    if parts[0] == "model" and len(parts) == 3 and parts[1] in MODEL_PARTS:
        return str(rel), [f"model/{parts[1]}={parts[2]}"]
    return str(rel), [f"{parts[0]}={'/'.join(parts[1:])}"]


def node_of(cfg: DictConfig, name: str) -> DictConfig:
    parts = name.split("/")
    if parts[0] == "model" and len(parts) == 3 and parts[1] in MODEL_PARTS:
        return cfg.model[parts[1]]
    return cfg[parts[0]]


FILES = sorted([*(CONF / "model").rglob("*.yaml"), *(CONF / "task").rglob("*.yaml")])


@pytest.fixture(scope="module")
def composed(composed_once):
    """name -> the config its YAML composes to (defaults lists applied), within the whole config."""
    return {name: composed_once(with_task(overrides)) for name, overrides in map(option_of, FILES)}


def resolve(target: str):
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def defaults_of(obj) -> dict:
    """Every parameter of a target and its default (inspect.Parameter.empty where it has none)."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = inspect.Parameter.empty
        return out
    params = inspect.signature(obj).parameters.values()
    return {p.name: p.default for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def supplied_by_the_backbone(obj) -> set[str]:
    """Arguments the backbone passes itself: d_model, max_seq_len, layer_idx and, to attention, position."""
    if isinstance(obj, type) and issubclass(obj, Mixer):
        return {*REQUIRED, "position"}
    return {"d_model", "max_seq_len"} if obj.__module__ in ("models.positions", "models.norms", "models.ffn") else set()


def plain(value):
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    return list(value) if isinstance(value, tuple) else value


def targeted_nodes(node: DictConfig, where: str):
    """(where, node) for the node and every node inside it that has a _target_."""
    if "_target_" in node:
        yield where, node
    for key in node:
        if isinstance(node._get_node(key), DictConfig):
            yield from targeted_nodes(node[key], f"{where}.{key}")


@pytest.fixture(scope="module")
def registered(composed) -> dict[str, str | None]:
    """target -> the name of its registration YAML (None: it has none)."""
    by_target = defaultdict(list)
    for name, cfg in composed.items():
        node = node_of(cfg, name)
        if "_target_" in node:
            by_target[node._target_].append(name)
    out = {}
    for target, names in by_target.items():
        module, attr = target.rsplit(".", 1)
        named = [
            n
            for n in names
            if n.split("/")[-1] in {module.split(".")[-1], attr.lower(), attr.lower().removesuffix("position")}
        ]
        if target in REGISTRATIONS:
            out[target] = REGISTRATIONS[target]
        elif len(named) == 1:
            out[target] = named[0]
        elif len(names) == 1:
            out[target] = names[0]
        else:
            out[target] = None
    return out


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_every_key_is_a_parameter_of_its_target(composed, path):
    name, _ = option_of(path)
    cfg = composed[name]
    for where, node in targeted_nodes(node_of(cfg, name), name):
        params = defaults_of(resolve(node._target_))
        unknown = sorted(set(node) - HYDRA_KEYS - set(params))
        assert unknown == [], f"{where}: {node._target_} takes no {', '.join(unknown)}"


def test_every_target_has_one_registration(registered):
    assert {t: n for t, n in registered.items() if n is None} == {}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_a_registration_lists_every_option_with_the_class_default(composed, registered, path):
    name, _ = option_of(path)
    cfg = composed[name]
    node = node_of(cfg, name)
    if "_target_" not in node or registered.get(node._target_) != name:
        pytest.skip("a preset: may differ from the class")
    target = resolve(node._target_)
    params = defaults_of(target)
    options = {k for k, v in params.items() if v is not inspect.Parameter.empty} - supplied_by_the_backbone(target)
    missing = sorted(options - set(node))
    assert missing == [], f"{name} does not list {', '.join(missing)} (defaults: {[params[m] for m in missing]})"
    # an interpolation of another node (hgrn2's n_layers: ${model.n_layers}) is the model's value, not a default
    options -= {
        k
        for k in options
        if OmegaConf.is_interpolation(node, k) and not str(node._get_node(k)._value()).startswith("${.")
    }
    interpolated = [k for k in options if OmegaConf.is_interpolation(node, k)]
    derived = (
        instantiate(
            OmegaConf.to_container(node, resolve=True)
            | {k: None for k in options if params[k] is None and k not in interpolated}
        )
        if any(params[k] is None for k in options)
        else None
    )  # a None default the class fills in (a task's vocab_size)
    wrong = {
        k: (plain(node[k]), params[k])
        for k in sorted(options - set(interpolated))
        if plain(node[k]) != plain(params[k])
        and not (params[k] is None and derived is not None and plain(node[k]) == plain(getattr(derived, k)))
    }
    assert wrong == {}, f"{name}: (YAML, class) defaults disagree"
    if interpolated:  # e.g. max_seq_len: ${.seq_len}: must mean what the class derives from its own default
        with_yaml = instantiate(node)
        without = OmegaConf.to_container(node, resolve=True)
        for k in interpolated:
            without.pop(k)
        from_class = instantiate(without)
        assert {k: getattr(with_yaml, k) for k in interpolated} == {k: getattr(from_class, k) for k in interpolated}
