"""Where a run writes stays inside the results root, checked before anything is created (issue 28).

The results root is `paths.results` (conf/config.yaml; `ARCHBENCH_RESULTS` or `paths.results=DIR` moves it, and it
may be any absolute or relative folder): it is where skip, resume and the board look for records, so nothing a run
writes may land outside it. The config values that become output paths are `name` (one folder name:
paths.results/<name>/), `hydra.run.dir`, `hydra.sweep.dir` and `hydra.sweep.subdir` (built from paths.results and
name by default; an override must stay inside too) and `hydra.launcher.submitit_folder` (SLURM's logs, inside the
sweep folder by default). Containment is decided on the normalised absolute path (`..` folded, symlinks not
followed, so a root that links elsewhere works). What archbench only reads (`task.data_files`) or hands to another
program (an Optuna `storage` URL) is not an output path. Task data is cached under ARCHBENCH_CACHE with names made of
a hash, never of a config value (tasks/cache.py).
"""

import copy
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from harness.run.build import ConfigError

NOT_IN_NAME = ("/", "\\", "\0")


def check_name(name: Any) -> None:
    """`name` is one folder name under paths.results (and the wandb group): ConfigError if it is empty, `.`, `..` or
    holds a path separator."""
    text = str(name)
    if text.strip() in ("", ".", "..") or any(c in text for c in NOT_IN_NAME):
        raise ConfigError(
            f"name={text!r}: must be one folder name (not empty, '.' or '..', no '/' or '\\'): runs are written to "
            "paths.results/<name>/"
        )


def inside(path: Any, root: Any) -> bool:
    """Whether `path` is `root` or below it, after folding `..` (relative paths from the working folder)."""
    p, r = os.path.abspath(str(path)), os.path.abspath(str(root))
    return os.path.commonpath([p, r]) == r


def check_inside(path: Any, root: Any, what: str, value: Any = None) -> None:
    """ConfigError naming `what` (=`value`, else =path) if `path` is not inside `root`."""
    if "\0" in str(path) or not inside(path, root):
        where = f"{what}={path}" if value is None else f"{what}={value} (the folder {path})"
        raise ConfigError(
            f"{where} is outside the results root paths.results={root}: every folder a run writes must lie "
            "inside it (set paths.results to move the root)"
        )


def check_outputs(config: DictConfig, sweep: bool) -> None:
    """`name` and every folder a run or sweep writes (config: the whole config, hydra included) inside paths.results.
    In a sweep, `hydra.sweep.subdir` is checked as job `config.hydra.job.num` resolves it (per job where the
    sweep's jobs are known: harness/run/preflight.py)."""
    root = config.paths.results
    check_name(config.name)
    if not sweep:
        check_inside(config.hydra.run.dir, root, "hydra.run.dir")
        return
    if OmegaConf.select(config, "hydra.job.num") is None:  # the sweep's own config: as its first job resolves it
        config = copy.deepcopy(config)
        with read_write(config), open_dict(config):
            config.hydra.job.num = 0
    sweep_dir = config.hydra.sweep.dir
    check_inside(sweep_dir, root, "hydra.sweep.dir")
    subdir = config.hydra.sweep.subdir
    check_inside(os.path.join(str(sweep_dir), str(subdir)), root, "hydra.sweep.subdir", subdir)
    submitit = OmegaConf.select(config, "hydra.launcher.submitit_folder")
    if submitit is not None:
        check_inside(submitit, root, "hydra.launcher.submitit_folder")
