"""A race over a tuned grid (harness/run/race.py: successive halving of each cell's lrs on validation, then the race
over seeds at the lr kept), simulated many times with no training: its error rate and its selection bias, the
figures docs/racing.md states. Each simulated run has a true mean per (variant, lr), a seed effect shared by every
run of that seed (the seed fixes the data), its own training noise shared by its val and test numbers, and split
noise of its own on each split."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.report import race

ALPHA = 0.05
SEED_SD, RUN_SD, SPLIT_SD = 0.01, 0.03, 0.01  # a seed's shared effect, a run's own, each split's own


def draw(mu: np.ndarray, races: int, seeds: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Val and test of every (race, variant, lr, seed): arrays of shape (races, K, A, seeds)."""
    shape = (races, *mu.shape, seeds)
    shared = rng.normal(0, SEED_SD, (races, 1, 1, seeds)) + rng.normal(0, RUN_SD, shape) + mu[None, :, :, None]
    return shared + rng.normal(0, SPLIT_SD, shape), shared + rng.normal(0, SPLIT_SD, shape)


def halve(val: np.ndarray, eta: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Successive halving per (race, variant) over the lr axis, one seed a round, as the sweeper does: the lr kept
    and the seeds it has. Returns (kept lr index, seeds used) arrays of shape (races, K)."""
    races, k, arms, _ = val.shape
    alive = np.ones((races, k, arms), bool)
    used = 0
    while (alive.sum(-1) > 1).any():
        mean = val[..., : used + 1].mean(-1)
        score = np.where(alive, mean, -np.inf)
        keep = np.ceil(alive.sum(-1) / eta).astype(int)
        order = np.argsort(-score, axis=-1, kind="stable")
        rank = np.argsort(order, axis=-1)
        alive = alive & (rank < keep[..., None])
        used += 1
    return alive.argmax(-1), np.full((races, k), used)


def simulate(mu, races: int, min_seeds: int = 2, max_seeds: int = 4, seed: int = 0) -> dict:
    """`races` races of variants with true means `mu` (K variants x A lrs): halving on val, then the seeds race on
    val at the lr kept, reusing the halving's seeds. Returns the decisions, the lr kept, and per variant the test
    mean the board reports minus the true mean of the lr kept (the selection bias)."""
    rng = np.random.default_rng(seed)
    mu = np.asarray(mu, float)
    k = mu.shape[0]
    val, test = draw(mu, races, max_seeds + mu.shape[1], rng)
    kept, used = halve(val)
    r, v = np.meshgrid(np.arange(races), np.arange(k), indexing="ij")
    val_kept, test_kept = val[r, v, kept], test[r, v, kept]  # (races, K, seeds)
    seeds = np.maximum(used, min_seeds)
    variant = np.tile([f"v{i}" for i in range(k)], races)
    column = np.repeat([f"r{i}" for i in range(races)], k)
    while True:
        upto = np.arange(val_kept.shape[-1])[None, None, :] < seeds[..., None]
        values = np.where(upto, val_kept, np.nan)
        long = pd.DataFrame(
            {
                "variant": variant,
                "column": column,
                "mean": np.nanmean(values, -1).ravel(),
                "std": np.nanstd(values, -1, ddof=1).ravel(),
                "n": seeds.ravel(),
                "failed": 0,
            }
        )
        s_idx = np.nonzero(upto.reshape(races * k, -1))
        per_run = pd.DataFrame({"variant": variant[s_idx[0]], "column": column[s_idx[0]], "seed": s_idx[1]}).assign(
            value=values.reshape(races * k, -1)[s_idx]
        )
        decided = race.decide(long, ALPHA, min_seeds, max_seeds, values=per_run)
        more = decided["open"].to_numpy().reshape(races, k)
        if not more.any():
            break
        seeds = seeds + more
    reported = np.nanmean(np.where(upto, test_kept, np.nan), -1)
    return {
        "worse": decided["decision"].to_numpy().reshape(races, k) == "worse",
        "kept": kept,
        "bias": reported - mu[v, kept],
    }


def tolerance(races: int, rate: float) -> int:
    return int(sps.binom.ppf(0.9999, races, rate))


CLEAR = [[0.5, 0.7, 0.5], [0.7, 0.7, 0.7], [0.7, 0.7, 0.7]]  # v0's best lr stands out; the rivals flat at the top
EQUAL = [[0.7, 0.7, 0.7]] * 3


@pytest.mark.parametrize("mu", [CLEAR, EQUAL], ids=["one lr stands out", "every lr equal"])
def test_a_variant_as_good_as_the_best_is_marked_worse_at_most_at_rate_alpha(mu):
    """docs/racing.md's statement for a tuned grid: where halving finds a variant's best lr (its gap to the next lr
    well above a run's noise), the race marks a variant whose best lr is as good as the column's best worse with
    probability at most alpha, although the lr was chosen on the same validation seeds the race then tests."""
    races = 1500
    out = simulate(mu, races)
    assert (np.asarray(mu)[0, out["kept"][:, 0]] == 0.7).mean() > 0.99  # halving found v0's best lr
    for i in range(3):
        assert out["worse"][:, i].sum() <= tolerance(races, ALPHA), (i, out["worse"][:, i].mean())


def test_where_lrs_are_closer_than_a_runs_noise_halving_can_miss_the_best_and_the_rate_is_no_longer_alpha():
    """The statement's limit, as docs/racing.md says: halving on one seed a round picks v0's best lr only as often
    as one seed can tell the lrs apart; a miss leaves v0 at a worse lr, and the race then (rightly, at that lr)
    marks it worse: the procedure's error rate for v0 then exceeds alpha."""
    races = 1500
    out = simulate([[0.66, 0.7, 0.66], [0.7, 0.7, 0.7], [0.7, 0.7, 0.7]], races)
    assert (out["kept"][:, 0] != 1).mean() > 0.2
    assert out["worse"][:, 0].sum() > tolerance(races, ALPHA)


def test_the_selection_bias_of_the_reported_test_mean_is_as_stated():
    """Choosing the best of 3 equal lrs on val seed 0 and reporting test over the kept lr's seeds (seed 0 among
    them) biases the reported mean upwards: by the part of the chosen run's luck that val and test share (its
    training noise, not its split noise). docs/racing.md states it: about 0.85 x RUN_SD^2 / sqrt(RUN_SD^2 +
    SPLIT_SD^2) / n for n seeds reported (0.85 = E[max of 3 standard normals]); a race that reaches more seeds
    dilutes it as 1/n. Checked here within 20 % at n = 2 and at n = 4."""
    races = 4000
    for seeds in (2, 4):
        out = simulate(EQUAL, races, min_seeds=seeds, max_seeds=seeds)
        measured = out["bias"].mean()
        stated = 0.846 * RUN_SD**2 / np.hypot(RUN_SD, SPLIT_SD) / seeds
        assert measured == pytest.approx(stated, rel=0.2), (seeds, measured, stated)
