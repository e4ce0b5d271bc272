"""A board's cells: per (variant, column), the reported metric over the chosen runs' seeds (mean, std, Student-t
interval, seeds that solve the task), failures, the selection made, the marking against the column's best
(harness/report/marking.py), ranks and mean costs."""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.report import BoardError, marking, stats
from harness.report.costs import OLD, RECOUNTED
from harness.report.runs import with_columns
from harness.report.selection import choose
from tasks.registry import LOWER_IS_BETTER

# cost columns of a cell: mean over its chosen runs, each run's counted as harness/report/costs.py says
# cost columns of a cell: mean over its chosen runs, each run's counted as harness/report/costs.py says
COSTS = (
    "params",
    "params_non_embedding",
    "params_embedding",
    "flops_per_token",
    "head_flops_per_scored",
    "tokens_seen",
    "train_flops",
    "wall_seconds",
    "tokens_per_second",
    "peak_memory_bytes",
)


def cells(
    runs: pd.DataFrame,
    metric: str = "accuracy",
    split: str = "test",
    select: Sequence[str] = (),
    group_by: str | None = None,
    alpha: float = marking.ALPHA,
) -> pd.DataFrame:
    """Long table: one row per (variant, column) with mean, std, CI, n of <split>/<metric> over the chosen runs,
    failures, the selection, the marking against the column's best (harness/report/marking.py), rank and costs."""
    runs = with_columns(runs, group_by)
    return summarize(runs, *choose(runs, metric, select), metric, split, group_by, alpha)


def summarize(
    runs: pd.DataFrame,
    chosen: pd.DataFrame,
    selection: pd.DataFrame,
    metric: str,
    split: str,
    group_by: str | None,
    alpha: float = marking.ALPHA,
    delta: float | None = None,
    solved: float = marking.SOLVED,
) -> pd.DataFrame:
    """The cells of `runs` (with columns) from the `chosen` runs and the `selection` made: see `cells`. `delta` is
    the practical-equivalence margin of the marking (None: the metric's default, marking.DELTA); for accuracy,
    `solved` counts each cell's seeds at or above it (column `solved`)."""
    target = f"metric:{split}/{metric}"
    if target not in chosen and not chosen.empty:
        have = sorted(c.removeprefix("metric:") for c in runs if c.startswith("metric:"))
        raise BoardError(f"no metric {split}/{metric} in the records (they have: {', '.join(have)})")
    cell = ["variant", "column"]
    first = runs.groupby(cell, sort=False)[["family", "setting", "task", *([group_by] if group_by else [])]].first()
    out = first.join(runs[runs.status != "completed"].groupby(cell).size().rename("failed")).reset_index()
    out["failed"] = out["failed"].fillna(0).astype(int)
    g = chosen.assign(value=chosen[target] if target in chosen else np.nan).groupby(cell, sort=False)
    agg = g["value"].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    for c in COSTS:
        if f"cost:{c}" in chosen:
            agg[c] = g[f"cost:{c}"].mean()
    if "counting" in chosen:  # runs whose costs were recounted from their config, or kept as counted (costs.py)
        for how in (RECOUNTED, OLD):
            agg[f"costs_{how}"] = g["counting"].agg(lambda c, how=how: int((c == how).sum()))
    out = out.merge(agg.reset_index(), on=cell, how="left").merge(selection, on=cell, how="left")
    out["n"] = out["n"].fillna(0).astype(int)
    out["ci_lo"], out["ci_hi"] = stats.t_interval(
        out["mean"], out["std"], out["n"], bounds=(0.0, 1.0) if metric == "accuracy" else None
    )
    higher = metric not in LOWER_IS_BETTER
    key = out["variant"] + "\x00" + out["column"]
    values = chosen.assign(
        cell=chosen["variant"] + "\x00" + chosen["column"],
        value=pd.to_numeric(chosen[target], errors="coerce") if target in chosen else np.nan,
    )
    if metric == "accuracy":
        out["solved"] = key.map(marking.solved(values["value"], values["cell"], solved)).fillna(0).astype(int)
        out["solved_at"] = solved
    delta = marking.delta_for(metric) if delta is None else delta
    tests = marking.versus_best(out.assign(cell=key), values[["cell", "seed", "value"]], "column", higher, alpha, delta)
    out = out.join(tests).assign(alpha=alpha, delta=delta)
    # ranks over every (variant, column) pair: a cell that was never run ranks last, like one whose runs all
    # failed, so that a variant run only on an easy task does not top the average
    every = pd.MultiIndex.from_product([out["variant"].unique(), out["column"].unique()], names=cell)
    grid = out.set_index(cell)[["mean"]].reindex(every).reset_index()
    grid["rank"] = stats.ranks(grid, "column", higher)
    out = out.merge(grid[[*cell, "rank"]], on=cell, how="left")
    return out.assign(avg_rank=out["variant"].map(grid.groupby("variant")["rank"].mean()))
