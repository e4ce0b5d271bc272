"""`archbench-board DIR --pareto METRIC,COST`: the variants that no other variant beats on both a metric and a cost
(the Pareto front, e.g. of an architecture search: test/accuracy against params), as a table and a plot.

A variant is dominated when another is at least as good on the metric and at most as costly, and strictly better on
one of the two. Metric and cost are means over a variant's completed runs (its seeds), per task setting."""

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402

from harness.report import BoardError
from harness.report.runs import runs_frame  # noqa: E402
from tasks.registry import LOWER_IS_BETTER  # noqa: E402

FILE = "pareto.png"


def parse(spec: str) -> tuple[str, str]:
    """ "test/accuracy,params" -> ("test/accuracy", "params"); a cost may be written cost:params."""
    metric, sep, cost = (s.strip() for s in spec.partition(","))
    if not sep or "/" not in metric or not cost or "," in cost:
        raise BoardError(f"--pareto {spec}: give METRIC,COST, e.g. test/accuracy,params")
    return metric, cost.removeprefix("cost:")


def higher_is_better(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1] not in LOWER_IS_BETTER


def non_dominated(metric: ArrayLike, cost: ArrayLike, higher: bool = True) -> np.ndarray:
    """Mask of the points no other point dominates. Sorted by cost (then best metric first), a point is on the front
    when its metric beats every cheaper point's; points equal on both are all on it. O(n log n)."""
    score = np.asarray(metric, dtype=float) * (1 if higher else -1)
    cost = np.asarray(cost, dtype=float)
    mask = np.zeros(len(score), dtype=bool)
    order = np.lexsort((-score, cost))
    best, i = -np.inf, 0
    while i < len(order):
        j = i
        while j < len(order) and cost[order[j]] == cost[order[i]]:
            j += 1
        top = score[order[i]]  # the best metric at this cost
        if top > best:
            mask[order[i:j][score[order[i:j]] == top]] = True
            best = top
        i = j
    return mask


def front(records: list[dict], metric: str, cost: str) -> pd.DataFrame:
    """One row per (setting, variant) with completed runs: mean metric and cost, n runs, and `pareto` (on the front
    of its setting); sorted by setting, then cost."""
    runs = runs_frame(records)
    m, c = f"metric:{metric}", f"cost:{cost}"
    for column, kind in ((m, "metric"), (c, "cost")):
        if column not in runs:
            prefix = f"{kind}:"
            have = sorted(k.removeprefix(prefix) for k in runs if k.startswith(prefix) and k != "cost:device")
            raise BoardError(
                f"--pareto: no {kind} {column.removeprefix(prefix)} in the records (they have: {', '.join(have)})"
            )
    ok = runs[runs.status == "completed"].assign(
        metric=lambda f: pd.to_numeric(f[m], errors="coerce"), cost=lambda f: pd.to_numeric(f[c], errors="coerce")
    )
    ok = ok.dropna(subset=["metric", "cost"])
    table = (
        ok.groupby(["setting", "variant"], sort=False)
        .agg(metric=("metric", "mean"), cost=("cost", "mean"), n=("metric", "size"))
        .reset_index()
    )
    table["pareto"] = False
    for _, rows in table.groupby("setting", sort=False):
        table.loc[rows.index, "pareto"] = non_dominated(rows["metric"], rows["cost"], higher_is_better(metric))
    return table.sort_values(
        ["setting", "cost", "metric"], ascending=[True, True, not higher_is_better(metric)], kind="stable"
    ).reset_index(drop=True)


def markdown(table: pd.DataFrame, metric: str, cost: str) -> str:
    """The front of each setting as a Markdown table, cheapest first, with how many variants it was drawn from."""
    parts = []
    for setting, rows in table.groupby("setting", sort=False):
        on = rows[rows.pareto]
        shown = pd.DataFrame(
            {
                "#": range(1, len(on) + 1),
                "variant": on["variant"],
                metric: on["metric"].map("{:.4f}".format),
                cost: on["cost"].map(_number),
                "runs": on["n"],
            }
        )
        parts.append(
            f"Pareto front of {setting}: {len(on)} of {len(rows)} variants are not dominated on {metric} "
            f"({'higher' if higher_is_better(metric) else 'lower'} is better) against {cost} "
            f"(lower is better)\n\n{shown.to_markdown(index=False)}"
        )
    return "\n\n".join(parts) if parts else f"no completed runs with both {metric} and {cost}"


def _number(x: float) -> str:
    if not math.isfinite(x) or abs(x) < 1000:
        return f"{x:.4g}"
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return str(x)


def plot(table: pd.DataFrame, metric: str, cost: str, path: Path) -> Path:
    """Every variant as a grey point, the front in red joined by a step line, its points numbered as in the printed
    table and named below the axes; log-scale cost where it spans more than a factor 10."""
    settings = list(dict.fromkeys(table["setting"]))
    most = max([int(table[table.setting == s].pareto.sum()) for s in settings] or [0])
    k = max(len(settings), 1)
    fig, axes = plt.subplots(1, k, figsize=(6.5 * k, 4.2 + 0.14 * most), squeeze=False)
    for ax, setting in zip(axes.flat, settings, strict=False):
        rows = table[table.setting == setting]
        on = rows[rows.pareto]  # sorted by cost, as printed
        ax.scatter(rows["cost"], rows["metric"], color="0.6", s=18, label="variant")
        ax.step(on["cost"], on["metric"], where="post", color="tab:red", lw=1.2)
        ax.scatter(on["cost"], on["metric"], color="tab:red", s=28, zorder=3, label="Pareto front")
        for i, (x, y) in enumerate(zip(on["cost"], on["metric"], strict=True), 1):
            ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, color="tab:red")
        if rows["cost"].min() > 0 and rows["cost"].max() > 10 * rows["cost"].min():
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(cost)
        ax.set_ylabel(metric)
        ax.set_title(f"{setting}: {len(on)} of {len(rows)} variants on the front", fontsize=9)
        ax.legend(fontsize=7, loc="lower right" if higher_is_better(metric) else "upper right")
        names = "\n".join(f"{i}: {name}" for i, name in enumerate(on["variant"], 1))
        ax.text(0, -0.16, names, transform=ax.transAxes, va="top", fontsize=6, family="monospace")
    fig.subplots_adjust(bottom=(0.6 + 0.14 * most) / (4.2 + 0.14 * most), top=0.92, left=0.1, right=0.97)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(
    records: list[dict], spec: str, plots: Path | None = None, out: Path | None = None, dirs: Sequence[str | Path] = ()
) -> None:
    """Print the front(s) and draw them into plots/pareto.png (default: the first records folder, else here); with
    `out`, also write every variant with its `pareto` mark to out/pareto.csv."""
    metric, cost = parse(spec)
    table = front(records, metric, cost)
    print(markdown(table, metric, cost))
    if plots is None:
        first = Path(dirs[0]) if dirs else Path(".")
        plots = first.parent if first.is_file() else first
    print(f"plot: {plot(table, metric, cost, Path(plots) / FILE)}")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        table.to_csv(Path(out) / "pareto.csv", index=False)
        print(f"written: {Path(out) / 'pareto.csv'}")
