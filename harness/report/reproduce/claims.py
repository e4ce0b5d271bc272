"""A paper's qualitative claims, checked on a side-by-side table (compare.side_by_side): which variant wins, which
orderings hold, how a gap moves along a field. Each check returns (PASS | FAIL | N/A, what it saw); N/A where the
table lacks the cells the claim speaks of, never a silent PASS. `value` names the column checked: ours or paper."""

import numpy as np
import pandas as pd

from harness.report.reproduce.compare import norm

PASS, FAIL, NA = "PASS", "FAIL", "N/A"


def _where(table: pd.DataFrame, where: dict | None, value: str) -> pd.DataFrame:
    """Rows matching every field=value of `where`; the values min and max mean the field's smallest and largest
    value among the rows that have a `value` (ours, or the paper's): the longest length we ran, not the paper's."""
    for key, want in (where or {}).items():
        if key not in table:
            raise ValueError(f"claim where: field {key!r} is not a field of the table ({', '.join(table.columns)})")
        if want in ("min", "max"):
            values = table.loc[table[value].notna(), key].dropna()
            want = (values.min() if want == "min" else values.max()) if len(values) else None
        table = table[table[key].map(norm) == norm(want)]
    return table


def _cells(table: pd.DataFrame, columns: list[str], value: str) -> pd.DataFrame:
    """variant x cell (the column fields joined) -> value, only where a value exists."""
    t = table[table[value].notna()]
    if t.empty:
        return pd.DataFrame()
    cell = t[columns].astype(str).agg(" ".join, axis=1) if columns else pd.Series("all", index=t.index)
    return t.assign(cell=cell).pivot_table(index="cell", columns="variant", values=value, aggfunc="mean")


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def at_least(
    table: pd.DataFrame,
    columns: list[str],
    value: str,
    higher: bool,
    *,
    variant: str,
    threshold: float,
    where: dict | None = None,
    bound: str = "at_least",
) -> tuple[str, str]:
    t = _where(table, where, value)
    t = t[(t["variant"] == variant) & t[value].notna()]
    if t.empty:
        return NA, f"no {variant} cells"
    ok = t[value] >= threshold if bound == "at_least" else t[value] <= threshold
    worst = t[value].min() if bound == "at_least" else t[value].max()
    return (PASS if ok.all() else FAIL), f"{variant}: {int(ok.sum())}/{len(ok)} cells, worst {_fmt(worst)}"


def at_most(
    table: pd.DataFrame,
    columns: list[str],
    value: str,
    higher: bool,
    *,
    variant: str,
    threshold: float,
    where: dict | None = None,
) -> tuple[str, str]:
    return at_least(table, columns, value, higher, variant=variant, threshold=threshold, where=where, bound="at_most")


def best(
    table: pd.DataFrame,
    columns: list[str],
    value: str,
    higher: bool,
    *,
    variant: str,
    tol: float = 0.0,
    where: dict | None = None,
) -> tuple[str, str]:
    cells = _cells(_where(table, where, value), columns, value)
    if variant not in cells or cells.shape[1] < 2:
        return NA, f"no cell with {variant} and another variant"
    others = cells.drop(columns=variant)
    sign = 1 if higher else -1
    margin = sign * (cells[variant] - (others.max(axis=1) if higher else others.min(axis=1)))
    margin = margin[cells[variant].notna() & others.notna().any(axis=1)]
    if margin.empty:
        return NA, f"no cell with {variant} and another variant"
    ok = margin >= -tol
    return (PASS if ok.all() else FAIL), f"{variant} best in {int(ok.sum())}/{len(ok)} cells (tol {tol})"


def better(
    table: pd.DataFrame,
    columns: list[str],
    value: str,
    higher: bool,
    *,
    a: str,
    b: str,
    margin: float = 0.0,
    where: dict | None = None,
) -> tuple[str, str]:
    cells = _cells(_where(table, where, value), columns, value)
    if a not in cells or b not in cells:
        return NA, f"no cell with both {a} and {b}"
    diff = ((cells[a] - cells[b]) * (1 if higher else -1)).dropna()
    if diff.empty:
        return NA, f"no cell with both {a} and {b}"
    ok = diff >= margin
    return (PASS if ok.all() else FAIL), (
        f"{a} ahead of {b} by >= {margin} in {int(ok.sum())}/{len(ok)} cells, smallest lead {_fmt(diff.min())}"
    )


def close(
    table: pd.DataFrame,
    columns: list[str],
    value: str,
    higher: bool,
    *,
    a: str,
    b: str,
    tol: float,
    relative: bool = False,
    where: dict | None = None,
) -> tuple[str, str]:
    cells = _cells(_where(table, where, value), columns, value)
    if a not in cells or b not in cells:
        return NA, f"no cell with both {a} and {b}"
    pair = cells[[a, b]].dropna()
    if pair.empty:
        return NA, f"no cell with both {a} and {b}"
    diff = (pair[a] - pair[b]).abs() / (pair[b].abs() if relative else 1.0)
    ok = diff <= tol
    unit = " (relative)" if relative else ""
    seen = f"|{a} - {b}|{unit} <= {tol} in {int(ok.sum())}/{len(ok)} cells, max {_fmt(diff.max())}"
    return (PASS if ok.all() else FAIL), seen


def gap_trend(
    table: pd.DataFrame,
    columns: list[str],
    value: str,
    higher: bool,
    *,
    a: str,
    b: list[str],
    along: str,
    trend: str,
    tol: float = 0.0,
    where: dict | None = None,
) -> tuple[str, str]:
    """gap = a's value minus the best of the variants `b` per cell (oriented so that a positive gap favours a); along
    `along`, with the other column fields fixed, each step may not go the wrong way by more than `tol`, and from the
    first to the last point the gap must strictly shrink (or grow)."""
    if along not in columns:
        raise ValueError(f"claim gap_trend: along={along!r} must be a column field ({', '.join(columns)})")
    t = _where(table, where, value)
    t = t[t[value].notna()]
    sign = 1 if higher else -1
    rest = [c for c in columns if c != along]
    seen, bad = 0, []
    for key, g in t.groupby(rest, sort=True) if rest else [("all", t)]:
        gaps = {}
        for x, cell in g.groupby(along, sort=True):
            mine, rivals = cell[cell["variant"] == a][value], cell[cell["variant"].isin(b)][value]
            if len(mine) and len(rivals):
                gaps[x] = sign * (mine.mean() - (rivals.max() if higher else rivals.min()))
        if len(gaps) < 2:
            continue
        seen += 1
        series = np.array([gaps[x] for x in sorted(gaps)])
        steps = np.diff(series) * (-1 if trend == "shrinks" else 1)
        overall = (series[-1] - series[0]) * (-1 if trend == "shrinks" else 1)
        if (steps < -tol).any() or overall <= 0:
            bad.append(f"{key}: " + " -> ".join(_fmt(g) for g in series))
    if not seen:
        return NA, f"fewer than 2 values of {along} with both {a} and one of {', '.join(b)}"
    detail = f"gap {trend} along {along} in {seen - len(bad)}/{seen} groups"
    return (FAIL, detail + "; not in " + "; ".join(bad)) if bad else (PASS, detail)


CHECKS = {
    "at_least": at_least,
    "at_most": at_most,
    "best": best,
    "better": better,
    "close": close,
    "gap_trend": gap_trend,
}


def check(claim: dict, table: pd.DataFrame, columns: list[str], value: str, higher: bool) -> tuple[str, str]:
    """Run one claim of a card (check + its options, `value` renamed threshold) on table[value]."""
    options = {k: v for k, v in claim.items() if k not in ("check", "text")}
    if "value" in options:
        options["threshold"] = options.pop("value")
    if claim["check"] not in CHECKS:
        raise ValueError(f"claim check={claim['check']!r} must be one of {', '.join(CHECKS)}")
    return CHECKS[claim["check"]](table, columns, value, higher, **options)
