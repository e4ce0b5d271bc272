"""Other views of the leaderboard's cells: the metric at matched compute (equal non-embedding parameters or equal
training FLOPs, Kaplan et al. 2020's axes), and settings aggregated by a config key (MAD's score, Poli et al.
2024: best over the optimizer grid per setting, mean over a task's settings, mean over tasks)."""

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from harness.report.table import si
from tasks.registry import LOWER_IS_BETTER


def _round(value: float, up: bool) -> float:
    """To 2 significant figures, rounding up or down so that a budget stays inside the measured range."""
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return (math.ceil if up else math.floor)(value / scale) * scale


def budgets(low: float, high: float, k: int) -> np.ndarray:
    """k log-spaced budgets from low to high, rounded to 2 significant figures inward."""
    lo, hi = _round(low, up=True), _round(high, up=False)
    if k < 2 or lo >= hi:
        return np.geomspace(low, high, max(k, 2))
    inner = [float(f"{b:.2g}") for b in np.geomspace(lo, hi, k)[1:-1]]
    return np.array([lo, *inner, hi])


def interpolate(xs: ArrayLike, ys: ArrayLike, at: np.ndarray) -> np.ndarray:
    """y at `at`, linear in log(x) between measured points, NaN outside [min x, max x] (no extrapolation); equal x
    values are averaged."""
    frame = pd.DataFrame({"x": np.log(np.asarray(xs, float)), "y": ys}).groupby("x")["y"].mean()
    x, y, t = frame.index.to_numpy(), frame.to_numpy(), np.log(at)
    inside = (t >= x[0] - 1e-9) & (t <= x[-1] + 1e-9)
    return np.where(inside, np.interp(t, x, y), np.nan)


def matched(
    long: pd.DataFrame, by: str, metric: str, split: str, size: Iterable[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Rows variant families (variants without their size fields), columns (setting, budget): each family's mean
    interpolated at common budgets of `by` (params: non-embedding parameters; flops: train_flops, the training
    compute: the backbone's FLOPs per token × tokens seen + the head's per scored target × targets scored)."""
    cost = {"params": "params_non_embedding", "flops": "train_flops"}[by]
    if cost not in long or long[cost].isna().all():
        cost = "params" if by == "params" else cost
    known = long.get(cost, pd.Series(np.nan, index=long.index)).notna()
    data, unknown = long[(long.n > 0) & known], long[(long.n > 0) & ~known]
    unit = "params" if by == "params" else "FLOPs"
    columns, skipped = {}, []
    for setting, cells in data.groupby("setting", sort=True):
        points = cells.groupby("family")[cost].nunique()
        k = int(points.max())
        if k < 2:
            skipped.append(setting)
            continue
        spans = cells[cells.family.map(points) >= 2].groupby("family")[cost].agg(["min", "max"])
        low, high = spans["min"].max(), spans["max"].min()  # the range every variant covers, if there is one
        if not low < high:
            low, high = cells[cost].min(), cells[cost].max()
        at = budgets(low, high, k)
        for b in at:
            columns[f"{setting} @ {si(b)} {unit}"] = {}
        for family, g in cells.groupby("family"):
            for b, v in zip(at, interpolate(g[cost], g["mean"], at), strict=True):
                columns[f"{setting} @ {si(b)} {unit}"][family] = v
    values = pd.DataFrame(columns)
    what = (
        "non-embedding parameters"
        if cost == "params_non_embedding"
        else (
            "total parameters"
            if cost == "params"
            else "training FLOPs (backbone FLOPs/token × tokens seen + head FLOPs × targets scored)"
        )
    )
    lines = [
        f"matched {by}: {split}/{metric} at equal {what}, by linear interpolation of each variant's cell mean "
        f"in log({unit}) between the sizes it was run at (variants grouped over {', '.join(size)}), at "
        f"budgets log-spaced over the range all variants cover (all their ranges where they do not overlap); "
        f"blank outside a variant's measured range (no extrapolation)"
    ]
    if skipped:
        lines.append(f"not shown (fewer than 2 sizes of any variant): {', '.join(skipped)}")
    if len(unknown):
        lines.append(
            f"not shown: {len(unknown)} cell{'s' * (len(unknown) != 1)} without {cost} (records written before "
            "the trainer counted its scored targets; rerun them to place them)"
        )
    if values.empty:
        return values, lines
    ranks = values.rank(ascending=metric in LOWER_IS_BETTER, method="average").mean(axis=1)
    values = values.loc[ranks.sort_values(kind="stable").index]
    table = values.map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    table.index.name = "variant"
    return table, lines


def aggregate(
    long: pd.DataFrame, runs: pd.DataFrame, key: str, metric: str, split: str, grid: str = ""
) -> tuple[pd.DataFrame, list[str]]:
    """Rows variants, columns the values of config `key` (e.g. task.family; a setting without it counts under its
    task label): the mean over that value's settings of the cell means, then `score`, the mean over the columns."""
    family = runs.groupby("setting")[key].first().reindex(long["setting"]).to_numpy() if key in runs else None
    long = long.assign(family=np.where(pd.isna(family), long["task"], family) if family is not None else long["task"])
    total = long.groupby("family")["column"].nunique()
    scored = long[long.n > 0]
    means = scored.pivot_table(index="variant", columns="family", values="mean", aggfunc="mean")
    have = scored.pivot_table(index="variant", columns="family", values="column", aggfunc="nunique")
    means = means.reindex(index=sorted(long["variant"].unique()), columns=sorted(total.index))
    have = have.reindex_like(means).fillna(0).astype(int)
    score = means.mean(axis=1)
    complete = (have == total.reindex(means.columns)).all(axis=1)
    order = score.sort_values(ascending=metric in LOWER_IS_BETTER, kind="stable", na_position="last").index
    table = pd.DataFrame(index=order)
    for f in means.columns:
        table[f] = [_text(means.loc[v, f], have.loc[v, f], total[f]) for v in order]
    table["score"] = [
        f"{score[v]:.3f}" + ("" if complete[v] else " (incomplete)") if pd.notna(score[v]) else "" for v in order
    ]
    table.index.name = "variant"
    lines = [
        f"score by {key}: per setting (task + swept task fields) the cell's {split}/{metric}"
        + (f", best over {grid} on val/{metric}" if grid else "")
        + f"; mean over the settings of each {key} (columns), then over the columns (score). MAD selects and "
        "reports on its test set; archbench selects on val and reports test",
        "(k/K) = only k of the K settings have a completed run",
    ]
    return table, lines


def _text(value: float, have: int, total: int) -> str:
    if pd.isna(value):
        return ""
    return f"{value:.3f}" + (f" ({have}/{total})" if have < total else "")
