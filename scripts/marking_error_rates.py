"""The board's marking (`*`) before and after issue 28, simulated: the family-wise error rate (the share of columns
of identical variants in which at least one is marked worse than the best) and the power (the share of truly worse
rivals marked worse when one variant is better by 1, 2 or 3 noise sd). Prints the Markdown tables of docs/board.md.

Old: every cell against the column's observed best by an uncorrected two-sided Welch test at alpha
(stats.versus_leader). New: harness/report/marking.py, paired by seed (the sweep default), margin delta.

    python scripts/marking_error_rates.py [--columns 2000] [--permutations 999]
"""

import argparse

import numpy as np
import pandas as pd

from harness.report import marking, stats

ALPHA, SD = 0.05, 0.05
DESIGNS = ((3, 4), (6, 5), (20, 3), (24, 3))  # variants x seeds: the main job, a sweep, the zoo boards


def draw(noise: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Normal(0.5, SD), or bimodal: 0.25 or 0.99 with probability 1/2 each, plus Normal(0, 0.01), clipped to [0, 1]
    (a task that some seeds solve and some do not)."""
    if noise == "normal":
        return rng.normal(0.5, SD, shape)
    top = rng.random(shape) < 0.5
    return np.clip(np.where(top, 0.99, 0.25) + rng.normal(0, 0.01, shape), 0, 1)


def old_worse(x: np.ndarray) -> np.ndarray:
    """(columns, k) marked worse by the old procedure on x (columns, k, n)."""
    c, k, n = x.shape
    cells = pd.DataFrame(
        {
            "column": np.repeat(np.arange(c), k),
            "mean": x.mean(-1).ravel(),
            "std": x.std(-1, ddof=1).ravel(),
            "n": n,
        }
    )
    return ~stats.versus_leader(cells, "column", True, ALPHA)["tied"].to_numpy().reshape(c, k)


def new_worse(x: np.ndarray, delta: float, permutations: int) -> np.ndarray:
    """(columns, k) marked worse by harness/report/marking.py, paired by seed, on x (columns, k, n)."""
    out = []
    for chunk in np.array_split(x, max(1, len(x) // 200)):
        p = marking.adjusted_p(chunk.mean(-1), marking.paired_ranges(chunk, permutations), delta)
        out.append(np.nan_to_num(p, nan=1.0) < ALPHA)
    return np.concatenate(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--columns", type=int, default=2000, help="simulated columns per design")
    p.add_argument("--permutations", type=int, default=marking.PERMUTATIONS)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    se = (ALPHA * (1 - ALPHA) / args.columns) ** 0.5
    print(f"Family-wise error rate, identical variants ({args.columns} columns each; Monte-Carlo se at 0.05: {se:.3f})")
    print("\n| noise | variants × seeds | old (Welch vs best, uncorrected) | new (delta = 0) | new (delta = 0.01) |")
    print("|:--|:--|--:|--:|--:|")
    for noise in ("normal", "bimodal"):
        for k, n in DESIGNS:
            x = draw(noise, (args.columns, k, n), rng)
            rates = [old_worse(x).any(1).mean()] + [
                new_worse(x, d, args.permutations).any(1).mean() for d in (0.0, 0.01)
            ]
            label = f"normal, sd {SD}" if noise == "normal" else "bimodal 0.25 / 0.99"
            print(f"| {label} | {k} × {n} | " + " | ".join(f"{r:.3f}" for r in rates) + " |")
    print("\nPower: one variant better by shift × sd (normal, sd 0.05); share of the k - 1 worse rivals marked worse")
    print("\n| variants × seeds | shift | old | new (delta = 0) | new (delta = 0.01) |")
    print("|:--|--:|--:|--:|--:|")
    for k, n in DESIGNS:
        for shift in (1, 2, 3):
            x = draw("normal", (args.columns, k, n), rng)
            x[:, 0] += shift * SD
            power = [old_worse(x)[:, 1:].mean()] + [
                new_worse(x, d, args.permutations)[:, 1:].mean() for d in (0.0, 0.01)
            ]
            print(f"| {k} × {n} | {shift} sd | " + " | ".join(f"{v:.3f}" for v in power) + " |")


if __name__ == "__main__":
    main()
