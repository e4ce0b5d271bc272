"""The statistics behind the leaderboard, against scipy on raw samples and against numbers worked by hand."""

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.report import stats


def test_t_interval_matches_scipy_and_a_hand_computed_value():
    samples = [0.9, 1.0, 0.8]
    m, s = statistics.mean(samples), statistics.stdev(samples)
    lo, hi = stats.t_interval([m], [s], [3])
    assert (lo[0], hi[0]) == pytest.approx(sps.t.interval(0.95, 2, loc=m, scale=s / math.sqrt(3)))
    assert hi[0] - m == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)  # t_{0.975, 2} = 4.3027
    lo, hi = stats.t_interval([m], [s], [3], bounds=(0.0, 1.0))
    assert lo[0] == pytest.approx(m - 4.302653 * 0.1 / math.sqrt(3), rel=1e-6) and hi[0] == 1.0


def test_t_interval_needs_two_seeds():
    lo, hi = stats.t_interval([0.5, 0.5], [np.nan, 0.0], [1, 2])
    assert np.isnan(lo[0]) and np.isnan(hi[0])
    assert lo[1] == hi[1] == 0.5  # zero spread: a zero-width interval


@pytest.mark.parametrize(
    "a,b",
    [([0.9, 1.0, 0.8], [0.5, 0.7, 0.6]), ([0.9, 1.0, 0.8], [0.8, 0.9, 0.85]), ([0.1, 0.3], [0.2, 0.25, 0.22, 0.3])],
)
def test_welch_matches_scipy_on_raw_samples(a, b):
    p = stats.welch_p(np.mean(a), np.std(a, ddof=1), len(a), np.mean(b), np.std(b, ddof=1), len(b))
    assert p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)


def test_welch_degenerate_cases():
    assert stats.welch_p(1.0, 0.0, 3, 1.0, 0.0, 3) == 1.0  # identical constant samples
    assert stats.welch_p(1.0, 0.0, 3, 0.9, 0.0, 3) == 0.0  # different constant samples
    assert np.isnan(stats.welch_p(1.0, np.nan, 1, 0.5, 0.1, 3))  # one seed: no test


def test_versus_leader_and_ranks():
    cells = pd.DataFrame(
        {
            "column": ["t", "t", "t", "u", "u"],
            "mean": [0.9, 0.6, 0.85, 0.2, np.nan],
            "std": [0.1, 0.1, 0.05, 0.0, np.nan],
            "n": [3, 3, 3, 1, 0],
        }
    )
    out = stats.versus_leader(cells, "column", higher_is_better=True)
    assert out["leader"].tolist() == [True, False, False, True, False]
    p_low = sps.ttest_ind_from_stats(0.9, 0.1, 3, 0.6, 0.1, 3, equal_var=False).pvalue
    assert out["p_vs_leader"][1] == pytest.approx(p_low) and p_low < 0.05
    assert out["tied"].tolist() == [True, False, True, True, False]
    assert stats.ranks(cells, "column", True).tolist() == [1.0, 3.0, 2.0, 1.0, 2.0]  # no run ranks last
    assert stats.ranks(cells.assign(mean=[0.5, 0.5, 0.1, 0.2, 0.3]), "column", True).tolist()[:3] == [1.5, 1.5, 3.0]
    assert stats.ranks(cells, "column", higher_is_better=False).tolist()[:3] == [3.0, 1.0, 2.0]
