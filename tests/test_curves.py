"""Learning curves that do not lie: a seed that stopped early at its target keeps its last value, so the mean over
seeds never falls where no seed got worse (issue 28, finding 6)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.report import board, plots
from tests.conftest import examples
from tests.test_board import record, write_all


def history(values: list[float], every: int = 100) -> list[dict]:
    return [{"step": every * (i + 1), "val/accuracy": v} for i, v in enumerate(values)]


def board_of(tmp_path, histories: list[list[float]]) -> board.Board:
    recs = [record("attention", "mqar", s, h[-1], history=history(h)) for s, h in enumerate(histories)]
    write_all(tmp_path, recs)
    return board.leaderboard([tmp_path])


def test_the_main_jobs_attention_curve_no_longer_forgets(tmp_path):
    """The main job's case: seeds 0 and 1 reach the target and stop (0.996 at 600, 0.993 at 400), seeds 2 and 3 are
    still learning. Averaging only the seeds still running made the mean fall from 0.61 to 0.35."""
    histories = [
        [0.10, 0.30, 0.60, 0.90, 0.95, 0.996],
        [0.20, 0.50, 0.80, 0.993],
        [0.05, 0.10, 0.20, 0.25, 0.30, 0.33, 0.35],
        [0.05, 0.10, 0.20, 0.25, 0.30, 0.33, 0.36],
    ]
    data = plots.curve_data(board_of(tmp_path, histories))
    naive = [np.mean([h[i] for h in histories if len(h) > i]) for i in range(7)]
    assert naive[3] > naive[6]  # what curves.png drew: a fall while no seed got worse
    assert data["step"].tolist() == [100, 200, 300, 400, 500, 600, 700] and (data["n"] == 4).all()
    assert np.all(np.diff(data["mean"]) >= 0)
    assert data["mean"].iloc[-1] == np.mean([0.996, 0.993, 0.35, 0.36])
    assert data["max"].iloc[-1] == 0.996 and data["min"].iloc[-1] == 0.35
    path = plots.curves(board_of(tmp_path / "plot", histories), tmp_path / "curves.png")
    assert path.stat().st_size > 0


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.lists(st.floats(0, 0.2), min_size=1, max_size=8).map(lambda d: list(np.cumsum(d))),
        min_size=1,
        max_size=5,
    )
)
def test_the_mean_never_falls_when_no_seed_got_worse(tmp_path_factory, histories):
    data = plots.curve_data(board_of(tmp_path_factory.mktemp("runs"), histories))
    assert np.all(np.diff(data["mean"].to_numpy()) >= -1e-12)
    assert np.all(data["min"] <= data["mean"] + 1e-12) and np.all(data["mean"] <= data["max"] + 1e-12)
    assert data["n"].iloc[-1] == len(histories)  # every seed counts at the column's last step
