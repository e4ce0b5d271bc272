"""Hydra callbacks: print and save the leaderboard (and its plots) at the end of every multirun."""

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("archbench")


class Leaderboard(Callback):
    """Writes leaderboard.<format> for each of `formats` and, with `plots`, heatmap.png and curves.png into the
    sweep folder; `split`, `select`, `group_by` and `aggregate` as archbench-board's options (e.g. a MAD suite sets
    select: [trainer.lr, trainer.weight_decay] and aggregate: task.family; Mamba's suite split: test*, a column per
    test length). A board that cannot be built is a warning, never a failed sweep."""

    def __init__(
        self,
        metric: str = "accuracy",
        split: str = "test",
        select: list[str] | None = None,
        group_by: str | None = None,
        aggregate: str | None = None,
        formats: list[str] | None = None,
        plots: bool = True,
    ):
        self.metric, self.select, self.group_by, self.aggregate = metric, list(select or []), group_by, aggregate
        self.split = split
        self.formats, self.plots = list(formats or ["md", "csv", "html"]), plots

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        # pandas, scipy, matplotlib: loaded when a sweep ends, not at every start
        from harness.record import results
        from harness.report import board, race, render

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            found = results.scan([sweep_dir])
            records = found.records
            result = board.build(
                records,
                self.metric,
                self.split,
                select=self.select,
                group_by=self.group_by,
                aggregate=self.aggregate,
                found=found,
            )
        except Exception as e:  # a broken board must not hide the runs themselves
            log.warning("no leaderboard for %s: %s", sweep_dir, e)
            return
        race.mark(result, getattr(config.hydra, "sweeper", None))  # a race's board: its decisions, each cell's seeds
        plot_dir = None
        if self.plots:
            try:
                from harness.report import plots

                plot_dir = sweep_dir / "plots"
                plots.all_plots(result, records, plot_dir)
            except Exception as e:
                log.warning("no plots for %s: %s", sweep_dir, e)
        written = render.write(result, sweep_dir, self.formats, plot_dir)
        print(f"\n{render.markdown(result)}\n\nwritten: {', '.join(p.name for p in written)} in {sweep_dir}")
