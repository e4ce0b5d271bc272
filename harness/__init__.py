"""The glue: CLI, trainer, result records and leaderboards. The only package that knows Hydra, wandb and files."""

import posixpath
import sysconfig
import warnings
from importlib.resources import files
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from tasks.length_generalization import max_width

# ${python_stdlib:} in a config: the folder of Python's standard library, whose ~5 MB of source is real text that
# every machine has offline (the byte-level LM scales of harness/report/reproduce/papers/narang_glu.yaml read it)
OmegaConf.register_new_resolver("python_stdlib", lambda: sysconfig.get_paths()["stdlib"], replace=True)

# ${task_width:${._target_},<longest input lengths>...}: a length-generalisation task's longest sequence
# (tasks/length_generalization.py), so that its YAML hands the model (model.max_seq_len) the right number whatever
# test lengths are chosen
OmegaConf.register_new_resolver("task_width", max_width, replace=True)


def options(group: str, *leave_out: str) -> str:
    """The options of a config group (conf/<group>/<option>.yaml), comma-joined, without `leave_out`: a search
    space's `choice(${options:model/mixer})` takes every mixer, the ones added later too."""
    found = sorted(p.name.removesuffix(".yaml") for p in (files("conf") / group).iterdir() if p.name.endswith(".yaml"))
    unknown = sorted(set(leave_out) - set(found))
    if unknown:
        raise ValueError(f"${{options:{group},...}}: {', '.join(unknown)} is no option of {group}")
    return ",".join(o for o in found if o not in leave_out)


OmegaConf.register_new_resolver("options", options, replace=True)


def _defaults(path: Path) -> list:
    return (yaml.safe_load(path.read_text()) or {}).get("defaults") or []


def _groups(conf: Path) -> set[str]:
    """The config groups: conf/'s folders, Hydra's own (hydra/launcher, ...) and every folder a defaults list names as
    a group (`mixer: attention` in conf/model/transformer.yaml, `override /model/ffn: none`). A folder that is none
    of these holds presets of the group above it (conf/model/deletang/: `model=deletang/lstm`)."""
    found = {p.name for p in conf.iterdir() if p.is_dir() and p.name not in ("hydra", "__pycache__")}
    found |= {f"hydra/{p.name}" for p in (conf / "hydra").iterdir() if p.is_dir()}
    for path in conf.rglob("*.yaml"):
        here = path.parent.relative_to(conf).as_posix()
        for entry in _defaults(path):
            for key in entry if isinstance(entry, dict) else ():
                group = key.removeprefix("override ").split("@")[0].strip()
                found.add(group[1:] if group.startswith("/") else posixpath.normpath(posixpath.join(here, group)))
    return found


def choices() -> str:
    """`archbench --help`'s options (${choices:} in conf/config.yaml), read from conf/ when it runs: one line per group
    and one per folder of presets, each item in the form the command line takes: `model/mixer: mamba` is
    `model/mixer=mamba`, `model: deletang/lstm` is `model=deletang/lstm` (a folder of presets is no group:
    `model/deletang=lstm` fails). A YAML that extends nothing outside a group (task/protocol/) is a fragment that
    options include, not an option, and is not listed."""
    conf = Path(str(files("conf")))
    groups, lines = _groups(conf), []
    for group in sorted(g for g in groups if (conf / g).is_dir()):
        lines.append(f"{group}: {', '.join(sorted(p.stem for p in (conf / group).glob('*.yaml')))}")
        for folder in sorted(p for p in (conf / group).rglob("*") if p.is_dir()):
            rel = folder.relative_to(conf).as_posix()
            if any(rel == g or rel.startswith(f"{g}/") for g in groups if g != group and g.startswith(f"{group}/")):
                continue  # a group of its own (model/mixer), or inside one
            presets = [
                p.relative_to(conf / group).with_suffix("").as_posix()
                for p in sorted(folder.glob("*.yaml"))
                if any(isinstance(e, str) and e.endswith("@_here_") for e in _defaults(p))
            ]
            if presets:
                lines.append(f"{group}: {', '.join(presets)}")
    return "\n".join(line for line in lines if not line.endswith(": "))


OmegaConf.register_new_resolver("choices", choices, replace=True)
# ${batch_for_tokens:1024,${task.seq_len}}: the number of sequences that make a batch of that many tokens (at least
# 1), so that a sweep over lengths can give every length the same tokens per step (conf/suite/zoo_mqar.yaml)
OmegaConf.register_new_resolver(
    "batch_for_tokens", lambda tokens, length: max(1, int(tokens) // int(length)), replace=True
)
# ${steps_per_epoch:${task.num_train},${trainer.batch_size}}: the optimizer steps of one pass over the train split, as
# the trainer counts them (full batches only), e.g. eval_every "one epoch" (conf/experiment/zoology_mqar.yaml)
OmegaConf.register_new_resolver("steps_per_epoch", lambda n, batch: max(1, int(n) // int(batch)), replace=True)
# ${examples_for_steps:${trainer.max_steps},${trainer.batch_size}}: a train split that lasts exactly that many steps,
# every batch fresh (the small scale of harness/report/reproduce/papers/grazzi_parity.yaml)
OmegaConf.register_new_resolver("examples_for_steps", lambda steps, batch: int(steps) * int(batch), replace=True)
# ${gib_bytes:${resources.mem_gb}}: gigabytes as SLURM counts them (GiB), in bytes, as Ray asks for memory
OmegaConf.register_new_resolver("gib_bytes", lambda gb: int(float(gb) * 2**30), replace=True)
# conf/hydra/launcher/ray.yaml has the name of the Ray plugin's own config, on purpose (`hydra/launcher=ray`): Hydra
# then checks it against the plugin's schema, and says on every sweep that this matching is deprecated
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema")
