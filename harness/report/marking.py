"""The board's `*`: "best in its column, or not distinguishable from the best", as a test whose family-wise error
rate over all rivals of a column is at most alpha, whatever the noise (docs/board.md says why this procedure).

Per column, over the cells with 2 or more seeds: the leader is the best mean; a cell is marked **worse** when the
leader's mean exceeds its own by more than the practical margin `delta` plus the (1 - alpha) quantile of the
permutation distribution of the range of the cell means (max - min over the column). The permutations are the
ones under which identical variants give the same distribution: with every cell run on the same seeds (paired, the
default of a sweep, where a seed also fixes the data), the variants' values are shuffled within each seed; with
different seed sets (unpaired), all values of the column are shuffled among the cells, keeping their sizes. When the
variants are identical the range of the observed means is exchangeable with the permuted ranges, and every rival's
gap to the leader is at most that range, so the chance that any rival is marked worse is at most alpha for any
number of variants and any noise distribution (bimodal included): a single-step max-T test over all pairs, with the
range as the max statistic. The adjusted p-value of a cell, `(1 + #{permuted ranges >= gap - delta}) / (1 + B)`, is
the smallest alpha at which it would be marked worse. The permutations are drawn from a fixed seed, so a board is
bitwise repeatable.
"""

import numpy as np
import pandas as pd

from tasks.registry import LOWER_IS_BETTER

ALPHA = 0.05
PERMUTATIONS = 999  # B: Monte-Carlo permutations per column; the p-value is valid for any B (its resolution 1/(B+1))
SEED = 0  # every column draws its permutations from this seed: a board is bitwise repeatable
# the smallest difference that matters, in the metric's own units: a rival is marked worse only if it is below the
# leader by more than this (so 1.000 against 0.999 on every seed is a tie); metrics not named here: 0
DELTA = {"accuracy": 0.01, "loss": 0.01, "bits_per_byte": 0.01, "perplexity": 0.1}
SOLVED = 0.9  # an accuracy seed at or above this "solves" the task: the cell shows how many seeds did


def delta_for(metric: str) -> float:
    """The default practical-equivalence margin of `metric` (DELTA; 0 for a metric it does not name)."""
    return DELTA.get(metric, 0.0)


def paired_ranges(x: np.ndarray, permutations: int = PERMUTATIONS, seed: int = SEED) -> np.ndarray:
    """The range of the cell means (max - min over the variants) of `x` (..., k variants, n seeds) under
    `permutations` random shuffles of the variants within each seed; the same shuffles for every leading index.
    Shape (..., permutations)."""
    rng = np.random.default_rng(seed)
    k, n = x.shape[-2:]
    order = np.argsort(rng.random((permutations, k, n)), axis=-2)  # a shuffle of the variants per seed
    shape = (*x.shape[:-2], permutations, k, n)
    means = np.take_along_axis(np.broadcast_to(x[..., None, :, :], shape), np.broadcast_to(order, shape), -2)
    means = means.mean(-1)
    return means.max(-1) - means.min(-1)


def unpaired_ranges(values: list[np.ndarray], permutations: int = PERMUTATIONS, seed: int = SEED) -> np.ndarray:
    """The range of the cell means when all values of `values` (one array per cell) are shuffled among the cells,
    their sizes kept. Shape (permutations,)."""
    rng = np.random.default_rng(seed)
    flat = np.concatenate(values)
    sizes = np.array([len(v) for v in values])
    onehot = np.eye(len(values))[np.repeat(np.arange(len(values)), sizes)]  # (N, k): the cell of each position
    means = flat[np.argsort(rng.random((permutations, len(flat))), axis=1)] @ onehot / sizes
    return means.max(-1) - means.min(-1)


def adjusted_p(means: np.ndarray, ranges: np.ndarray, delta: float) -> np.ndarray:
    """Each cell's adjusted p-value of being more than `delta` below the best of `means` (..., k), from the permuted
    `ranges` (..., B): (1 + #{ranges >= best - mean - delta}) / (B + 1). The leader (first best) gets NaN."""
    gap = means.max(-1, keepdims=True) - means - delta
    p = (1 + (ranges[..., :, None] >= gap[..., None, :]).sum(-2)) / (ranges.shape[-1] + 1)
    lead = np.argmax(means, -1)[..., None]
    np.put_along_axis(p, lead, np.nan, -1)
    return p


def largest_range(values: list[np.ndarray], paired: bool) -> float:
    """The largest range of cell means any relabelling of `values` can give: every seed's best value in one cell and
    its worst in another (paired), or the top values of the column in one cell and the bottom ones in another."""
    if paired:
        x = np.stack(values)
        return float((x.max(0) - x.min(0)).mean())
    flat, sizes = np.sort(np.concatenate(values)), [len(v) for v in values]
    return max(flat[-a:].mean() - flat[:b].mean() for i, a in enumerate(sizes) for j, b in enumerate(sizes) if i != j)


def column_test(
    values: list[np.ndarray], paired: bool, delta: float, permutations: int = PERMUTATIONS, seed: int = SEED
) -> tuple[int, np.ndarray, float]:
    """For one column's testable cells (`values` oriented so that higher is better): the index of the leader (the
    first best mean), each cell's adjusted p-value of being more than `delta` below it (NaN for the leader), and the
    smallest p-value these values could give any cell (the largest possible gap; at or above alpha, no cell of the
    column can be marked worse: too few seeds or variants, e.g. 3 variants x 3 seeds, 2 variants x 5)."""
    means = np.array([v.mean() for v in values])
    if paired:
        ranges = paired_ranges(np.stack(values), permutations, seed)
    else:
        ranges = unpaired_ranges(values, permutations, seed)
    top = largest_range(values, paired)
    floor = (1 + (ranges >= top - 1e-12 * (1 + abs(top))).sum()) / (permutations + 1)
    return int(np.argmax(means)), adjusted_p(means, ranges, delta), float(floor)


def versus_best(
    cells: pd.DataFrame,
    runs: pd.DataFrame,
    by: str,
    higher_is_better: bool,
    alpha: float = ALPHA,
    delta: float = 0.0,
    permutations: int = PERMUTATIONS,
) -> pd.DataFrame:
    """For each row of `cells` (with `by`, `cell` (a key shared with `runs`) and `n`): `leader` (the best mean of
    its column among cells with >= 2 seeds; among all scored cells only where none has 2), `p_vs_leader` (adjusted
    p-value of being more than delta below the leader, NaN for the leader and untested cells), `tied` (the leader,
    or not marked worse), `paired` (whether its column was tested paired by seed) and `separable` (whether the
    column's design can mark any cell worse at alpha at all). `runs` holds one row per run: `cell`, `seed`,
    `value`. A one-seed cell is untested: not tied, not hiding the test of the others."""
    sign = 1.0 if higher_is_better else -1.0
    out = pd.DataFrame(index=cells.index)
    out["leader"], out["p_vs_leader"], out["tied"] = False, np.nan, False
    out["paired"], out["separable"] = pd.Series(pd.NA, index=cells.index, dtype="boolean"), pd.NA
    out["separable"] = out["separable"].astype("boolean")
    runs = runs[runs["value"].notna()]
    per_cell = {c: g for c, g in runs.groupby("cell", sort=False)}
    for _, column in cells[cells["n"] > 0].groupby(by, sort=False):
        testable = column[column["n"] >= 2]
        if len(testable) < 2:  # nothing to compare: the best cell leads (among one-seed cells where none has 2)
            lead = ((testable if len(testable) else column)["mean"] * sign).idxmax()
            out.loc[lead, ["leader", "tied"]] = True
            continue
        groups = [per_cell[c].sort_values("seed", kind="stable") for c in testable["cell"]]
        seeds = [tuple(g["seed"]) for g in groups]  # paired: every cell on the same seeds, each once, all known
        known = all(g["seed"].notna().all() for g in groups) and len(set(seeds[0])) == len(seeds[0])
        paired = known and all(s == seeds[0] for s in seeds)
        values = [sign * g["value"].to_numpy(float) for g in groups]
        lead, p, floor = column_test(values, paired, delta, permutations)
        out.loc[testable.index, "p_vs_leader"] = p
        out.loc[testable.index, "tied"] = ~(p < alpha)
        out.loc[testable.index[lead], "leader"] = True
        out.loc[column.index, "paired"] = paired
        out.loc[column.index, "separable"] = floor < alpha
    return out


def solved(values: pd.Series, cell: pd.Series, threshold: float) -> pd.Series:
    """How many of each cell's values are at or above `threshold` (an accuracy cell's seeds that solve the task)."""
    return (values >= threshold).groupby(cell, sort=False).sum()


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER
