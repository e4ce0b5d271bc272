"""The sweep grammar (`model/mixer=a,b task=x,y seed=0,1`) expanded into its jobs, as Hydra's basic sweeper does, on
Hydra's public override parser. Preflight checks these jobs before any of them runs (harness/run/preflight.py); the race
sweeper takes them as its cells (harness/report/race.py). A key given twice keeps its first place and its last value.
"""

import itertools

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

# the sweepers whose jobs are this grammar's product: Hydra's default and the race (conf/hydra/sweeper/race.yaml;
# Hydra instantiates plugins only from hydra_plugins.*)
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
RACE_SWEEPER = "hydra_plugins.archbench_race.RaceSweeper"


def jobs(overrides: list[str], config_loader: ConfigLoader | None = None) -> list[list[str]]:
    """Every job of the sweep `overrides`: one `key=value` per key, in the product's order (the last key varies
    fastest). HydraException for a range or interval sweep, which only a search sweeper can sample."""
    choices: dict[str, list[str]] = {}
    for o in OverridesParser.create(config_loader=config_loader).parse_overrides(overrides):
        key = o.get_key_element()
        if not o.is_sweep_override():
            choices[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            raise HydraException(f"{key}: a range or interval sweep needs a search sweeper (conf/hparams_search/)")
    return [list(job) for job in itertools.product(*choices.values())]
