"""Racing (`archbench -m hydra/sweeper=race ...`): seeds go where the verdict is still open (docs/racing.md).

The sweep grammar is the ordinary one (`model/mixer=a,b,c task=x,y`); every combination is a cell. Each cell first
gets seeds 0..min_seeds-1; after each round the records are read back and, per column of the board (a task
setting), every variant is tested against the column's leader on the *validation* split by default (the board
reports test): one-sided t-test that it is below the leader by more than the practical margin delta (the board's,
harness/report/marking.py), paired on the seeds the two cells share (Welch's where they share fewer than 2), at
level alpha / (looks x rivals), looks = max_seeds - min_seeds + 1 (Bonferroni over the rounds and the rivals), so
the best variant of a column is marked worse with probability at most alpha however many rounds the race looks at.
A cell marked worse gets no more seeds; the others get one more seed each round, until their column has a single
survivor, max_seeds, or the budget. Seeds are consecutive, so every run is an ordinary run of an ordinary sweep:
skip-completed, resume, launchers and wandb work unchanged, and a rerun replays the race from its records.

The decisions are a function of the board's long table and the runs' values alone (`decide`): a cell with fewer
seeds than the most its column got was marked worse at the round it stopped; the others are tested afresh. Nothing
else is remembered.
"""

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from harness import grammar
from harness.report import BoardError
from tasks.registry import LOWER_IS_BETTER

if TYPE_CHECKING:  # pandas and the board: loaded when a race is decided, not at every start
    import pandas as pd
    from hydra.core.utils import JobReturn
    from numpy.typing import ArrayLike

    from harness.report.board import Board

log = logging.getLogger("archbench")


# --- the procedure: pure functions of the board's long table ------------------------------------------------------


def level(alpha: float, looks: int, variants: "ArrayLike") -> np.ndarray:
    """The level of each one-sided test: alpha spread over every look and every rival of the best (Bonferroni)."""
    return alpha / (looks * np.maximum(np.asarray(variants) - 1, 1))


def decide(
    long: "pd.DataFrame",
    alpha: float,
    min_seeds: int,
    max_seeds: int,
    higher_is_better: bool = True,
    delta: float = 0.0,
    values: "pd.DataFrame | None" = None,
) -> "pd.DataFrame":
    """Per cell of `long` (columns variant, column, mean, std, n, failed): seeds (runs launched = n + failed),
    decision (leader | tied | worse | untested), p (one-sided p-value of the leader being better by more than
    `delta`: paired t-test on the seeds both completed where `values` (variant, column, seed, value per run) are
    given and share 2 or more seeds, else Welch; NaN where not tested), paired, level (the test's level) and open
    (gets another seed). See the module docstring."""
    import pandas as pd

    from harness.report import stats

    out = long[["variant", "column", "mean", "std", "n"]].copy()
    out["seeds"] = long["n"] + long.get("failed", 0)
    most = out.groupby("column")["seeds"].transform("max")
    alive = out["seeds"] == most  # the others stopped at an earlier round: marked worse
    testable = alive & (out["n"] >= 2)
    score = out["mean"].where(testable) * (1 if higher_is_better else -1)
    best = score.groupby(out["column"]).transform("max")
    is_leader = testable & (score == best)
    is_leader &= ~is_leader.groupby(out["column"]).cumsum().gt(1)  # equal means: the first one leads
    lead = out[is_leader].set_index("column").reindex(out["column"])
    sign = 1 if higher_is_better else -1
    bar = lead["mean"].to_numpy() - sign * delta  # the leader's mean less the margin: worse means below this
    two_sided = stats.welch_p(out["mean"], out["std"], out["n"], bar, lead["std"].to_numpy(), lead["n"].to_numpy())
    below = sign * (bar - out["mean"].to_numpy()) > 0
    one_sided = np.where(below, two_sided / 2, 1 - two_sided / 2)
    paired = np.full(len(out), np.nan)
    if values is not None:  # the race's cells share their seeds: pair them
        p = stats.paired_p(values, out[is_leader], sign, delta)
        paired = p.reindex(pd.MultiIndex.from_frame(out[["variant", "column"]])).to_numpy()
    out["paired"] = testable & ~is_leader & ~np.isnan(paired)
    out["p"] = np.where(testable & ~is_leader, np.where(out["paired"], paired, one_sided), np.nan)
    out["level"] = level(alpha, max_seeds - min_seeds + 1, out.groupby("column")["variant"].transform("size"))
    worse = ~alive | (out["p"] < out["level"])
    out["decision"] = np.select([is_leader, worse, testable], ["leader", "worse", "tied"], "untested")
    survivors = (~worse).groupby(out["column"]).transform("sum")
    out["open"] = ~worse & (survivors > 1) & (out["seeds"] < max_seeds)
    return out


def view(
    long: "pd.DataFrame",
    alpha: float,
    min_seeds: int,
    max_seeds: int,
    higher_is_better: bool = True,
    delta: float = 0.0,
    on: str = "",
    values: "pd.DataFrame | None" = None,
) -> tuple["pd.DataFrame", list[str]]:
    """The decisions as a view of the board (rows variants, columns as on the board; each cell `mean decision p ·
    seeds`, the mean of the split decided `on`) and its legend: the test, its levels, and the runs spent against the
    runs a fixed allocation reaching the same decisions would have needed (every cell at the most seeds any cell
    got)."""
    import pandas as pd

    d = decide(long, alpha, min_seeds, max_seeds, higher_is_better, delta, values)

    def text(
        r: "pd.Series",
    ) -> str:  # a worse cell with fewer seeds than its column's most was marked at the round it stopped
        mean = "" if pd.isna(r["mean"]) else f"{r['mean']:.3f} "
        p = "" if pd.isna(r["p"]) else f" p={r['p']:.2g}"
        return f"{mean}{r['decision']}{p} · {r['seeds']} seeds"

    table = d.assign(text=d.apply(text, axis=1)).pivot(index="variant", columns="column", values="text")
    table = table.reindex(index=list(dict.fromkeys(d["variant"])), columns=list(dict.fromkeys(d["column"])))
    table.columns.name, table.index.name = None, "variant"
    looks = max_seeds - min_seeds + 1
    levels = ", ".join(f"{c}: {v:.3g}" for c, v in d.groupby("column", sort=False)["level"].first().items())
    spent, most = int(d["seeds"].sum()), int(d["seeds"].max())
    legend = [
        f"Race (docs/racing.md){f' decided on {on}' if on else ''}: seeds {min_seeds}..{max_seeds}, {looks} looks; "
        f"a cell is worse once a one-sided t-test ({'paired by seed' if d['paired'].any() else 'Welch, unpaired'}"
        f"{'; Welch where a cell shares < 2 seeds with the leader' if d['paired'].any() else ''}) puts it below its "
        "column's leader by more than "
        f"delta = {delta:g} at level α/(looks·rivals) ({levels}); the means shown are {on or 'those decided on'}; "
        "the best of a "
        f"column is marked worse with probability ≤ α = {alpha}. tied: not (yet) separable from the leader; a worse "
        "cell with fewer seeds than its column was marked at the round it stopped; p: vs the leader, one-sided.",
        f"runs spent: {spent}; a fixed allocation reaching the same decisions would have needed {len(d) * most} "
        f"(= {len(d)} cells × {most} seeds)",
    ]
    return table.fillna(""), legend


def decisions_markdown(long: "pd.DataFrame", *args: object, **options: object) -> str:
    """`view(long, *args, **options)` as Markdown: the table, then its legend."""
    table, legend = view(long, *args, **options)
    return table.to_markdown() + "\n\n" + "\n".join(legend)


def settings(sweeper: DictConfig | None) -> dict | None:
    """The race's settings from a sweep's `hydra.sweeper` node (multirun.yaml), None if the sweep was no race."""
    if sweeper is None or sweeper.get("_target_") != grammar.RACE_SWEEPER:
        return None
    from harness.report.marking import delta_for  # pandas: loaded when a race is read, not at every start

    defaults = {"min_seeds": 2, "max_seeds": 8, "alpha": 0.05, "metric": "accuracy", "split": "val"}  # as __init__
    race = {k: sweeper.get(k, v) if sweeper.get(k) is not None else v for k, v in defaults.items()}
    return race | {"delta": sweeper.get("delta") if sweeper.get("delta") is not None else delta_for(race["metric"])}


def mark(board: "Board", sweeper: DictConfig | None) -> bool:
    """Add the race's decisions to `board` as its view "race" if `sweeper` (a sweep's hydra.sweeper) was a race
    deciding on the board's metric (on the board's split, or on another one of the same runs, such as val where
    the board reports test); returns whether it did."""
    import pandas as pd

    from harness.report.board import summarize

    race = settings(sweeper)
    if race is None or race["metric"] != board.options["metric"] or "*" in board.options["split"]:
        return False
    long = board.long
    if race["split"] != board.options["split"]:  # the same cells and runs, the race's split
        none = pd.DataFrame(columns=["variant", "column", "selected"])
        try:
            long = summarize(board.runs, board.chosen, none, race["metric"], race["split"], board.options["group_by"])
        except BoardError:
            return False
    higher = race["metric"] not in LOWER_IS_BETTER
    on = f"{race['split']}/{race['metric']}"
    args = (race["alpha"], race["min_seeds"], race["max_seeds"], higher, race["delta"], on)
    board.views["race"] = view(long, *args, values=values(board.chosen, on))
    return True


def values(chosen: "pd.DataFrame", metric: str) -> "pd.DataFrame":
    """The value of `metric` (split/name) of each chosen run of a board: variant, column, seed, value."""
    import pandas as pd

    value = pd.to_numeric(chosen[f"metric:{metric}"], errors="coerce") if f"metric:{metric}" in chosen else None
    return chosen[["variant", "column", "seed"]].assign(value=value)


# --- the sweeper ---------------------------------------------------------------------------------------------------


class RaceSweeper(Sweeper):
    """Hydra sweeper: see the module docstring. Options (hydra.sweeper.*): min_seeds, max_seeds, budget (runs in
    all, None for no limit), alpha, metric and split (what the race decides on: val by default, the board reports
    test), delta (the margin; None: the board's default for the metric), params."""

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
    ) -> None:
        self.min_seeds, self.max_seeds, self.budget, self.alpha = min_seeds, max_seeds, budget, alpha
        self.metric, self.split, self.params = metric, split, dict(params or {})
        self.delta = delta
        self.config = self.launcher = self.hydra_context = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        if not 2 <= self.min_seeds <= self.max_seeds:  # checked here: Hydra would wrap an error of __init__
            raise HydraException(
                f"hydra.sweeper.min_seeds={self.min_seeds}, max_seeds={self.max_seeds}: a race "
                "needs 2 <= min_seeds <= max_seeds (Welch's test needs two seeds a side)"
            )
        if not 0 < self.alpha < 1:
            raise HydraException(f"hydra.sweeper.alpha={self.alpha} must be in (0, 1)")
        from harness.report.marking import delta_for

        self.delta = delta_for(self.metric) if self.delta is None else self.delta
        if not self.delta >= 0:
            raise HydraException(f"hydra.sweeper.delta={self.delta} must be 0 or more (the metric's units)")
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def cells(self, arguments: list[str]) -> list[tuple[str, ...]]:
        """Every combination of the sweep's overrides, without a seed: the race sets the seeds."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        if any(o.get_key_element() == "seed" for o in parser.parse_overrides(arguments)):
            raise HydraException("seed: a race sets the seeds itself (0, 1, ... per cell); leave seed out")
        if "seed" in self.params:  # a suite's seeds (suite=quick hydra/sweeper=race): the race's replace them
            log.info("race: the seeds of hydra.sweeper.params (%s) are replaced by the race's", self.params["seed"])
        params = [f"{k}={v}" for k, v in self.params.items() if k != "seed"]
        return [tuple(job) for job in grammar.jobs([*params, *arguments], self.hydra_context.config_loader)]

    def sweep(self, arguments: list[str]) -> "list[Sequence[JobReturn]]":
        from harness.record import results

        started = datetime.now(timezone.utc).isoformat()  # as the records' timestamps
        cells = self.cells(arguments)
        if "*" in self.split:
            raise HydraException(f"hydra.sweeper.split={self.split}: a race decides on one split")
        if self.budget is not None and self.budget < len(cells) * self.min_seeds:
            raise HydraException(
                f"hydra.sweeper.budget={self.budget} is less than the first round: {len(cells)} "
                f"cells x {self.min_seeds} seeds"
            )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        higher = self.metric not in LOWER_IS_BETTER
        seeds, todo, returns, reason = dict.fromkeys(cells, 0), list(cells), [], "max_seeds"
        written: dict[tuple, list[Path]] = {cell: [] for cell in cells}  # the record each job of a cell wrote
        target = self.min_seeds
        while True:
            batch = [[*cell, f"seed={s}"] for cell in todo for s in range(seeds[cell], target)]
            if self.budget is not None and sum(seeds.values()) + len(batch) > self.budget:
                reason = f"budget ({self.budget} runs)"
                break
            log.info("race: round to %d seeds, %d runs for %d cells", target, len(batch), len(todo))
            self.validate_batch_is_legal(batch)
            returns.append(self.launcher.launch(batch, initial_job_idx=sum(seeds.values())))
            for job, ret in zip(batch, returns[-1], strict=True):
                _ = ret.return_value  # re-raises what escaped a job, as Hydra's basic sweeper does
                written[tuple(job[:-1])].append(Path(ret.hydra_cfg.hydra.runtime.output_dir) / "result.json")
            for cell in todo:
                seeds[cell] = target
            long, row, runs = self.board(written)
            decided = decide(long, self.alpha, self.min_seeds, self.max_seeds, higher, self.delta, runs)
            todo = [cell for cell in cells if decided["open"].iloc[row[cell]]]
            if not todo:
                left = (decided["decision"] != "worse").groupby(decided["column"]).sum()
                reason = "every column decided" if (left == 1).all() else "max_seeds"
                break
            target += 1
        on = f"{self.split}/{self.metric}"
        args = (self.alpha, self.min_seeds, self.max_seeds, higher, self.delta, on, runs)
        text = decisions_markdown(long, *args)
        fresh = sum(
            (results.load_record(p) or {}).get("timestamps", {}).get("started", "") >= started
            for paths in written.values()
            for p in paths
        )
        text += f" ({fresh} trained by this call, the others completed before); stopped: {reason}"
        (sweep_dir / "race.md").write_text(text + "\n")
        print(f"\n{text}\n")
        return returns

    def board(self, written: dict[tuple, list[Path]]) -> tuple["pd.DataFrame", dict[tuple, int], "pd.DataFrame"]:
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
