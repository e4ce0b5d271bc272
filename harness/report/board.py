"""The leaderboard of a set of result records (`build`, `leaderboard`): the runs table (runs.py, named by
identities.py), the runs each cell reports on (selection.py), the cells (cells.py), the wide table and legend
(table.py), the views, and an account of every record file read; `archbench-board` is harness/report/cli.py.

`archbench-board DIR...` (or `--wandb ENTITY/PROJECT`): the leaderboard of a set of result records.

Rows are model variants (the config choices and swept fields that differ between runs), columns are task settings
(the task and its swept fields, optionally split by `--group-by KEY`), cells are the test metric over seeds: mean,
std, Student-t 95% confidence interval, for accuracy how many seeds solve the task, and whether the cell is
worse than its column's best by more than a practical margin (a permutation test with a family-wise error rate of at
most alpha over the column: harness/report/marking.py). Rows are ordered by average rank over the columns. With
`--select KEY` (e.g. trainer.lr) the runs of a cell are grouped by KEY, the value with the best mean validation
metric is chosen, and test is reported on that choice, as Zoology and MAD report the best over a learning-rate grid.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.record import keys as record_keys
from harness.record.results import Scan, scan
from harness.report import BoardError, marking, tuning, views
from harness.report import scaling as scaling_lib
from harness.report import sensitivity as sensitivity_lib
from harness.report.cells import summarize
from harness.report.runs import by_split, runs_frame, with_columns
from harness.report.selection import choose, grid_text
from harness.report.table import wide

log = logging.getLogger(__name__)

SUPERSEDED = "its config ran again under newer code (harness/record/code.py)"


@dataclass
class Board:
    """Everything one call of archbench-board shows: the runs (and those chosen), the cells, the wide table, its
    legend, optional views (name -> (table, legend)) and the options it was built with."""

    runs: pd.DataFrame
    chosen: pd.DataFrame
    long: pd.DataFrame
    table: pd.DataFrame
    legend: list[str]
    options: dict
    views: dict[str, tuple[pd.DataFrame, list[str]]] = field(default_factory=dict)
    accounting: str = ""  # how many record files were read and used
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why it is not on the board)
    files: pd.DataFrame | None = None  # every record file read and what became of it (leaderboard_records.csv)


def build(
    records: list[dict],
    metric: str = "accuracy",
    split: str = "test",
    select: Sequence[str] = (),
    group_by: str | None = None,
    matched: str | None = None,
    size: Sequence[str] = record_keys.SIZE_KEYS,
    aggregate: str | None = None,
    found: Scan | None = None,
    delta: float | None = None,
    solved: float = marking.SOLVED,
    sensitivity: str | None = None,
    scaling: str | None = None,
) -> Board:
    """The leaderboard of `records`; `matched` (params | flops) and `aggregate` (a config key) add views. A `split`
    with a * reports every matching split (test* : the training length and every longer test length). `found` is
    the scan the records came from: the board then accounts for every file it read. `delta`: the marking's
    practical margin (None: the metric's default); `solved`: the accuracy at which a seed counts as solving."""
    if not records:
        raise BoardError("no result records")
    found = found or Scan(records, len(records))
    given, group = list(select), [group_by] if group_by else []
    select = tuning.automatic(records, given)  # the suite's declared grid (tune:) unless --select says otherwise
    shown = [k for k in (tuning.declared(records) or tuning.TUNED_BY_DEFAULT) if k not in select]
    size = tuple(dict.fromkeys([*size, *([scaling] if scaling else [])]))  # a family spans the scaled key
    runs = runs_frame(
        records,
        keys=[*select, *group, *([aggregate] if aggregate else []), *([scaling] if scaling else []), *shown],
        hide=[*select, *group],
        size=size,
    )
    runs, split = by_split(runs, split, metric)
    runs = with_columns(runs, group_by)
    chosen, selection = choose(runs, metric, select)
    unplaced = _unplaced(chosen, f"metric:{split}/{metric}")
    chosen = chosen[~chosen.index.isin(unplaced.index)]
    long = summarize(runs, chosen, selection, metric, split, group_by, delta=delta, solved=solved)
    ok = runs[runs.status == "completed"]
    grid = grid_text(ok, select) if select else ""
    table, legend = wide(long, metric, split, select, group_by, grid)
    if (tuned := tuning.legend(runs, records, select, given)) is not None:
        legend.append(tuned)
    skipped, accounting = _not_on_the_board(found, unplaced, f"{split}/{metric}")
    options = {"metric": metric, "split": split, "select": select, "group_by": group_by, "size": tuple(size)}
    options |= {"delta": float(long["delta"].iloc[0]) if len(long) else delta, "solved": solved}
    options.update(sensitivity=sensitivity, scaling=scaling)
    board = Board(
        runs,
        chosen,
        long,
        table,
        legend,
        options,
        accounting=accounting,
        skipped=skipped,
        files=_files(found, runs, unplaced),
    )
    _add_views(board, records, matched=matched, aggregate=aggregate, grid=grid)
    return board


def _not_on_the_board(found: Scan, unplaced: pd.DataFrame, reported: str) -> tuple[list[tuple[str, str]], str]:
    """Every record file read but not counted, and why (skipped by the scan, superseded, or completed without the
    `reported` metric: each of those also a warning); and the line that accounts for every file read."""
    listed = [*found.skipped, *((p, f"superseded: {SUPERSEDED} ({kept})") for p, kept in found.superseded)]
    without = [
        (p, f"completed, but has no {reported}: not counted in its cell") for p in dict.fromkeys(unplaced["path"])
    ]
    for path, why in without:
        log.warning("not placed on the board: %s: %s", path, why)
    accounting = found.summary() + (f"; {len(without)} completed without {reported} (listed below)" if without else "")
    return [*listed, *without], accounting


def _add_views(board: Board, records: list[dict], matched: str | None, aggregate: str | None, grid: str) -> None:
    """The views asked for beside the table: matched compute, an aggregate, sensitivity to a key, scaling fits."""
    o = board.options
    metric, split, size = o["metric"], o["split"], o["size"]
    if matched:
        board.views["matched"] = views.matched(board.long, matched, metric, split, size)
    if aggregate:
        board.views["aggregate"] = views.aggregate(board.long, board.runs, aggregate, metric, split, grid)
    if key := o["sensitivity"]:
        points = sensitivity_points(records, board, key)
        board.views["sensitivity"] = sensitivity_lib.view(
            points, key, metric, split, o["select"], list(board.table.index)
        )
    if o["scaling"]:
        board.views.update(scaling_lib.view(board.chosen, o["scaling"], metric, split, size))


def sensitivity_points(records: list[dict], board: Board, key: str) -> pd.DataFrame:
    """The points of the sensitivity view of `key` (harness/report/sensitivity.py) for the records of `board`."""
    o = board.options
    hide = [*o["select"], key, *([o["group_by"]] if o["group_by"] else [])]
    runs = runs_frame(records, keys=list(dict.fromkeys(hide)), hide=hide, size=o["size"])
    runs, split = by_split(runs, o["split"], o["metric"])
    return sensitivity_lib.points(with_columns(runs, o["group_by"]), key, o["metric"], split, o["select"])


def _unplaced(chosen: pd.DataFrame, target: str) -> pd.DataFrame:
    """Completed runs chosen for a cell that lack the metric reported: an error shown, never a silent NaN."""
    if chosen.empty or target not in chosen:  # no run has it: summarize says which metrics there are
        return chosen.iloc[0:0]
    return chosen[pd.to_numeric(chosen[target], errors="coerce").isna()]


def _files(found: Scan, runs: pd.DataFrame, unplaced: pd.DataFrame) -> pd.DataFrame:
    """Every record file read: used (in which cell), a duplicate of a run counted once, or skipped and why."""
    rows = [
        {"path": p, "status": "skipped", "reason": why, "variant": None, "column": None} for p, why in found.skipped
    ]
    rows += [
        {"path": p, "status": "superseded", "reason": f"{SUPERSEDED}: {kept} counted", "variant": None, "column": None}
        for p, kept in found.superseded
    ]
    rows += [
        {
            "path": p,
            "status": "duplicate",
            "reason": f"the same run as {kept}, counted once",
            "variant": None,
            "column": None,
        }
        for p, kept in found.duplicates
    ]
    bad = set(unplaced["path"])
    for r in runs.drop_duplicates("path").itertuples(index=False):
        placed = r.path not in bad
        rows.append(
            {
                "path": r.path,
                "status": "used" if placed else "skipped",
                "reason": None if placed else "completed, but without the metric reported",
                "variant": r.variant,
                "column": r.column,
            }
        )
    return pd.DataFrame(rows, columns=["path", "status", "reason", "variant", "column"])


def leaderboard(roots: Sequence[str | Path], metric: str = "accuracy", select: Sequence[str] = (), **options) -> Board:
    found = scan(roots)
    if not found.records:
        raise BoardError(f"no result records under {', '.join(map(str, roots))}")
    return build(found.records, metric, select=select, found=found, **options)
