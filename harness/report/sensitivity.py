"""How the metric moves with one swept config key (`archbench-board DIR --sensitivity trainer.lr`): per variant and
column, the val and reported metric at each value of the key, mean and min–max over seeds (the flag where a
`--select` choice sits at the edge of the values searched is harness/report/selection.py's)."""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.report import BoardError
from harness.report.selection import choose, order_key
from tasks.registry import LOWER_IS_BETTER


def order(values: Sequence[object]) -> list[object]:
    """The distinct values, numbers by value first, then the rest by text."""
    unique = list(dict.fromkeys(v for v in values if not (isinstance(v, float) and np.isnan(v))))
    return sorted(unique, key=order_key)


def points(runs: pd.DataFrame, key: str, metric: str, split: str, select: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (variant, column, value of `key`) of a runs frame with columns (runs.with_columns) whose variants
    are named without `key` and `select`: val/<metric> and <split>/<metric> over the completed runs (mean, min, max),
    n, failed runs, and `chosen` where the value ranks first as selection.choose ranks it (most runs, fewest failures,
    best mean val). Other `select` keys are chosen per value on val (the profile over them)."""
    if key not in runs or runs[key].isna().all():
        raise BoardError(f"--sensitivity {key} is not a field of the runs' config")
    val, target = f"metric:val/{metric}", f"metric:{split}/{metric}"
    for name in (val, target):
        if name not in runs and (runs.status == "completed").any():
            raise BoardError(f"--sensitivity needs {name.removeprefix('metric:')} in the records' metrics")
        if name not in runs:  # no run completed: every point shows its failures
            runs = runs.assign(**{name: np.nan})
    runs = runs.assign(point=runs[key].map(str), base=runs["column"])
    runs = runs.assign(column=runs["base"] + "\x00" + runs["point"])  # a cell per value: choose over the others
    others = [k for k in select if k != key]
    chosen, _ = choose(runs, metric, others)
    cell = ["variant", "column"]
    failed = runs[runs.status != "completed"].groupby(cell).size().rename("failed")
    g = chosen.groupby(cell, sort=False)
    stats = pd.concat(
        [
            g[val].agg(["mean", "min", "max"]).add_prefix("val_"),
            g[target].agg(["mean", "min", "max"]).add_prefix("test_"),
            g[target].count().rename("n"),
        ],
        axis=1,
    )
    first = runs.groupby(cell, sort=False)[["base", "point", "setting", key]].first()
    out = first.join(stats).join(failed).join(runs.groupby(cell).size().rename("runs")).reset_index()
    out["failed"] = out["failed"].fillna(0).astype(int)
    out["n"] = out["n"].fillna(0).astype(int)
    out["column"] = out.pop("base")
    sign = -1 if metric in LOWER_IS_BETTER else 1
    ranked = out[out["n"] > 0].assign(rate=out["failed"] / out["runs"], score=out["val_mean"] * sign)
    ranked = ranked.sort_values(["runs", "rate", "score"], ascending=[False, True, False], kind="stable")
    out["chosen"] = out.index.isin(ranked.drop_duplicates(cell).index)
    return out.drop(columns="runs")


def view(
    points: pd.DataFrame, key: str, metric: str, split: str, select: Sequence[str] = (), rows: Sequence[str] = ()
) -> tuple[pd.DataFrame, list[str]]:
    """Rows (variant, column), in the order of `rows` (the board's variants) then by name; columns the values of
    `key`: "val mean [min, max] → split mean [min, max]", n where unusual, failures, the value chosen on val."""
    values = order(points[key].tolist())
    if len(values) < 2:
        raise BoardError(f"--sensitivity {key}: the runs have one value ({values[0] if values else 'none'})")
    short = key.rsplit(".", 1)[-1]
    scored = points[points.n > 0]
    n_usual = int(scored["n"].mode().max()) if len(scored) else 0
    rank = {v: i for i, v in enumerate(rows)}
    pairs = points.drop_duplicates(["variant", "column"])
    pairs = sorted(
        zip(pairs["variant"], pairs["column"], strict=True), key=lambda p: (p[1], rank.get(p[0], len(rank)), p[0])
    )
    index = {p: i for i, p in enumerate(pairs)}
    table = pd.DataFrame("", index=range(len(pairs)), columns=["column", *(f"{short}={v}" for v in values)])
    table["column"] = [c for _, c in pairs]
    for r in points.itertuples(index=False):
        table.loc[index[r.variant, r.column], f"{short}={r.point}"] = _text(r, n_usual)
    table.index = pd.Index([v for v, _ in pairs], name="variant")
    band = "min–max over seeds"
    lines = [
        f"sensitivity to {key}: per variant and column, val/{metric} mean [{band}] → {split}/{metric} mean "
        f"[{band}] at each value of {key}; n = {n_usual} seeds unless shown; (chosen) = the value with the best "
        f"mean val/{metric} (a value with more runs first; values whose runs failed more often rank lower), as "
        f"--select {key} chooses"
        + (
            f"; at each value the other --select keys ({', '.join(k for k in select if k != key)}) are chosen on val"
            if any(k != key for k in select)
            else ""
        ),
        f"with --plots DIR: sensitivity_{key}.png, val/{metric} against {key}, the {band} shaded",
    ]
    if points["failed"].any():
        lines.append("[k failed] = runs at that value that failed or diverged")
    return table, lines


def _text(r: object, n_usual: int) -> str:
    if r.n == 0:
        return f"failed ({r.failed})" if r.failed else ""
    text = (
        f"{r.val_mean:.3f} [{r.val_min:.3f}, {r.val_max:.3f}] → {r.test_mean:.3f} [{r.test_min:.3f}, {r.test_max:.3f}]"
    )
    if r.n != n_usual:
        text += f" n={r.n}"
    if r.failed:
        text += f" [{r.failed} failed]"
    return text + (" (chosen)" if r.chosen else "")
