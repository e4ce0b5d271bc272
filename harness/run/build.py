"""From a composed config to what a run trains: the task, the model and the trainer's settings, every field checked
(`check`: the schema, then the model built on the meta device). `model.pattern=[hyena,attention]` builds a hybrid:
the backbone with that list of mixer options (conf/model/mixer/<name>.yaml each), striped over depth (layer i gets
pattern[i % len]). An entry is an option name, or a mapping with `name` and options:
`'model.pattern=[hyena,{name:attention,n_heads:4}]'`. Entries take their YAML's defaults: `model.mixer.*` overrides
act on `model.mixer`, which a pattern replaces.
"""

import contextlib
import copy
import os
import tempfile
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from harness.run import distributed, schema
from harness.run.recipe import TrainConfig, resolve_device
from models.mixers.base import contract_errors
from models.positions import LearnedPosition
from tasks.base import Task

MIXERS = files("conf") / "model" / "mixer"


def available_mixers() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in MIXERS.iterdir() if p.name.endswith(".yaml"))


class ConfigError(ValueError):
    """A config that cannot run. Reported in one line, exit code 2, and no record is written."""


def build(cfg: DictConfig, meta: bool = False) -> tuple[Task, nn.Module, TrainConfig]:
    """Instantiate task, model and trainer settings, checking every field a run depends on. `meta` builds the model
    on the meta device: shapes and checks without memory or weight init (for validating sweeps)."""
    task = _instantiate("task", cfg.task)
    _check("task", task.check)
    train_cfg = _instantiate("trainer", cfg.trainer, lambda c: TrainConfig(**OmegaConf.to_container(c, resolve=True)))
    _check("", lambda: train_cfg.check(task.num_train, distributed.size_from_env()))
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = _instantiate("model", cfg, build_model)  # model.pattern: harness/run/build.py
    if errors := [e for mixer in {type(b.mixer) for b in model.blocks} for e in contract_errors(mixer)]:
        raise ConfigError(f"model.mixer: {'; '.join(errors)} (models/mixers/base.py)")
    if model.max_seq_len < task.max_seq_len:  # the longest split, e.g. an extrapolation test length
        what = "task.seq_len" if task.max_seq_len == task.seq_len else "task.max_seq_len (longest test split)"
        raise ConfigError(f"{what}={task.max_seq_len} is longer than model.max_seq_len={model.max_seq_len}")
    if model.vocab_size < task.vocab_size:
        raise ConfigError(f"task.vocab_size={task.vocab_size} is larger than model.vocab_size={model.vocab_size}")
    return task, model, train_cfg


def _instantiate(group: str, node: DictConfig, make: Callable[[DictConfig], Any] = instantiate) -> Any:
    try:
        return make(node)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise ConfigError(f"{group}.{cause}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{group}.{e}") from None


def _check(prefix: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except ValueError as e:
        raise ConfigError(f"{prefix}.{e}" if prefix else str(e)) from None


def check(cfg: DictConfig, memory: bool = True) -> None:
    """Raise ConfigError for anything that would stop `run` before training. The model is built on the meta device;
    an error found there is confirmed by a real build, since a mixer may do what meta tensors cannot. With `memory`
    (the jobs run on this machine), a model whose training cannot fit in the device's memory is refused too."""
    try:
        schema.validate(cfg)
    except schema.SchemaError as e:
        raise ConfigError(str(e)) from None
    try:
        task, model, train_cfg = build(cfg, meta=True)
    except Exception:
        task, model, train_cfg = build(cfg)
    if memory:
        check_fits(model, task, train_cfg)


ADAMW_BYTES_PER_PARAM = 16  # fp32 weights, gradients, and AdamW's two moments (exp_avg, exp_avg_sq)


def training_bytes(model: nn.Module, task: Task, train_cfg: TrainConfig) -> tuple[int, int]:
    """A lower bound on what training needs: (16 bytes per parameter for weights, gradients and AdamW's state; 4 bytes
    per value of the residual stream each block keeps for the backward pass, rows × seq_len × d_model × layers, where
    rows are those one process runs at once: the micro batch, or its share of the global batch). Under FSDP
    (trainer.parallel=fsdp) a process holds 1/N of the parameter bytes. Activations inside the mixers and
    feed-forwards, the head, the data (and under FSDP the block whose weights are gathered) come on top."""
    residual = 4 * train_cfg.micro_batch(distributed.size_from_env()) * task.seq_len * model.d_model * len(model.blocks)
    return ADAMW_BYTES_PER_PARAM * model.num_params() // shards(train_cfg), residual


def shards(train_cfg: TrainConfig) -> int:
    """Over how many processes the parameters, gradients and optimizer state are split: N under FSDP, else 1."""
    return distributed.size_from_env() if train_cfg.parallel == "fsdp" else 1


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """(bytes, what they are) of memory a run on `device` can use: a CUDA device's free memory, or this machine's
    physical memory for the CPU; None where unknown."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {torch.cuda.get_device_name(device)}"
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "of this machine's physical memory"
        except (ValueError, OSError):
            return None
    return None


def check_fits(model: nn.Module, task: Task, train_cfg: TrainConfig) -> None:
    """ConfigError, with the estimate, if training_bytes exceed the memory of the device the run will use."""
    have = available_memory(resolve_device(train_cfg.device))
    weights, residual = training_bytes(model, task, train_cfg)
    rows = train_cfg.micro_batch(distributed.size_from_env())
    if have is None or weights + residual <= have[0]:
        return
    raise ConfigError(
        f"model.d_model={model.d_model} model.n_layers={len(model.blocks)} trainer.batch_size={train_cfg.batch_size}"
        + (f" ({rows} rows at once per process)" if rows != train_cfg.batch_size else "")
        + f": training needs at least {size_text(weights + residual)} ({model.num_params():,} parameters × "
        f"{ADAMW_BYTES_PER_PARAM} bytes for fp32 weights, gradients and AdamW's two moments"
        + (f" / {shards(train_cfg)} shards" if shards(train_cfg) > 1 else "")
        + f" = {size_text(weights)}, + "
        f"{size_text(residual)} for the residual stream of one batch), more than the {size_text(have[0])} {have[1]}"
    )


def size_text(n: int) -> str:
    """Bytes in GiB, MiB or KiB, one decimal: 16,392.4 GiB, 419.0 KiB."""
    for power, unit in ((30, "GiB"), (20, "MiB")):
        if n >= 2**power:
            return f"{n / 2**power:,.1f} {unit}"
    return f"{n / 2**10:,.1f} KiB"


def check_writable(folder: str | Path, what: str) -> None:
    """Create `folder` if needed and write a temporary file in it, before any training: ConfigError naming `what`
    if the file system refuses (a file where a folder should be, no permission, a read-only mount)."""
    path = Path(str(folder))
    blocker = next((p for p in [path, *path.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"{what}={folder} is not a writable folder ({blocker} is a file)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".archbench-write-check-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(f"{what}={folder} is not a writable folder ({reason}: {e.filename or path})") from None


PLAN = ("pattern", "attention_every", "attention_offset", "attention_mixer")  # model fields this module resolves


def build_model(cfg: DictConfig) -> nn.Module:
    """Instantiate cfg.model; with a pattern or an attention_every set, the model's mixer is one option per layer."""
    if all(cfg.model.get(k) is None for k in PLAN):
        return instantiate(cfg.model)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    plan = {k: model.pop(k, None) for k in PLAN}
    base = mixer_configs(cfg, plan["pattern"]) if plan["pattern"] is not None else [model["mixer"]]
    del model["mixer"]
    layers = layer_plan(
        base, _attention_config(cfg, plan), model["n_layers"], plan["attention_every"], plan["attention_offset"]
    )
    return instantiate({**model, "_partial_": True})(mixer=[instantiate(m) for m in layers])


def _attention_config(cfg: DictConfig, plan: dict) -> dict | None:
    if plan["attention_every"] is None:
        if plan["attention_offset"] is not None or plan["attention_mixer"] is not None:
            field = "attention_offset" if plan["attention_offset"] is not None else "attention_mixer"
            raise ValueError(f"{field}={plan[field]} needs attention_every=k (every k-th layer is attention)")
        return None
    try:
        [node] = mixer_configs(cfg, [plan["attention_mixer"] or "attention"])
    except ValueError as e:
        raise ValueError(str(e).replace("pattern[0]", "attention_mixer", 1)) from None
    return node


def layer_plan(base: list, attention: object, n_layers: int, every: int | None, offset: int | None) -> list:
    """One entry per layer: with `every` = k, layer i is `attention` where i % k == offset (default k - 1: the last
    of every k) and the other layers take `base` in turn; without it, `base` striped over depth. Entries are names or
    configs alike. ValueError when the plan puts no attention layer in the model."""
    if every is None:
        return [base[i % len(base)] for i in range(n_layers)]
    offset = every - 1 if offset is None else offset
    if offset >= every:
        raise ValueError(f"attention_offset={offset} must be < attention_every={every}")
    if offset >= n_layers:
        raise ValueError(
            f"attention_every={every} (offset {offset}) puts no attention layer in n_layers={n_layers} layers"
        )
    layers, j = [], 0
    for i in range(n_layers):
        if i % every == offset:
            layers.append(attention)
        else:
            layers.append(base[j % len(base)])
            j += 1
    return layers


def layer_names(model: dict, mixer_choice: str | None) -> list[str] | None:
    """The mixer option of each layer over one repetition of the plan, or of every layer if the model is shorter (the
    record's label: harness.record.keys.labels_of); None for a model with one mixer throughout."""
    if all(model.get(k) is None for k in PLAN):
        return None
    name = lambda e: str(e.get("name") if isinstance(e, dict) else e)
    base = [name(e) for e in model["pattern"]] if model.get("pattern") is not None else [str(mixer_choice)]
    every = model.get("attention_every")
    attention = name(model.get("attention_mixer") or "attention")
    layers = layer_plan(base, attention, model["n_layers"], every, model.get("attention_offset"))
    return layers[: (every or 1) * len(base)]  # a whole number of repetitions: the plan repeats after this many


def untrained_positions(model: nn.Module, task: Task) -> str | None:
    """What a learned position table leaves untrained: its rows past the training length, which the longer test
    splits read as random vectors (MHA-Abs in the Mamba paper does so on purpose); None if there are none."""
    train, longest = task.seq_len, getattr(task, "max_seq_len", task.seq_len)
    if not isinstance(getattr(model, "position", None), LearnedPosition) or longest <= train:
        return None
    return (
        f"position=learned: rows {train + 1}-{longest} of the position table are never trained (training sequences "
        f"are at most {train} long) and the test splits reach them; model/position=none, rope or alibi gives every "
        "length a position"
    )


def mixer_configs(cfg: DictConfig, pattern: object) -> list[dict]:
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
