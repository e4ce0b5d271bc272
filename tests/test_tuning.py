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
