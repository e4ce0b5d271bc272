"""Hybrid models from the command line: `model.pattern=[hyena,attention]` builds the backbone with that list of
mixer options (conf/model/mixer/<name>.yaml each), which it stripes over depth (layer i gets pattern[i % len]).

An entry is an option name, or a mapping with `name` and options: `'model.pattern=[hyena,{name:attention,n_heads:4}]'`.
Entries take their YAML's defaults: `model.mixer.*` overrides act on `model.mixer`, which a pattern replaces.
"""

import copy
from importlib.resources import files

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

MIXERS = files("conf") / "model" / "mixer"


def available_mixers() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in MIXERS.iterdir() if p.name.endswith(".yaml"))


def build_model(cfg: DictConfig) -> nn.Module:
    """Instantiate cfg.model; with cfg.model.pattern set, the model's mixer is the list of those options."""
    if cfg.model.get("pattern") is None:
        return instantiate(cfg.model)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    pattern = model.pop("pattern")
    model.pop("mixer")
    return instantiate({**model, "_partial_": True})(mixer=[instantiate(m) for m in mixer_configs(cfg, pattern)])


def mixer_configs(cfg: DictConfig, pattern) -> list[dict]:
    """The resolved mixer config of each pattern entry; ValueError naming the entry if one is unknown."""
    if not isinstance(pattern, list) or not pattern:
        raise ValueError(f"pattern={pattern} must be a non-empty list of mixer options, e.g. [hyena,attention]")
    nodes = []
    for i, entry in enumerate(pattern):
        options = dict(entry) if isinstance(entry, dict) else {"name": entry}
        name = options.pop("name", None)
        if not isinstance(name, str) or not (MIXERS / f"{name}.yaml").is_file():
            raise ValueError(f"pattern[{i}]={name} is no mixer option (available: {', '.join(available_mixers())})")
        nodes.append(OmegaConf.merge(OmegaConf.load(MIXERS / f"{name}.yaml"), options))
    scratch = copy.deepcopy(cfg)  # resolve the entries' interpolations (if any) against the whole config
    with open_dict(scratch):
        scratch.pattern_mixers = nodes
    return OmegaConf.to_container(scratch.pattern_mixers, resolve=True)
