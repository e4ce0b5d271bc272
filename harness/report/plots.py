"""Leaderboard plots with matplotlib (Agg, no display): a heatmap of variants × columns, the metric against a swept
field per variant (accuracy against d_model, as in Zoology's Figure 2), and learning curves from the eval history."""

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from harness.report import BoardError  # noqa: E402
from harness.report import board as board_lib  # noqa: E402
from harness.report import cells as cells_lib  # noqa: E402
from harness.report import scaling as scaling_lib  # noqa: E402
from harness.report import sensitivity as sensitivity_lib  # noqa: E402
from harness.report.runs import runs_frame  # noqa: E402
from harness.report.table import column_order, natural  # noqa: E402


def _grid(k: int, width: float = 4.2, height: float = 3.2):
    cols = min(k, 3)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[k:]:
        ax.set_visible(False)
    return fig, axes.flat


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def heatmap(board: board_lib.Board, path: Path) -> Path:
    """Cell means, rows in the board's order, annotated with their values."""
    o = board.options
    columns = column_order(board.long, o["group_by"])
    values = board.long.pivot(index="variant", columns="column", values="mean").reindex(
        index=board.table.index, columns=columns
    )
    data = values.to_numpy(float)
    fig, ax = plt.subplots(figsize=(3.5 + 1.2 * len(columns), 1.5 + 0.45 * len(values)))
    lo, hi = (0.0, 1.0) if o["metric"] == "accuracy" else (np.nanmin(data), np.nanmax(data))
    image = ax.imshow(data, cmap="viridis", aspect="auto", vmin=lo, vmax=hi)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(values)), values.index)
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(
                j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v < (lo + hi) / 2 else "black"
            )
    fig.colorbar(image, ax=ax, label=f"{o['split']}/{o['metric']}")
    ax.set_title(f"{o['split']}/{o['metric']}, mean over seeds")
    return _save(fig, path)


def sweep(records: list[dict], board: board_lib.Board, x: str, path: Path) -> Path:
    """The metric against config field `x`, a line per variant (the variant named without `x`), a panel per
    setting; error bars are the 95% confidence intervals."""
    o = board.options
    select = o["select"]
    runs = runs_frame(records, keys=[*select, x], hide=[*select, x], size=o["size"])
    if runs[x].isna().all():
        raise BoardError(f"--plot-x {x} is not a field of the runs' config")
    long = cells_lib.cells(runs, o["metric"], o["split"], select, group_by=x)
    long = long[long.n > 0].assign(x=pd.to_numeric(long[x], errors="coerce")).dropna(subset=["x"])
    settings = sorted(long["setting"].unique())
    fig, axes = _grid(max(len(settings), 1))
    for ax, setting in zip(axes, settings, strict=False):
        for variant, g in long[long.setting == setting].groupby("variant"):
            g = g.sort_values("x")
            err = np.nan_to_num(np.vstack([g["mean"] - g["ci_lo"], g["ci_hi"] - g["mean"]]))
            ax.errorbar(g["x"], g["mean"], yerr=err, marker="o", capsize=3, label=variant)
        xs = np.sort(long["x"].unique())
        if (xs > 0).all() and xs.max() >= 4 * xs.min():
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.minorticks_off()
        ax.set(title=setting, xlabel=x, ylabel=f"{o['split']}/{o['metric']}")
        ax.legend(fontsize=7)
    return _save(fig, path)


CURVES_NOTE = (
    "mean over seeds, band min–max over seeds; a seed that stopped before the column's last step (its target "
    "reached) keeps its last value to the end"
)


def curve_data(board: board_lib.Board) -> pd.DataFrame:
    """val/<metric> per (column, variant, step) over the chosen runs: mean, min, max and n. Each run's value is carried
    forward from its last evaluation to the column's last step, so that a seed that stopped early at its target
    accuracy still counts at the later steps: the mean does not fall because the seeds that did best left it."""
    metric = f"val/{board.options['metric']}"
    rows = [
        (r.variant, r.column, i, h["step"], h[metric])
        for i, r in enumerate(board.chosen.itertuples(index=False))
        if isinstance(r.history, list)
        for h in r.history
        if metric in h and "step" in h
    ]
    data = pd.DataFrame(rows, columns=["variant", "column", "run", "step", "value"])
    parts = []
    for column, g in data.groupby("column", sort=False):
        # one column per run over every step of the column; a run's value at a step is its last at or before it
        wide = g.pivot_table(index="step", columns=["variant", "run"], values="value", aggfunc="last").sort_index()
        wide = wide.ffill()
        for variant in g["variant"].unique():
            runs = wide[variant]
            stats = pd.DataFrame(
                {"mean": runs.mean(axis=1), "min": runs.min(axis=1), "max": runs.max(axis=1), "n": runs.count(axis=1)}
            )
            stats = stats[stats.n > 0].reset_index()
            parts.append(stats.assign(column=column, variant=variant))
    columns = ["column", "variant", "step", "mean", "min", "max", "n"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def curves(board: board_lib.Board, path: Path) -> Path | None:
    """val/<metric> against step from each chosen run's history, a panel per column: the mean over seeds as a line
    and their min–max as a band, a seed that stopped early held at its last value (curve_data)."""
    data = curve_data(board)
    if data.empty:
        return None
    metric = f"val/{board.options['metric']}"
    columns = [c for c in column_order(board.long, board.options["group_by"]) if c in set(data["column"])]
    fig, axes = _grid(len(columns))
    for ax, column in zip(axes, columns, strict=False):
        for variant, g in data[data.column == column].groupby("variant"):
            (line,) = ax.plot(g["step"], g["mean"], label=variant)
            ax.fill_between(g["step"], g["min"], g["max"], color=line.get_color(), alpha=0.2, lw=0)
        ax.set(title=column, xlabel="step", ylabel=metric)
        ax.legend(fontsize=7)
    fig.suptitle(textwrap.fill(CURVES_NOTE, width=int(14 * fig.get_figwidth())), fontsize=8)
    return _save(fig, path)


def sensitivity(records: list[dict], board: board_lib.Board, key: str, path: Path) -> Path:
    """val/<metric> against `key` (log axis where its values are positive numbers), a line per variant with the
    min–max over seeds shaded and the value chosen on val marked, a panel per column (harness/report/sensitivity.py)."""
    metric = board.options["metric"]
    data = board_lib.sensitivity_points(records, board, key)
    data = data[data.n > 0].assign(x=pd.to_numeric(data[key], errors="coerce"))
    numeric = data["x"].notna().all() and (data["x"] > 0).all()
    if not numeric:  # categories at equal spacing, in the view's order
        places = {v: i for i, v in enumerate(sensitivity_lib.order(data[key].tolist()))}
        data = data.assign(x=data[key].map(places).astype(float))
    columns = [c for c in column_order(board.long, board.options["group_by"]) if c in set(data["column"])]
    columns += sorted(set(data["column"]) - set(columns))
    fig, axes = _grid(max(len(columns), 1))
    for ax, column in zip(axes, columns, strict=False):
        for variant, g in data[data.column == column].groupby("variant"):
            g = g.sort_values("x")
            (line,) = ax.plot(g["x"], g["val_mean"], marker="o", label=variant)
            ax.fill_between(g["x"], g["val_min"], g["val_max"], color=line.get_color(), alpha=0.2)
            best = g[g.chosen]
            ax.plot(best["x"], best["val_mean"], marker="*", markersize=12, color=line.get_color(), linestyle="")
        if numeric:
            ax.set_xscale("log")
        xs = np.sort(data["x"].unique())
        labels = [f"{v:g}" for v in xs] if numeric else sensitivity_lib.order(data[key].tolist())
        ax.set_xticks(xs, labels)
        ax.minorticks_off()
        ax.set(title=f"{column} (★ = chosen on val)", xlabel=key, ylabel=f"val/{metric}: mean, min–max over seeds")
        ax.legend(fontsize=7)
    return _save(fig, path)


def scaling(board: board_lib.Board, path: Path) -> Path:
    """The fitted quantity against training FLOPs, log-log, a panel per column: each size's runs (geometric mean,
    min–max over seeds as bars) and each family's fitted L(C) = a · C^(−b) drawn over its measured range only."""
    o = board.options
    data = scaling_lib.runs(board.chosen, o["metric"], o["split"])
    found = scaling_lib.fits(board.chosen, o["metric"], o["split"])
    columns = sorted(data["column"].unique(), key=natural)
    fig, axes = _grid(max(len(columns), 1))
    for ax, column in zip(axes, columns, strict=False):
        for family, g in data[data.column == column].groupby("family"):
            g = g[g["y"] > 0]
            size = g.assign(lc=np.log(g["c"]), ly=np.log(g["y"])).groupby("variant")
            c, y = np.exp(size["lc"].mean()), np.exp(size["ly"].mean())
            err = np.vstack([y - size["y"].min(), size["y"].max() - y])
            bars = ax.errorbar(c, y, yerr=err, marker="o", linestyle="", capsize=3, label=family)
            f = found.get((column, family))
            if isinstance(f, scaling_lib.Fit):
                at = np.geomspace(f.c_min, f.c_max, 50)
                ax.plot(at, [f.predict(v) for v in at], color=bars[0].get_color(), label=f"{family}: b = {f.b:.3f}")
        ax.set(xscale="log", yscale="log", title=column, xlabel="training FLOPs")
        ax.xaxis.set_minor_formatter(NullFormatter())
        for which in ("major", "minor"):  # a narrow range has no decade on it: label the minor ticks plainly
            getattr(ax.yaxis, f"set_{which}_formatter")(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.set_ylabel(scaling_lib.target(o["metric"], o["split"]))
        ax.legend(fontsize=7)
    return _save(fig, path)


def all_plots(board: board_lib.Board, records: list[dict], out_dir: Path, x: str | None = None) -> list[Path]:
    """heatmap.png, curves.png (when the records have a history), with `x` metric_vs_<x>.png, and with the board's
    sensitivity or scaling key sensitivity_<key>.png or scaling_<key>.png."""
    out_dir = Path(out_dir)
    paths = [heatmap(board, out_dir / "heatmap.png"), curves(board, out_dir / "curves.png")]
    if x:
        paths.append(sweep(records, board, x, out_dir / f"{board.options['metric']}_vs_{x}.png"))
    key = board.options.get("sensitivity")
    if key:
        paths.append(sensitivity(records, board, key, out_dir / f"sensitivity_{key}.png"))
    if board.options.get("scaling"):
        paths.append(scaling(board, out_dir / f"scaling_{board.options['scaling']}.png"))
    return [p for p in paths if p is not None]
