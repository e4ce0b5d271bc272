"""Hydra callbacks: print and save the leaderboard at the end of every multirun."""

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

from harness import board

log = logging.getLogger("archbench")


class Leaderboard(Callback):
    def __init__(self, metric: str = "accuracy", select: list[str] | None = None):
        self.metric, self.select = metric, list(select or [])

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            long, table = board.leaderboard([sweep_dir], self.metric, self.select)
        except (SystemExit, Exception) as e:  # a broken board must not hide the runs themselves
            log.warning("no leaderboard for %s: %s", sweep_dir, e)
            return
        board.write(long, table, sweep_dir, self.metric)
        print(f"\n{board.render(table, self.metric)}\n\nwritten to {sweep_dir}/leaderboard.md and .csv")
