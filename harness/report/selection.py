"""Which runs a cell reports on: with `--select KEY` (e.g. trainer.lr) the runs of a cell are grouped by KEY, the value
with the best mean validation metric is chosen, and test is reported on that choice, as Zoology and MAD report the
best over a learning-rate grid; a choice at the edge of the grid searched is flagged (the best may lie outside)."""

from collections.abc import Iterable, Sequence

import pandas as pd

from harness.report import BoardError, tuning
from tasks.registry import LOWER_IS_BETTER

EDGE_MIN = 3  # with fewer values searched every choice is at an edge: only grids of 3 or more are flagged


def choose(runs: pd.DataFrame, metric: str, select: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The completed runs each cell reports on: with `select`, those of the value of the `select` fields ranked first
    by harness/report/tuning.py `ranked` (the order the race's halving uses): the most runs, then the fewest
    failed or diverged (an lr that diverged on one seed of three does not win on the two that survived), then the
    best mean val/<metric> over seeds, then the lowest mean val/loss. Also returns, per cell, the chosen value and
    the grid searched."""
    ok = runs[runs.status == "completed"]
    cell = ["variant", "column"]
    if not select or ok.empty:
        return ok, pd.DataFrame(columns=[*cell, "selected", "edge", "grid", "searched"])
    val = f"metric:val/{metric}"
    if val not in ok:
        raise BoardError(f"--select needs {val} in the records' metrics")
    sign = -1 if metric in LOWER_IS_BETTER else 1
    keys = [*cell, *select]
    loss = pd.to_numeric(runs["metric:val/loss"], errors="coerce") if "metric:val/loss" in runs else float("nan")
    completed = runs.status == "completed"
    scored = runs.assign(
        score=pd.to_numeric(runs[val], errors="coerce").where(completed) * sign,
        failed=(~completed).astype(float),
        tiebreak=-pd.Series(loss, index=runs.index).where(completed),
    )
    means = tuning.ranked(scored, cell, select)  # grid points with a completed run, best first per cell
    best = means.drop_duplicates(cell).copy()
    as_index = lambda f: pd.MultiIndex.from_frame(f[keys].astype(str))
    chosen = ok[as_index(ok).isin(as_index(best))]
    best["selected"] = [
        " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(select, row, strict=True))
        for row in best[list(select)].itertuples(index=False)
    ]
    values = [ok.groupby(cell, sort=False)[k].unique() for k in select]
    rows = zip(*values, strict=True)
    grid = pd.Series(
        [" ".join(_grid_part(k, v) for k, v in zip(select, row, strict=True)) for row in rows],
        index=values[0].index,
        name="grid",
    )
    searched = means.groupby(cell, sort=False).size().rename("searched")  # grid points with a completed run
    best["edge"] = edges(best, means, select, cell)  # chosen at the lowest or highest value searched
    return chosen, best[[*cell, "selected", "edge"]].merge(grid.reset_index(), on=cell).merge(
        searched.reset_index(), on=cell
    )


def grid_text(frame: pd.DataFrame, select: Iterable[str]) -> str:
    """The values of the `select` fields in `frame`, e.g. "trainer.lr∈{0.001,0.01}"."""
    return " ".join(_grid_part(k, frame[k].unique()) for k in select)


def _grid_part(key: str, values: Iterable[object]) -> str:
    return f"{key}∈{{{','.join(map(str, sorted(set(values), key=order_key)))}}}"


def number(value: object) -> float | None:
    """`value` as a float, None where it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def order_key(value: object) -> tuple[int, float, str]:
    """Sort key: numbers by value first, then the rest by text."""
    return (0, x, "") if (x := number(value)) is not None else (1, 0.0, str(value))


def edges(best: pd.DataFrame, means: pd.DataFrame, select: Sequence[str], cell: Sequence[str]) -> pd.Series:
    """Per chosen cell of `best` (a row per cell with its chosen value of each `select` key), the keys whose chosen
    value is the lowest or the highest numeric value among the cell's searched grid points (`means`: a row per grid
    point with a completed run), as text for the board ("edge", or "edge: lr" with several keys); "" where none
    is, where the key is not numeric, or where the cell searched fewer than EDGE_MIN values of it."""
    if best.empty:
        return pd.Series([], dtype=object, index=best.index)
    out = []
    grids = means.groupby(list(cell), sort=False, dropna=False)
    for row in best.itertuples(index=False):
        point = dict(zip(best.columns, row, strict=True))
        searched = grids.get_group(tuple(point[c] for c in cell))
        at_edge = []
        for key in select:
            values = [v for v in (number(x) for x in searched[key].unique()) if v is not None]
            chosen = number(point[key])
            if chosen is not None and len(values) >= EDGE_MIN and chosen in (min(values), max(values)):
                at_edge.append(key.rsplit(".", 1)[-1])
        out.append("" if not at_edge else "edge" if len(select) == 1 else f"edge: {', '.join(at_edge)}")
    return pd.Series(out, index=best.index, dtype=object)
