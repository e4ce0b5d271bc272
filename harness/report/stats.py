"""Statistics over seeds for the leaderboard: mean, std, Student-t 95% confidence interval, Welch's t-test (the
race's test), and ranks. Vectorized over cells, so that a board of thousands of runs costs milliseconds. The board's
`*` is harness/report/marking.py; `versus_leader` is the marking it replaced, kept to measure against
(scripts/marking_error_rates.py, tests/test_stats.py)."""

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 0.05


def t_interval(
    mean: ArrayLike,
    std: ArrayLike,
    n: ArrayLike,
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Student-t interval mean ± t_{(1+c)/2, n-1} · std / sqrt(n) (std with ddof=1), NaN where n < 2; clipped to
    `bounds` (e.g. (0, 1) for an accuracy) when given. Arrays in, arrays out."""
    mean, std, n = (np.asarray(a, dtype=float) for a in (mean, std, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        half = sps.t.ppf((1 + confidence) / 2, n - 1) * std / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)
    return lo, hi


def welch_p(
    mean1: ArrayLike, std1: ArrayLike, n1: ArrayLike, mean2: ArrayLike, std2: ArrayLike, n2: ArrayLike
) -> np.ndarray:
    """Two-sided p-value of Welch's unequal-variance t-test from summary statistics: t = (m1 - m2) / sqrt(s1²/n1 +
    s2²/n2), Welch–Satterthwaite degrees of freedom. NaN where either side has n < 2. Where both stds are 0 the
    statistic is 0/0 or ±inf: p = 1 for equal means, 0 for different ones."""
    m1, s1, k1, m2, s2, k2 = (np.asarray(a, dtype=float) for a in (mean1, std1, n1, mean2, std2, n2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = sps.ttest_ind_from_stats(m1, s1, k1, m2, s2, k2, equal_var=False).pvalue
    p = np.where((s1 == 0) & (s2 == 0), np.where(m1 == m2, 1.0, 0.0), p)
    return np.where((k1 >= 2) & (k2 >= 2), p, np.nan)


def paired_p(values: pd.DataFrame, leaders: pd.DataFrame, sign: float = 1.0, delta: float = 0.0) -> pd.Series:
    """One-sided paired t-test per cell of `values` (columns variant, column, seed, value; one row per run) that the
    leader of its column (`leaders`: columns column, variant) is better by more than `delta`, on the seeds both
    completed: t = mean(d) / (std(d) / sqrt(m)), d = sign * (leader - cell) - delta per seed, m - 1 degrees of
    freedom. Zero spread: p = 0 where every d > 0, else 1. Indexed by (variant, column); NaN where fewer than 2
    seeds are shared."""
    values = values.dropna(subset=["value"])
    lead = values.merge(leaders[["column", "variant"]], on=["column", "variant"])[["column", "seed", "value"]]
    both = values.merge(lead, on=["column", "seed"], suffixes=("", "_lead"))
    d = sign * (both["value_lead"] - both["value"]) - delta
    g = d.groupby([both["variant"], both["column"]])
    m, s, k = g.mean(), g.std(), g.count()
    with np.errstate(invalid="ignore", divide="ignore"):
        p = sps.t.sf(m / (s / np.sqrt(k)), k - 1)
    p = np.where(s == 0, np.where(m > 0, 0.0, 1.0), p)
    return pd.Series(np.where(k >= 2, p, np.nan), index=m.index)


def versus_leader(cells: pd.DataFrame, by: str, higher_is_better: bool, alpha: float = ALPHA) -> pd.DataFrame:
    """The board's old marking (uncorrected, unpaired: its family-wise error rate grows with the variants of a
    column, docs/board.md). For each cell: `leader` (the best mean of its column `by` among cells with >= 2 seeds;
    among all scored cells only where none has 2), `p_vs_leader` (Welch, NaN for the leader and where a side has
    < 2 seeds) and `tied` (the leader, or p >= alpha: not significantly different from it). A one-seed cell with a
    higher mean neither hides the test of the others nor is marked as tied: it is untested."""
    sign = 1 if higher_is_better else -1
    testable = cells["n"] >= 2
    candidates = cells["n"] > 0
    candidates &= testable | ~testable.groupby(cells[by]).transform("any")  # columns with no 2-seed cell: all
    scored = cells[candidates]
    best = (scored["mean"] * sign).groupby(scored[by]).idxmax()  # column -> index of its leader
    lead_idx = cells[by].map(best).to_numpy()
    lead = cells.reindex(lead_idx)  # the leader of each cell's column, NaN where a column has none
    out = pd.DataFrame(index=cells.index)
    out["leader"] = cells.index.to_numpy() == lead_idx
    p = welch_p(cells["mean"], cells["std"], cells["n"], lead["mean"], lead["std"], lead["n"])
    out["p_vs_leader"] = np.where(out["leader"], np.nan, p)
    out["tied"] = out["leader"] | (out["p_vs_leader"] >= alpha)
    return out


def ranks(cells: pd.DataFrame, by: str, higher_is_better: bool) -> pd.Series:
    """Rank of each cell's mean within its column `by` (1 = best; equal means share the mean of their ranks;
    cells with no completed run rank below all others)."""
    return cells.groupby(by)["mean"].rank(ascending=not higher_is_better, method="average", na_option="bottom")
