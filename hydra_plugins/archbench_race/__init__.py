"""Hydra finds sweepers only in the hydra_plugins namespace: this names archbench's race sweeper there. The sweeper
is harness/run/race.py, the procedure it follows harness/report/race.py."""

from harness.run import race


class RaceSweeper(race.RaceSweeper):
    __doc__ = race.RaceSweeper.__doc__
