"""The race sweeper (`archbench -m hydra/sweeper=race ...`, docs/racing.md): it runs jobs, so it lives with the
running half; the procedure it follows (which cells are worse, what the view says) is a pure function of the
board's long table, harness/report/race.py.

Where the config declares tuned fields (`tune: [trainer.lr]`) and the sweep gives them a grid, the race first
spends its runs on the grid: successive halving per cell on validation (every grid point one seed, the best
1/eta of them one more seed, ... until one is left; Jamieson & Talwalkar 2016), ranked as the board's selection
ranks them (harness/report/tuning.py `ranked`), so the board chooses the same grid point; then the race over seeds
goes on at each cell's chosen point, starting from the seeds the halving gave it. A rerun replays both stages from
the records: every run it asks for again is found completed and skipped."""

import logging
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from harness import grammar
from harness.report import BoardError
from harness.report.race import decide, decisions_markdown, halving_line, values
from tasks.registry import LOWER_IS_BETTER

if TYPE_CHECKING:
    import pandas as pd
    from hydra.core.utils import JobReturn

log = logging.getLogger("archbench")

Cell = tuple[str, ...]


class RaceSweeper(Sweeper):
    """Hydra sweeper: see the module docstring. Options (hydra.sweeper.*): min_seeds, max_seeds, budget (runs in
    all, None for no limit), alpha, metric and split (what the race decides on: val by default, the board reports
    test), delta (the margin; None: the board's default for the metric), eta (the halving's keep-1/eta over a tuned
    grid), params."""

    def __init__(
        self,
        min_seeds: int = 2,
        max_seeds: int = 8,
        budget: int | None = None,
        alpha: float = 0.05,
        metric: str = "accuracy",
        split: str = "val",
        params: dict | None = None,
        delta: float | None = None,
        eta: int = 3,
    ) -> None:
        self.min_seeds, self.max_seeds, self.budget, self.alpha = min_seeds, max_seeds, budget, alpha
        self.metric, self.split, self.params = metric, split, dict(params or {})
        self.delta, self.eta = delta, eta
        self.config = self.launcher = self.hydra_context = None
        self.spent = 0  # runs asked for so far, completed ones found on disk included

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        if not 2 <= self.min_seeds <= self.max_seeds:  # checked here: Hydra would wrap an error of __init__
            raise HydraException(
                f"hydra.sweeper.min_seeds={self.min_seeds}, max_seeds={self.max_seeds}: a race "
                "needs 2 <= min_seeds <= max_seeds (Welch's test needs two seeds a side)"
            )
        if not 0 < self.alpha < 1:
            raise HydraException(f"hydra.sweeper.alpha={self.alpha} must be in (0, 1)")
        if not self.eta >= 2:
            raise HydraException(f"hydra.sweeper.eta={self.eta} must be 2 or more (the halving keeps 1/eta)")
        from harness.report.marking import delta_for

        self.delta = delta_for(self.metric) if self.delta is None else self.delta
        if not self.delta >= 0:
            raise HydraException(f"hydra.sweeper.delta={self.delta} must be 0 or more (the metric's units)")
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def cells(self, arguments: list[str]) -> dict[Cell, list[Cell]]:
        """Every combination of the sweep's overrides without a seed and without the tuned fields (a cell), each with
        its grid: the combinations of the tuned fields' overrides (one empty point where nothing is tuned)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        if any(o.get_key_element() == "seed" for o in parser.parse_overrides(arguments)):
            raise HydraException("seed: a race sets the seeds itself (0, 1, ... per cell); leave seed out")
        if "seed" in self.params:  # a suite's seeds (suite=quick hydra/sweeper=race): the race's replace them
            log.info("race: the seeds of hydra.sweeper.params (%s) are replaced by the race's", self.params["seed"])
        params = [f"{k}={v}" for k, v in self.params.items() if k != "seed"]
        tuned = set(self.config.get("tune") or [])
        grids: dict[Cell, list[Cell]] = {}
        for job in grammar.jobs([*params, *arguments], self.hydra_context.config_loader):
            is_tuned = [o.split("=", 1)[0].lstrip("+~") in tuned for o in job]
            cell = tuple(o for o, t in zip(job, is_tuned, strict=True) if not t)
            grids.setdefault(cell, []).append(tuple(o for o, t in zip(job, is_tuned, strict=True) if t))
        return grids

    def sweep(self, arguments: list[str]) -> "list[Sequence[JobReturn]]":
        from harness.record import results

        started = datetime.now(timezone.utc).isoformat()  # as the records' timestamps
        grids = self.cells(arguments)
        cells = list(grids)
        if "*" in self.split:
            raise HydraException(f"hydra.sweeper.split={self.split}: a race decides on one split")
        arms = max(len(g) for g in grids.values())
        first = len(cells) * (self.min_seeds if arms == 1 else arms)
        if self.budget is not None and self.budget < first:
            what = f"{self.min_seeds} seeds" if arms == 1 else f"{arms} grid points"
            raise HydraException(
                f"hydra.sweeper.budget={self.budget} is less than the first round: {len(cells)} cells x {what}"
            )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        higher = self.metric not in LOWER_IS_BETTER
        written: dict[Cell, list[Path]] = {cell: [] for cell in cells}  # the record each job of a cell wrote
        returns: list = []
        chosen, seeds = self.halve(grids, written, returns, higher)
        todo, reason, target = list(cells), "max_seeds", max(self.min_seeds, min(seeds.values()))
        long = None
        while True:
            batch = [[*cell, *chosen[cell], f"seed={s}"] for cell in todo for s in range(seeds[cell], target)]
            if self.budget is not None and self.spent + len(batch) > self.budget:
                reason = f"budget ({self.budget} runs)"
                break
            log.info("race: round to %d seeds, %d runs for %d cells", target, len(batch), len(todo))
            self.launch(batch, written, returns, len(chosen[todo[0]]) if todo else 0)
            for cell in todo:
                seeds[cell] = max(seeds[cell], target)
            long, row, runs = self.board(written)
            decided = decide(long, self.alpha, self.min_seeds, self.max_seeds, higher, self.delta, runs)
            todo = [cell for cell in cells if decided["open"].iloc[row[cell]]]
            if not todo:
                left = (decided["decision"] != "worse").groupby(decided["column"]).sum()
                reason = "every column decided" if (left == 1).all() else "max_seeds"
                break
            target += 1
        if long is None:  # the budget ended the race before its first look: the decisions of what ran
            long, row, runs = self.board(written)
        on = f"{self.split}/{self.metric}"
        args = (self.alpha, self.min_seeds, self.max_seeds, higher, self.delta, on, runs)
        text = decisions_markdown(long, *args)
        if arms > 1:
            text += "\n" + halving_line(self.eta, sorted(self.config.get("tune") or []), arms, self.spent, long)
        fresh = sum(
            (results.load_record(p) or {}).get("timestamps", {}).get("started", "") >= started
            for paths in written.values()
            for p in paths
        )
        text += f" ({fresh} trained by this call, the others completed before); stopped: {reason}"
        (sweep_dir / "race.md").write_text(text + "\n")
        print(f"\n{text}\n")
        return returns

    def launch(self, batch: list[list[str]], written: dict[Cell, list[Path]], returns: list, tuned: int) -> list[Path]:
        """Run `batch` (jobs ending in their tuned overrides, `tuned` of them, then the seed), noting each record
        under its cell; returns the records in the batch's order."""
        if not batch:
            return []
        self.validate_batch_is_legal(batch)
        returns.append(self.launcher.launch(batch, initial_job_idx=self.spent))
        self.spent += len(batch)
        paths = []
        for job, ret in zip(batch, returns[-1], strict=True):
            _ = ret.return_value  # re-raises what escaped a job, as Hydra's basic sweeper does
            paths.append(Path(ret.hydra_cfg.hydra.runtime.output_dir) / "result.json")
            written[tuple(job[: len(job) - 1 - tuned])].append(paths[-1])
        return paths

    def halve(
        self, grids: dict[Cell, list[Cell]], written: dict[Cell, list[Path]], returns: list, higher: bool
    ) -> tuple[dict[Cell, Cell], dict[Cell, int]]:
        """Successive halving over each cell's grid (see the module docstring): per cell, the grid point chosen and
        the seeds it has. A cell with a single point is chosen at once with no seeds."""
        alive = {cell: list(grid) for cell, grid in grids.items()}
        seeds = dict.fromkeys(grids, 0)
        runs: dict[Cell, list[tuple[Cell, Path]]] = {cell: [] for cell in grids}  # each halving run's point, record
        tuned = len(next(iter(grids.values()))[0])
        while any(len(points) > 1 for points in alive.values()):
            open_ = [cell for cell, points in alive.items() if len(points) > 1]
            batch = [[*cell, *point, f"seed={seeds[cell]}"] for cell in open_ for point in alive[cell]]
            if self.budget is not None and self.spent + len(batch) > self.budget:
                raise HydraException(
                    f"hydra.sweeper.budget={self.budget} ends the race before its tuned grid is halved to one "
                    f"point per cell ({self.spent + len(batch)} runs needed so far); raise the budget"
                )
            log.info(
                "race: halving round at seed %d, %d runs for %d cells", max(seeds.values()), len(batch), len(open_)
            )
            for job, path in zip(batch, self.launch(batch, written, returns, tuned), strict=True):
                runs[tuple(job[: len(job) - 1 - tuned])].append((tuple(job[len(job) - 1 - tuned : -1]), path))
            for cell in open_:
                seeds[cell] += 1
                alive[cell] = self.best(alive[cell], runs[cell], higher)
        return {cell: points[0] for cell, points in alive.items()}, seeds

    def best(self, points: list[Cell], runs: list[tuple[Cell, Path]], higher: bool) -> list[Cell]:
        """The best ceil(len(points) / eta) of `points` on the split raced, from the cell's halving runs so far (each
        with the point it ran: known from its job, not read back from the record)."""
        import pandas as pd

        from harness.record import results
        from harness.report import tuning

        rows = []
        for point, path in runs:
            if point not in points:  # eliminated at an earlier round
                continue
            record = results.load_record(path) or {}
            metrics, ok = record.get("metrics") or {}, record.get("status") == "completed"
            score = metrics.get(f"{self.split}/{self.metric}") if ok else None
            loss = metrics.get(f"{self.split}/loss") if ok else None
            rows.append(
                {
                    "point": "\0".join(point),
                    "score": math.nan if score is None else float(score) * (1 if higher else -1),
                    "failed": 0.0 if ok and score is not None and math.isfinite(score) else 1.0,
                    "tiebreak": math.nan if loss is None else -float(loss),
                }
            )
        keep = max(1, math.ceil(len(points) / self.eta))
        order = tuning.ranked(pd.DataFrame(rows), [], ["point"])["point"].tolist() if rows else []
        if not order:  # every point of the cell failed: keep the first, the race then records its failures
            return points[:1]
        by_name = {"\0".join(p): p for p in points}
        return [by_name[name] for name in order[:keep]]

    def board(self, written: dict[Cell, list[Path]]) -> tuple["pd.DataFrame", dict[Cell, int], "pd.DataFrame"]:
        """The board's long table of the race's records, per cell the position of its row there, and the runs'
        values (for the paired tests). A cell is found through the records its jobs wrote (a skipped run's is a
        copy of the earlier record)."""
        from harness.record import results
        from harness.report import board

        records = results.load_records([self.config.hydra.sweep.dir])
        try:
            b = board.build(records, self.metric, self.split)
        except BoardError as e:  # the board's one-line complaint (e.g. no such metric), as a config error
            raise HydraException(f"race: {e}") from None
        position = {key: i for i, key in enumerate(zip(b.long["variant"], b.long["column"], strict=True))}
        of_run = {
            rid: position[(v, c)]
            for rid, v, c in zip(b.runs["run_id"], b.runs["variant"], b.runs["column"], strict=True)
        }
        row, owner = {}, {}
        for cell, paths in written.items():
            own = [results.load_record(p) for p in paths]
            if None in own:
                raise HydraException(f"race: a run of {' '.join(cell)} wrote no readable record")
            rows = {of_run[r["run_id"]] for r in own}
            if len(rows) != 1:
                raise HydraException(f"race: the runs of {' '.join(cell)} fall into several cells of the board")
            [row[cell]] = rows
            if owner.setdefault(row[cell], cell) != cell:
                raise HydraException(
                    f"race: {' '.join(cell)} and {' '.join(owner[row[cell]])} are one cell of "
                    "the board; make what tells them apart a config group choice or a swept field"
                )
        return b.long, row, values(b.chosen, f"{self.split}/{self.metric}")
