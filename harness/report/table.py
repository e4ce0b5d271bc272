"""The board's wide table and its legend: rows the variants ordered by average rank, columns the cells' columns, each
cell's text (mean ± std [CI], solved seeds, marks, the selection), then average rank and costs; and the number
formats the views share."""

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.report import marking
from tasks.registry import LOWER_IS_BETTER

# (cell column, header, how a row sums up its cells): exact counts as one value or a min–max range over the row's
# cells, measured ones as their mean over the row's cells
COST_COLUMNS = (
    ("params_non_embedding", "params", "range"),
    ("params_embedding", "emb params", "range"),
    ("flops_per_token", "FLOPs/token", "range"),
    ("tokens_seen", "tokens", "range"),
    ("wall_seconds", "wall s", "mean"),
    ("tokens_per_second", "tokens/s", "mean"),
    ("peak_memory_bytes", "peak mem", "max"),
)


def si(value: float) -> str:
    """3 significant figures with an SI suffix: 18624 -> 18.6k, 1.2e9 -> 1.2G."""
    if value is None or not np.isfinite(value):
        return ""
    for power, suffix in ((12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if abs(value) >= 10**power * 0.9995:  # 999.7 is 1k, not 1e+03
            return f"{value / 10**power:.3g}{suffix}"
    return f"{value:.3g}"


def nbytes(value: float) -> str:
    if value is None or not np.isfinite(value):
        return ""
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.1f} MiB"


def cost_text(summary: Any, how: str, column: str) -> str:
    """A row's cost from its cells' (min, max, mean): the mean, the max, or a min–max range ("range")."""
    if pd.isna(summary.max):
        return ""
    fmt = nbytes if column == "peak_memory_bytes" else (lambda v: f"{v:.1f}") if column == "wall_seconds" else si
    if how != "range":
        return fmt(summary.mean if how == "mean" else summary.max)
    lo, hi = summary.min, summary.max
    return fmt(lo) if hi <= lo * 1.005 else f"{fmt(lo)}–{fmt(hi)}"


def cell_text(row: Any, n_usual: int) -> str:
    """mean ± std [CI low, CI high], for accuracy the seeds that solve the task (3/4 ≥ 0.9), then n when unusual, †
    for < 2 seeds, * when best or not marked worse than the best, failures and the selected hyperparameters."""
    if row.n == 0:
        return f"failed ({row.failed})" if row.failed else ""
    text = f"{row.mean:.3f}"
    if row.n >= 2:
        text += f" ± {row.std:.3f} [{row.ci_lo:.3f}, {row.ci_hi:.3f}]"
    if pd.notna(getattr(row, "solved", np.nan)):
        text += f" {row.solved}/{row.n} ≥ {row.solved_at:g}"
    if row.n != n_usual:
        text += f" n={row.n}"
    if row.n < 2:
        text += " †"
    if row.tied:
        text += " *"
    if row.failed:
        text += f" [{row.failed} failed]"
    if isinstance(getattr(row, "selected", None), str) and row.searched > 1:
        text += f" @ {row.selected}"
        if isinstance(getattr(row, "edge", None), str) and row.edge:  # harness/report/sensitivity.py edges
            text += f" ({row.edge})"
    return text


def column_order(long: pd.DataFrame, group_by: str | None) -> list[str]:
    """Columns by setting (as first seen), then by the group value (numerically where it is a number)."""
    cols = long.drop_duplicates("column")
    settings = {s: i for i, s in enumerate(sorted(cols["setting"].unique(), key=natural))}
    key = [
        (settings[s], _number(g) if group_by else 0, str(g) if group_by else "")
        for s, g in zip(cols["setting"], cols[group_by] if group_by else cols["setting"], strict=True)
    ]
    return [c for _, c in sorted(zip(key, cols["column"], strict=True))]


def natural(text: str) -> list:
    """Sort key that orders the numbers inside strings by value: test@512 before test@1024."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def _number(value: object) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


def wide(
    long: pd.DataFrame, metric: str, split: str, select: Sequence[str] = (), group_by: str | None = None, grid: str = ""
) -> tuple[pd.DataFrame, list[str]]:
    """Rows variants ordered by average rank, columns the cells' columns, then average rank and costs; and the
    legend that says what every number and mark means."""
    scored = long[long.n > 0]
    n_usual = int(scored["n"].mode().max()) if len(scored) else 0
    text = pd.Series([cell_text(r, n_usual) for r in long.itertuples(index=False)], index=long.index)
    columns = column_order(long, group_by)
    table = long.assign(text=text).pivot(index="variant", columns="column", values="text")[columns]
    avg_rank = long.groupby("variant")["avg_rank"].first()  # over all columns, cells not run ranked last
    sign = -1 if metric in LOWER_IS_BETTER else 1  # ties in average rank: the better mean over columns first
    keys = pd.DataFrame(
        {"rank": avg_rank, "mean": -sign * long.groupby("variant")["mean"].mean(), "name": avg_rank.index}
    )
    order = keys.sort_values(["rank", "mean", "name"], na_position="last").index
    table = table.loc[order].fillna("")
    table["avg rank"] = avg_rank.loc[order].map(lambda v: f"{v:.2f}")
    for column, header, how in COST_COLUMNS:
        source = column if column in long and long[column].notna().any() else None
        if source is None and column == "params_non_embedding" and "params" in long:
            source, header = "params", "params (total)"
        if source is not None and long[source].notna().any():
            summary = long.groupby("variant")[source].agg(["min", "max", "mean"]).reindex(table.index)
            table[header] = [cost_text(row, how, source) for row in summary.itertuples(index=False)]
    table.columns.name, table.index.name = None, "variant"
    return table, legend(long, metric, split, select, n_usual, grid)


def legend(long: pd.DataFrame, metric: str, split: str, select: Sequence[str], n_usual: int, grid: str) -> list[str]:
    clip = ", clipped to [0, 1]" if metric == "accuracy" else ""
    lines = [
        f"{split}/{metric}: mean ± std over seeds [95% confidence interval: Student-t{clip}]; "
        f"n = {n_usual} seeds per cell unless shown",
        marking_line(long, metric),
    ]
    if "solved" in long:
        lines.append(
            f"k/n ≥ {long['solved_at'].iloc[0]:g} = seeds of the cell whose {split}/{metric} is at least "
            f"{long['solved_at'].iloc[0]:g} (solved the task), so a cell whose seeds split shows it"
        )
    if ((long.n > 0) & (long.n < 2)).any():
        lines.append("† = fewer than 2 seeds: no std, interval or test")
    k = long["column"].nunique()
    lines.append(
        f"rows ordered by average rank over the {k} column{'s' * (k != 1)} (1 = best; equal means share "
        f"their mean rank; a cell with no completed run, or not run, ranks last; equal averages: the better "
        f"mean first)"
    )
    if select:
        differ = "grid" in long and long["grid"].dropna().nunique() > 1
        lines.append(
            f"selection: per cell, the {', '.join(select)} with the best mean val/{metric} over seeds "
            f"(after @; a value with more runs first, as a race's halving keeps it; values whose runs failed more "
            f"often rank lower; equal means: the lower val/loss); {split}/{metric} is reported on "
            f"it; grid searched: {grid}" + ("; some cells searched less (the csv's grid column)" if differ else "")
        )
        if "edge" in long and (long["edge"].fillna("") != "").any():
            lines.append(
                "(edge) = the value chosen is the lowest or highest of the 3 or more values that cell searched: "
                "the best may lie outside, the grid should be widened"
            )
    if long["failed"].any():
        lines.append("[k failed] = runs of the cell that failed or diverged (over its whole grid)")
    lines.append(
        "costs per row, over its cells: params = non-embedding parameters (Kaplan et al. 2020: without the token "
        "embedding, the output head, tied or not, and a position table; total per cell in the csv), emb params = "
        "those vocabulary and position matrices, FLOPs/token = the backbone's training FLOPs per token (6 × "
        "non-embedding params + each mixer's sequence term; the head's 6 × d_model × vocab is charged only per "
        "scored target, in the csv's train_flops), tokens = tokens trained on per run (min–max where cells "
        "differ); wall s, tokens/s = mean per run; peak mem = peak CUDA memory (max)"
    )
    recounted, old = (
        int(pd.to_numeric(long[c], errors="coerce").fillna(0).sum()) if c in long else 0
        for c in ("costs_recounted", "costs_old")
    )
    if recounted:
        lines.append(
            f"{recounted} run{'s' * (recounted != 1)} recorded before the head was counted apart: params and "
            "FLOPs/token recounted from their config (d_model × vocab_size moved to emb params); their train_flops "
            "is not known (scored targets were not counted) and is left out"
        )
    if old:
        lines.append(
            f"{old} run{'s' * (old != 1)} counted the old way (head inside params and FLOPs/token at every token): "
            "their config lacks model.d_model or model.vocab_size"
        )
    return lines


def marking_line(long: pd.DataFrame, metric: str) -> str:
    """The legend of `*`: the procedure, alpha, the margin delta, and how the columns were paired."""
    alpha = long["alpha"].iloc[0] if len(long) else marking.ALPHA
    delta = long["delta"].iloc[0] if len(long) else marking.delta_for(metric)
    by_column = long.drop_duplicates("column").set_index("column")
    paired = by_column["paired"].dropna().astype(bool)
    if paired.empty:
        pairing = "no column has two cells of 2 or more seeds: nothing tested"
    elif paired.all():
        pairing = "every column paired by seed (its cells share their seeds)"
    elif not paired.any():
        pairing = "every column unpaired (its cells' seed sets differ)"
    else:
        pairing = f"paired by seed in {int(paired.sum())} of {len(paired)} columns, the others unpaired (csv: paired)"
    text = (
        f"* = best in its column, or not shown worse than the best by more than delta = {delta:g}: a permutation "
        f"test (max-T over all pairs, the range of the cell means; {marking.PERMUTATIONS} shuffles of the "
        f"variants {'within each seed' if paired.all() else 'per seed when paired, of all values otherwise'}) "
        f"that marks an identical variant worse in at most alpha = {alpha:g} of columns, whatever their number; "
        f"{pairing}; csv p_vs_leader = the adjusted p-value; cells with 1 seed untested (docs/board.md)"
    )
    stuck = by_column.index[by_column["separable"].fillna(True).eq(False)]
    if len(stuck):
        text += (
            f"; too few seeds and variants for any cell to be marked worse at alpha in: {', '.join(map(str, stuck))}"
        )
    return text
