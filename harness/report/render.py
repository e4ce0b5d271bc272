"""The leaderboard as text: the wide table and its legend, and the board as Markdown (also the terminal's), CSV,
self-contained HTML and LaTeX."""

import base64
import html as html_lib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.record.keys import LOWER_IS_BETTER
from harness.record.results import write_text_atomic
from harness.report import marking

if TYPE_CHECKING:  # harness.report.board imports this module
    from harness.report.board import Board

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
            f"(after @; values whose runs failed more often rank lower); {split}/{metric} is reported on "
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


def _lines(board: "Board") -> list[str]:
    """The legend, after the line that accounts for every record file read."""
    accounting = getattr(board, "accounting", "")
    return [f"records: {accounting}", *board.legend] if accounting else list(board.legend)


def markdown(board: "Board", images: Iterable[str | Path] = ()) -> str:
    """The board as Markdown: legend lines, the table, then each view. Also what the terminal shows."""
    parts = ["\n".join(f"- {line}" for line in _lines(board)), board.table.to_markdown(disable_numparse=True)]
    if getattr(board, "skipped", None):
        parts.append("Not on the board:\n" + "\n".join(f"- {path}: {why}" for path, why in board.skipped))
    for table, lines in board.views.values():
        parts += ["\n".join(f"- {line}" for line in lines), table.to_markdown(disable_numparse=True)]
    parts += [f"![{Path(p).stem}]({p})" for p in images]
    return "\n\n".join(parts)


def csv(board: "Board") -> str:
    """One row per cell with every number behind the table (the wide table is a view of this)."""
    return board.long.to_csv(index=False)


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}"
    "th:first-child,td:first-child{text-align:left}thead th{background:#f3f3f3}li{margin:2px 0}"
    "img{max-width:100%;display:block;margin:1em 0}"
)


def html(board: "Board", images: Iterable[str | Path] = ()) -> str:
    """One self-contained file: inline CSS, plots embedded as data URIs, no network references."""

    def section(table: pd.DataFrame, lines: list[str]) -> str:
        items = "".join(f"<li>{html_lib.escape(line)}</li>" for line in lines)
        return f"<ul>{items}</ul>{table.to_html(escape=True, border=0, na_rep='')}"

    body = [section(board.table, _lines(board))]
    if getattr(board, "skipped", None):
        items = "".join(f"<li>{html_lib.escape(f'{p}: {why}')}</li>" for p, why in board.skipped)
        body.append(f"<h2>Not on the board</h2><ul>{items}</ul>")
    body += [f"<h2>{html_lib.escape(name)}</h2>{section(t, lines)}" for name, (t, lines) in board.views.items()]
    for p in images:
        data = base64.b64encode(Path(p).read_bytes()).decode()
        body.append(f'<img alt="{html_lib.escape(Path(p).stem)}" src="data:image/png;base64,{data}">')
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>archbench leaderboard</title>'
        f"<style>{STYLE}</style></head><body><h1>archbench leaderboard</h1>{''.join(body)}</body></html>\n"
    )


TEX = {"±": r"$\pm$", "†": r"$^\dagger$", "–": "--", "∈": r"$\in$", "×": r"$\times$", "≥": r"$\geq$"}


def _tex(text: str) -> str:
    for a, b in TEX.items():
        text = text.replace(a, b)
    return text


def latex(board: "Board", images: Iterable[str | Path] = ()) -> str:
    """The tables as booktabs LaTeX (pandas Styler), the legend as comments above each."""

    def one(table: pd.DataFrame, lines: list[str]) -> str:
        styler = table.rename_axis(None).style.format(escape="latex").format_index(escape="latex", axis=0)
        styler = styler.format_index(escape="latex", axis=1)
        body = styler.to_latex(hrules=True, column_format="l" + "r" * len(table.columns))
        return "\n".join(f"% {_tex(line)}" for line in lines) + "\n" + _tex(body)

    skipped = "".join(f"% not on the board: {_tex(f'{p}: {why}')}\n" for p, why in getattr(board, "skipped", []))
    return skipped + "\n".join(one(t, lines) for t, lines in [(board.table, _lines(board)), *board.views.values()])


def write(
    board: "Board", out_dir: Path, formats: Iterable[str] = ("md", "csv"), plots: Path | None = None
) -> list[Path]:
    """Write `board` (harness/report/board.py) as leaderboard.<format> for each format (md, csv, html, tex) into
    out_dir, atomically; with csv also leaderboard_records.csv (every record file read, and what became of it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = sorted(Path(plots).glob("*.png")) if plots else []
    written = []
    for fmt in formats:
        path = out_dir / f"leaderboard.{fmt}"
        if fmt == "csv":
            write_text_atomic(path, csv(board))
            if board.files is not None:  # every record file read, and what became of it
                write_text_atomic(out_dir / "leaderboard_records.csv", board.files.to_csv(index=False))
                written.append(out_dir / "leaderboard_records.csv")
        elif fmt == "md":  # images linked relative to the file, so the folder can move
            write_text_atomic(path, markdown(board, [os.path.relpath(p, out_dir) for p in images]) + "\n")
        else:
            write_text_atomic(path, {"html": html, "tex": latex}[fmt](board, images))
        written.append(path)
    return written
