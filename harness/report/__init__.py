"""Reporting: the leaderboard, its statistics, views, rendering, plots and Pareto fronts, the wandb reader, the race
sweeper's decisions and the paper reproductions, behind `archbench-board` and `archbench-reproduce`. Reads result
records (harness/record/); imports nothing of harness/run/."""
