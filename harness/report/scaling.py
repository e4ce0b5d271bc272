"""Scaling fits (`archbench-board DIR --scaling model.d_model`): per variant family (the variant without its size
fields) and column, the reported metric (a loss, or the error 1 − accuracy) against training compute C fitted with
one declared form, L(C) = a · C^(−b), by least squares on log L against log C over the family's sizes; 95%
intervals of a and b from a bootstrap over seeds; where two families' curves cross; and no extrapolation: a
prediction or a crossing outside the measured compute range is refused."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.report import BoardError
from harness.report.table import si
from tasks.registry import LOWER_IS_BETTER

FORM = "L(C) = a · C^(−b)"
RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
EDGE = 1e-9  # relative slack at the ends of a measured range (rounding of C)


@dataclass
class Fit:
    """A power law fitted to a family's sizes: L(C) = a · C^(−b), with bootstrap replicates of (log a, b)."""

    a: float
    b: float
    a_ci: tuple[float, float]
    b_ci: tuple[float, float]
    c_min: float
    c_max: float
    sizes: int
    runs: int
    replicates: np.ndarray  # (resamples, 2): log a, b

    def inside(self, c: float) -> bool:
        return self.c_min * (1 - EDGE) <= c <= self.c_max * (1 + EDGE)

    def predict(self, c: float) -> float:
        """L at compute c; BoardError outside [c_min, c_max]: the fit is no evidence there."""
        if not self.inside(c):
            raise BoardError(
                f"no extrapolation: C = {c:.3g} FLOPs is outside the measured range "
                f"[{self.c_min:.3g}, {self.c_max:.3g}] of this fit"
            )
        return self.a * c ** (-self.b)


@dataclass
class Crossing:
    """Where two fitted curves meet: C (None where the exponents are equal), whether it lies inside both measured
    ranges, and the bootstrap percentile interval of C (pairs of replicates; NaN where they do not cross)."""

    c: float | None
    inside: bool
    ci: tuple[float, float]


def _line(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares intercept and slope of y on x along the last axis (rows are replicates)."""
    xm, ym = x.mean(-1, keepdims=True), y.mean(-1, keepdims=True)
    slope = ((x - xm) * (y - ym)).sum(-1) / ((x - xm) ** 2).sum(-1)
    return ym[..., 0] - slope * xm[..., 0], slope


def fit(
    size: Sequence[object], c: Sequence[float], y: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED
) -> Fit:
    """Fit L = a · C^(−b) to runs (size id, compute c, metric y > 0): each size is one point, the means over its
    seeds of log C and log L (geometric means: the noise of a loss is multiplicative), and the line is least squares
    of log L on log C. The bootstrap resamples the seeds within each size (`resamples` times, numpy seed `seed`) and
    refits, giving percentile intervals of a and b; a size's deviations from its mean are scaled by sqrt(n / (n − 1))
    first, so that a resampled mean varies as much as the mean of n new seeds would (without it, 3 seeds give
    intervals a fifth too narrow)."""
    data = pd.DataFrame({"size": list(size), "c": np.asarray(c, float), "y": np.asarray(y, float)})
    if (data["y"] <= 0).any() or (data["c"] <= 0).any():
        raise BoardError("a power law needs a positive metric and compute in every run (its log is undefined at 0)")
    data = data.assign(x=np.log(data["c"]), ly=np.log(data["y"]))
    groups = [g for _, g in data.groupby("size", sort=False)]
    means = np.array([[g["x"].mean(), g["ly"].mean()] for g in groups])
    if len(groups) < 2 or np.ptp(means[:, 0]) == 0:
        raise BoardError("a fit needs 2 or more sizes with different compute")
    log_a, slope = _line(means[:, 0], means[:, 1])
    rng = np.random.default_rng(seed)
    boot = np.empty((2, resamples, len(groups)))
    for j, g in enumerate(groups):
        n = len(g)
        pick = rng.integers(0, n, size=(resamples, n))
        for k, (column, mean) in enumerate((("x", means[j, 0]), ("ly", means[j, 1]))):
            spread = (g[column].to_numpy() - mean) * (np.sqrt(n / (n - 1)) if n > 1 else 0.0)
            boot[k, :, j] = mean + spread[pick].mean(1)
    reps_a, reps_slope = _line(boot[0], boot[1])
    replicates = np.column_stack([reps_a, -reps_slope])
    q = [50 * (1 - LEVEL), 50 * (1 + LEVEL)]
    a_lo, a_hi = np.exp(np.percentile(reps_a, q))
    b_lo, b_hi = np.percentile(-reps_slope, q)
    return Fit(
        a=float(np.exp(log_a)),
        b=float(-slope),
        a_ci=(float(a_lo), float(a_hi)),
        b_ci=(float(b_lo), float(b_hi)),
        c_min=float(np.exp(means[:, 0].min())),  # the sizes' points: the range measured
        c_max=float(np.exp(means[:, 0].max())),
        sizes=len(groups),
        runs=len(data),
        replicates=replicates,
    )


def crossing(one: Fit, two: Fit) -> Crossing:
    """The compute where log a1 − b1 log C = log a2 − b2 log C, inside both measured ranges or not."""
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = np.exp((one.replicates[:, 0] - two.replicates[:, 0]) / (one.replicates[:, 1] - two.replicates[:, 1]))
    reps = reps[np.isfinite(reps)]
    q = [50 * (1 - LEVEL), 50 * (1 + LEVEL)]
    ci = tuple(float(v) for v in np.percentile(reps, q)) if len(reps) else (np.nan, np.nan)
    if one.b == two.b:
        return Crossing(None, False, ci)
    c = float(np.exp((np.log(one.a) - np.log(two.a)) / (one.b - two.b)))
    return Crossing(c, one.inside(c) and two.inside(c), ci)


def target(metric: str, split: str) -> str:
    """What is fitted: <split>/<metric> where lower is better (a loss), else its error 1 − <split>/<metric>."""
    return f"{split}/{metric}" if metric in LOWER_IS_BETTER else f"1 − {split}/{metric}"


def runs(chosen: pd.DataFrame, metric: str, split: str) -> pd.DataFrame:
    """The board's chosen runs (after --select) with `y` (the fitted quantity) and `c` (training FLOPs)."""
    value = pd.to_numeric(chosen.get(f"metric:{split}/{metric}"), errors="coerce")
    y = value if metric in LOWER_IS_BETTER else 1 - value
    c = chosen.get("cost:train_flops")
    if c is None and {"cost:flops_per_token", "cost:tokens_seen"} <= set(chosen.columns):
        c = chosen["cost:flops_per_token"] * chosen["cost:tokens_seen"]
    if c is None or pd.to_numeric(c, errors="coerce").isna().all():
        raise BoardError("--scaling needs training compute: the records' cost has no train_flops or flops_per_token")
    return chosen.assign(y=y, c=pd.to_numeric(c, errors="coerce")).dropna(subset=["y", "c"])


def fits(chosen: pd.DataFrame, metric: str, split: str) -> dict[tuple[str, str], Fit | str]:
    """(column, family) -> its Fit, or the reason it has none."""
    out: dict[tuple[str, str], Fit | str] = {}
    for (column, family), g in runs(chosen, metric, split).groupby(["column", "family"], sort=True):
        try:
            out[column, family] = fit(g["variant"], g["c"], g["y"])
        except BoardError as e:
            out[column, family] = f"not fitted: {e}"
    return out


def view(
    chosen: pd.DataFrame, key: str, metric: str, split: str, size: Sequence[str]
) -> dict[str, tuple[pd.DataFrame, list[str]]]:
    """Two views: `scaling` (a row per column and family: sizes, runs, measured compute range, b and a with their
    intervals, L at both ends of the range) and `crossings` (each pair of fitted families of a column)."""
    if key not in chosen or chosen[key].isna().all():
        raise BoardError(f"--scaling {key} is not a field of the runs' config")
    found = fits(chosen, metric, split)
    if not found:
        raise BoardError(f"--scaling {key}: no completed run has {split}/{metric} and a training compute")
    y = target(metric, split)
    rows = []
    for (column, family), f in found.items():
        if isinstance(f, str):
            rows.append({"column": column, "family": family, "sizes": "", "b [95%]": f})
            continue
        rows.append(
            {
                "column": column,
                "family": family,
                "sizes": str(f.sizes),
                "runs": str(f.runs),
                "C range (FLOPs)": f"{si(f.c_min)}–{si(f.c_max)}",
                "b [95%]": f"{f.b:.3f} [{f.b_ci[0]:.3f}, {f.b_ci[1]:.3f}]",
                "a [95%]": f"{f.a:.3g} [{f.a_ci[0]:.3g}, {f.a_ci[1]:.3g}]",
                f"{y} at min C → max C": f"{f.predict(f.c_min):.3f} → {f.predict(f.c_max):.3f}",
            }
        )
    table = pd.DataFrame(rows).fillna("").set_index("family")
    pct = f"{100 * LEVEL:.0f}%"
    lines = [
        f"scaling in {key} (families: variants without {', '.join(dict.fromkeys([key, *size]))}): {y} fitted per "
        f"family and column as {FORM}, C = training FLOPs (each run's train_flops, as the board counts its "
        f"costs), by least squares of log L on log C over the sizes (a point per size: the means of log C and "
        f"log L over its seeds); no irreducible term",
        f"[{pct}] = percentile bootstrap over seeds: {RESAMPLES} resamples of the seeds within each size, numpy "
        f"seed {SEED}, deviations scaled by sqrt(n/(n−1)); the spread between seeds only, not the misfit of the "
        "form (3 seeds × 5 sizes: covers the true exponent in about 90% of draws, tests/test_scaling.py)",
        "refused: predictions outside a family's measured C range (no extrapolation), and fits where a run's "
        f"{y} is 0 or negative (a power law never reaches 0)",
    ]
    crossings = _crossings(found)
    cross_lines = [
        f"crossings: the C where two families' fitted {FORM} are equal, with the {pct} percentile interval over "
        "paired bootstrap resamples; outside the measured C range of either family: not claimed"
    ]
    return {"scaling": (table, lines), "crossings": (crossings, cross_lines)}


def _crossings(found: dict[tuple[str, str], Fit | str]) -> pd.DataFrame:
    rows = []
    fitted = [(k, f) for k, f in found.items() if isinstance(f, Fit)]
    for i, ((column, one), f1) in enumerate(fitted):
        for (column2, two), f2 in fitted[i + 1 :]:
            if column2 != column:
                continue
            x = crossing(f1, f2)
            if x.c is None:
                where = "equal exponents: no crossing"
            elif x.inside:
                where = f"{si(x.c)} FLOPs [{si(x.ci[0])}, {si(x.ci[1])}]"
            else:
                where = f"at {si(x.c)} FLOPs: outside the measured range: not claimed"
            rows.append({"column": column, "families": f"{one} × {two}", "crossing": where})
    return pd.DataFrame(rows, columns=["column", "families", "crossing"]).set_index("families")
