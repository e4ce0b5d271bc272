"""The sensitivity view (`--sensitivity KEY`) and the edge flag of `--select`, on records whose numbers the test sets:
every mean, min and max is checked against values computed here from the raw samples."""

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.report import BoardError, board
from harness.report import cli as board_cli
from tests.conftest import examples
from tests.test_board import record, write_all
from tests.test_board_outputs import assert_png

LRS = (1e-4, 1e-3, 1e-2)
BEST = {"attention": 1e-3, "hyena": 1e-2}  # hyena's best is the grid's largest value: at the edge


def val_of(mixer, lr, seed):
    return 0.9 - (0.0 if lr == BEST[mixer] else 0.1 + 100 * lr / 10) + seed / 50


def grid_records(seeds=(0, 1, 2)):
    return [
        record(m, "mqar", s, test=val_of(m, lr, s) - 0.05, val=val_of(m, lr, s), lr=lr)
        for m in BEST
        for lr in LRS
        for s in seeds
    ]


def test_view_numbers_equal_the_hand_computed_means_and_bands(tmp_path):
    write_all(tmp_path, grid_records())
    result = board.leaderboard([tmp_path], select=["trainer.lr"], sensitivity="trainer.lr")
    table, legend = result.views["sensitivity"]
    assert list(table.columns) == ["column", "lr=0.0001", "lr=0.001", "lr=0.01"]
    for mixer in BEST:
        row = table.loc[mixer]
        for lr in LRS:
            vals = [val_of(mixer, lr, s) for s in (0, 1, 2)]
            tests = [v - 0.05 for v in vals]
            text = (
                f"{statistics.mean(vals):.3f} [{min(vals):.3f}, {max(vals):.3f}] → "
                f"{statistics.mean(tests):.3f} [{min(tests):.3f}, {max(tests):.3f}]"
            ) + (" (chosen)" if lr == BEST[mixer] else "")
            assert row[f"lr={lr:g}"] == text
    assert "min–max over seeds" in legend[0] and "val/accuracy" in legend[0]
    points = board.sensitivity_points(board.scan([tmp_path]).records, result, "trainer.lr")
    hyena = points[(points.variant == "hyena") & (points["trainer.lr"] == 1e-2)].iloc[0]
    assert hyena["val_mean"] == pytest.approx(statistics.mean(val_of("hyena", 1e-2, s) for s in (0, 1, 2)))
    assert hyena["n"] == 3 and hyena["chosen"]


def test_a_choice_at_the_edge_of_the_grid_is_flagged(tmp_path):
    write_all(tmp_path, grid_records())
    result = board.leaderboard([tmp_path], select=["trainer.lr"])
    assert result.table.loc["hyena", "mqar"].endswith("@ lr=0.01 (edge)")  # the largest value searched
    assert result.table.loc["attention", "mqar"].endswith("@ lr=0.001")  # inside the grid: no flag
    assert any("grid should be widened" in line for line in result.legend)
    cells = result.long.set_index("variant")
    assert cells.loc["hyena", "edge"] == "edge" and cells.loc["attention", "edge"] == ""


def test_two_values_and_interior_choices_are_not_flagged(tmp_path):
    """With 2 values every choice is at an edge: the flag would say nothing."""
    recs = [r for r in grid_records() if r["config"]["trainer"]["lr"] != 1e-4]
    write_all(tmp_path, recs)
    result = board.leaderboard([tmp_path], select=["trainer.lr"])
    assert "(edge)" not in result.table.to_string()
    assert not any("widened" in line for line in result.legend)


def test_a_value_whose_runs_failed_is_shown_and_not_chosen(tmp_path):
    recs = grid_records()
    recs.append(record("attention", "mqar", 3, 0, lr=1e-3, status="diverged"))
    recs += [record("attention", "mqar", 3, 0.5, lr=lr) for lr in (1e-4, 1e-2)]
    write_all(tmp_path, recs)
    table, legend = board.leaderboard([tmp_path], sensitivity="trainer.lr", select=["trainer.lr"]).views["sensitivity"]
    assert "[1 failed]" in table.loc["attention", "lr=0.001"] and "(chosen)" not in table.loc["attention", "lr=0.001"]
    assert any("[k failed]" in line for line in legend)


def test_other_select_keys_are_chosen_on_val_at_each_value(tmp_path):
    """Weight decay 0.1 or 0.0: at each lr the board keeps the one with the better val, reports its runs."""
    recs = grid_records(seeds=(0, 1))
    for r in grid_records(seeds=(0, 1)):
        r = {**r, "config": {**r["config"], "trainer": {**r["config"]["trainer"], "weight_decay": 0.0}}}
        r["metrics"] = {k: v - 0.2 for k, v in r["metrics"].items()}  # worse everywhere, on val too
        r["overrides"] = [*r["overrides"], "trainer.weight_decay=0.0"]
        r["run_id"] = r["run_id"] + "wd0"
        recs.append(r)
    write_all(tmp_path, recs)
    result = board.leaderboard([tmp_path], select=["trainer.lr", "trainer.weight_decay"], sensitivity="trainer.lr")
    table, legend = result.views["sensitivity"]
    vals = [val_of("hyena", 1e-2, s) for s in (0, 1)]
    assert table.loc["hyena", "lr=0.01"].startswith(f"{statistics.mean(vals):.3f} [")
    assert "trainer.weight_decay" in legend[0]
    assert result.table.loc["hyena", "mqar"].endswith("@ lr=0.01 weight_decay=0.1 (edge: lr)")  # wd: 2 values


def test_bad_keys_stop_with_one_line(tmp_path, capsys):
    write_all(tmp_path, grid_records())
    with pytest.raises(BoardError, match="not a field"):
        board.leaderboard([tmp_path], sensitivity="trainer.nope")
    with pytest.raises(SystemExit) as stop:
        board_cli.main([str(tmp_path), "--sensitivity", "trainer.weight_decay"])
    assert stop.value.code == 2 and "one value" in capsys.readouterr().err


def test_the_plot_is_written_with_the_others_and_every_format_has_the_view(tmp_path, capsys):
    write_all(tmp_path / "runs", grid_records())
    plots, out = tmp_path / "plots", tmp_path / "out"
    board_cli.main(
        [
            *(str(tmp_path / "runs"), "--select", "trainer.lr", "--sensitivity", "trainer.lr"),
            *("--plots", str(plots), "--out", str(out), "--format", "md,csv,html,tex"),
        ]
    )
    assert_png(plots / "sensitivity_trainer.lr.png")
    assert "lr=0.01 (edge)" in capsys.readouterr().out
    for fmt in ("md", "html", "tex"):
        assert "sensitivity to trainer.lr" in (out / f"leaderboard.{fmt}").read_text()
    assert "edge" in (out / "leaderboard.csv").read_text().splitlines()[0]


RUN = st.tuples(
    st.sampled_from(["attention", "hyena"]),
    st.sampled_from(["mqar", "ih"]),
    st.sampled_from(LRS),
    st.integers(0, 2),
    st.sampled_from([0.1, 0.5, 0.9]),
    st.sampled_from(["completed", "completed", "diverged"]),
)


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(RUN, min_size=1, max_size=16, unique_by=lambda r: r[:4]))
def test_the_view_counts_every_run_once_and_agrees_with_select(runs):
    """Random grids with failures: every run is counted at its value (n + failed), and the value marked chosen
    is as good on val as the one --select reports (as many runs, equal mean val, equal failure rate: ties may
    pick either)."""
    recs = [record(m, t, s, v, lr=lr, status=status) for m, t, lr, s, v, status in runs]
    for i, r in enumerate(recs):
        r["run_id"] = f"r{i}"
    try:
        result = board.build(recs, select=["trainer.lr"], sensitivity="trainer.lr")
    except BoardError as e:  # one lr value in the whole set: refused in one line
        assert "one value" in str(e) and len({r[2] for r in runs}) == 1
        return
    points = board.sensitivity_points(recs, result, "trainer.lr")
    assert points["n"].sum() + points["failed"].sum() == len(recs)
    for cell in result.long[result.long.n > 0].itertuples(index=False):
        here = points[(points.variant == cell.variant) & (points.column == cell.column)]
        ours = here[here.chosen].iloc[0]
        theirs = here[here["trainer.lr"].map(lambda v: f"lr={v}") == cell.selected].iloc[0]
        assert ours["n"] + ours["failed"] == theirs["n"] + theirs["failed"]  # the most runs first (a race's survivor)
        assert ours["val_mean"] == pytest.approx(theirs["val_mean"])
        assert ours["failed"] / (ours["n"] + ours["failed"]) == theirs["failed"] / (theirs["n"] + theirs["failed"])
