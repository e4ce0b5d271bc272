"""Architecture search with Hydra's Optuna sweeper (conf/hparams_search/): what a trial returns to the sweeper, the
worst values a failed, diverged or invalid trial returns instead of ending the study, and the checks a search gets
before its first trial (Optuna proposes trials one by one, so the trials themselves cannot be checked in advance).

The objectives are `search.objectives`: metrics of the record ("val/accuracy", "val/loss") or costs ("cost:params",
"cost:flops_per_token"), in the order of `hydra.sweeper.direction`."""

import math

from hydra.core.config_loader import ConfigLoader
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from tasks.registry import LOWER_IS_BETTER

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
# The worst value of a lower-is-better objective whose value is unknown: finite, because NSGA-II's crowding distance
# divides by the range of each objective (an infinite one gives NaN distances).
LARGE = 1e30


def objectives(cfg: DictConfig) -> list[str]:
    spec = cfg.get("search")
    return list(spec.objectives) if spec else []


def active(cfg: DictConfig) -> bool:
    """True in a trial of a search: a multirun of the Optuna sweeper with `search` set. There a config that cannot be
    built is a failed trial; in single runs and basic sweeps it stays a loud error (exit code 2)."""
    hc = HydraConfig.get()
    return bool(objectives(cfg)) and hc.mode == RunMode.MULTIRUN and hc.sweeper.get("_target_") == OPTUNA_SWEEPER


def lower_is_better(name: str) -> bool:
    return name.startswith("cost:") or name.rsplit("/", 1)[-1] in LOWER_IS_BETTER


def value(name: str, record: dict) -> float:
    """Objective `name` of a run: its metric if the run completed, else the worst value (accuracy 0, a loss or an
    unknown cost LARGE); a cost is the run's own wherever it is known, failed or not."""
    if name.startswith("cost:"):
        v = (record.get("cost") or {}).get(name.removeprefix("cost:"))
    else:
        v = (record.get("metrics") or {}).get(name) if record.get("status") == "completed" else None
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return LARGE if lower_is_better(name) else 0.0


def returned(cfg: DictConfig, record: dict) -> float | tuple[float, ...] | None:
    """What the Hydra app returns: the objective(s) in a search (a float, or a tuple for several); otherwise the
    validation accuracy, None for a run that did not complete."""
    names = objectives(cfg)
    if not names:
        return (record.get("metrics") or {}).get("val/accuracy")
    values = tuple(value(name, record) for name in names)
    return values[0] if len(values) == 1 else values


def check(config: DictConfig, loader: ConfigLoader) -> int:
    """Check a search before its first trial: objectives match the sweeper's directions, every choice of a config
    group is an option of it, and the fixed overrides with the first value of each searched one compose and resolve
    (a typo in a key would otherwise fail every trial). Which combinations build is left to the trials. Raises
    ValueError (or Hydra's composition errors); returns the number of searched parameters."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import CategoricalDistribution

    names = objectives(config)
    directions = config.hydra.sweeper.direction
    directions = [str(d) for d in (directions if OmegaConf.is_list(directions) else [directions])]
    directions = [d.rsplit(".", 1)[-1] for d in directions]  # Direction.maximize -> maximize
    if names and len(names) != len(directions):
        raise ValueError(
            f"search.objectives={names} has {len(names)} objectives but hydra.sweeper.direction="
            f"{directions} has {len(directions)}"
        )
    for name, direction in zip(names, directions, strict=False):
        want = "minimize" if lower_is_better(name) else "maximize"
        if direction != want:
            raise ValueError(f"search.objectives: {name} is {want}d, but hydra.sweeper.direction says {direction}")

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.params or {}).items()]
    space, fixed = create_params_from_overrides([*params, *config.hydra.overrides.task])  # as the sweeper does
    first, repository = {}, getattr(loader, "repository", loader)  # Hydra's repository: no re-parse per group
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            options = repository.get_group_options(key.lstrip("+~"))
            unknown = [c for c in dist.choices if options and str(c) not in options]
            if unknown:
                raise ValueError(
                    f"hydra.sweeper.params.{key}: no option {', '.join(map(str, unknown))} "
                    f"(available: {', '.join(options)})"
                )
            first[key] = dist.choices[0]
        else:
            first[key] = dist.low
    overrides = [f"{k}={v}" for k, v in {**fixed, **first}.items()]
    master = HydraConfig.instance().cfg
    try:
        job_cfg = loader.load_sweep_config(master_config=config, sweep_overrides=overrides)
        HydraConfig.instance().set_config(job_cfg)  # as the launcher will, for ${hydra:...}
        with read_write(job_cfg), open_dict(job_cfg):
            del job_cfg["hydra"]
        OmegaConf.to_container(job_cfg, resolve=True)
    finally:
        HydraConfig.instance().cfg = master
    return len(space)
