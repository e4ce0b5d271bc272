"""Tuned comparisons by default: a suite's declared grid (`tune:`) is selected on validation with no flag, and the
board says when a comparison is not tuned."""

from harness.report import board
from tests.test_board import record


def tuned(mixer, seed, lr, val, test, tune=("trainer.lr",)):
    r = record(mixer, "mqar", seed, test, val=val, lr=lr)
    r["config"]["tune"] = list(tune)
    return r


def test_a_declared_grid_is_selected_on_validation_without_a_flag_and_the_legend_says_so():
    records = [
        # attention is best at the high lr on val, linear attention at the low one; test disagrees with val on
        # purpose: the board must choose on val and report test
        *(tuned("attention", s, 1e-2, val=0.9, test=0.8) for s in range(3)),
        *(tuned("attention", s, 1e-3, val=0.5, test=0.95) for s in range(3)),
        *(tuned("linear_attention", s, 1e-2, val=0.2, test=0.9) for s in range(3)),
        *(tuned("linear_attention", s, 1e-3, val=0.6, test=0.4) for s in range(3)),
    ]
    b = board.build(records)
    cells = b.long.set_index("variant")
    assert round(cells.loc["attention", "mean"], 9) == 0.8 and round(cells.loc["linear_attention", "mean"], 9) == 0.4
    assert set(b.long["selected"]) == {"lr=0.01", "lr=0.001"}
    [line] = [line for line in b.legend if line.startswith("tuned:")]
    assert "trainer.lr" in line and "validation" in line and "declared by the suite" in line


def test_one_value_of_a_declared_field_is_said_to_be_not_tuned():
    records = [tuned(m, s, 3e-3, val=0.5, test=0.5) for m in ("attention", "hyena") for s in range(2)]
    b = board.build(records)
    [line] = [line for line in b.legend if line.startswith("not tuned:")]
    assert "trainer.lr=0.003" in line and "declares a grid" in line
    assert "selected" not in b.long or b.long["selected"].isna().all()


def test_a_board_with_no_declaration_says_its_one_lr_is_not_tuned():
    records = [record(m, "mqar", s, 0.5) for m in ("attention", "hyena") for s in range(2)]
    [line] = [line for line in board.build(records).legend if line.startswith("not tuned:")]
    assert "trainer.lr=0.001" in line and "no grid declared" in line


def test_an_explicit_select_still_wins_over_the_declaration():
    records = [
        tuned(m, s, lr, val=0.5, test=0.5, tune=()) for m in ("attention",) for s in range(2) for lr in (1e-3, 1e-2)
    ]
    b = board.build(records, select=["trainer.lr"])
    assert any(line.startswith("tuned:") and "--select" in line for line in b.legend)


def test_a_racing_survivor_is_chosen_over_a_point_with_fewer_seeds_and_ties_go_to_the_lower_val_loss():
    """The board chooses the grid point the race's halving kept (harness/run/race.py): the point with the most runs,
    even where an eliminated point's one seed scored higher on val than the survivor's mean (its later seeds were
    worse); among points with as many runs, at equal val accuracy the lower val loss wins."""
    records = [
        tuned("attention", 0, 1e-2, val=0.95, test=0.1),  # eliminated after seed 0: one run
        *(tuned("attention", s, 1e-3, val=0.96 - 0.1 * s, test=0.7) for s in range(3)),  # survivor: mean 0.86
    ]
    for lr, loss in ((1e-3, 0.5), (1e-2, 0.2)):  # linear attention: 1.000 at both lrs; 1e-2 has the lower loss
        for s in range(2):
            r = tuned("linear_attention", s, lr, val=1.0, test=0.3 if lr == 1e-3 else 0.6)
            r["metrics"]["val/loss"] = loss
            records.append(r)
    cells = board.build(records).long.set_index("variant")
    assert cells.loc["attention", "selected"] == "lr=0.001" and round(cells.loc["attention", "mean"], 9) == 0.7
    assert cells.loc["linear_attention", "selected"] == "lr=0.01"
    assert round(cells.loc["linear_attention", "mean"], 9) == 0.6


def test_the_ranking_keeps_the_best_third_per_cell():
    import pandas as pd

    from harness.report.tuning import ranked

    runs = pd.DataFrame(
        {
            "cell": ["a"] * 3 + ["b"] * 3,
            "lr": [1, 2, 3] * 2,
            "score": [0.1, 0.9, float("nan"), 0.5, 0.5, 0.4],
            "failed": [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
            "tiebreak": [-1.0, -1.0, float("nan"), -2.0, -1.0, -1.0],
        }
    )
    order = ranked(runs, ["cell"], ["lr"])
    assert order.groupby("cell").head(1).set_index("cell")["lr"].to_dict() == {"a": 2, "b": 2}
    assert len(order[order.cell == "a"]) == 2  # a point whose runs all failed is dropped
