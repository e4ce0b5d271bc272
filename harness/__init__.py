"""The glue: CLI, trainer, result records and leaderboards. The only package that knows Hydra, wandb and files."""

import sysconfig
import warnings
from importlib.resources import files

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
