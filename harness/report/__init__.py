"""Reporting: the leaderboard, its statistics, views, rendering, plots and Pareto fronts, the wandb reader, the race
sweeper's decisions and the paper reproductions, behind `archbench-board` and `archbench-reproduce`. Reads result
records (harness/record/); imports nothing of harness/run/."""


class BoardError(ValueError):
    """A board that cannot be made from these records (none found, no such metric, split or field): the library
    raises it with one line naming what is missing; `archbench-board` prints it and exits 2."""
