"""ListOps: labels equal an independent recursive evaluation of the expression, trees respect the generator's
bounds, and the scored position is the expression's last token."""

import numpy as np
import pytest

from tasks.base import IGNORE
from tasks.listops import END, FIRST_OP, PAD, ListOps, apply_operators, to_text


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHBENCH_CACHE", str(tmp_path / "cache"))


def evaluate(tokens, i=0, depth=1):
    """(value, next index, depth of the deepest node, most arguments of any operator) of the expression at i."""
    t = int(tokens[i])
    if t < 10:
        return t, i + 1, depth, 0
    assert FIRST_OP <= t < FIRST_OP + 4, f"expected an operator or a digit at {i}, got {t}"
    args, i, deepest, widest = [], i + 1, depth, 0
    while tokens[i] != END:
        value, i, d, w = evaluate(tokens, i, depth + 1)
        args.append(value)
        deepest, widest = max(deepest, d), max(widest, w)
    op = ["MIN", "MAX", "MED", "SM"][t - FIRST_OP]
    value = {"MIN": min(args), "MAX": max(args), "MED": int(np.median(args)), "SM": sum(args) % 10}[op]
    return value, i + 1, deepest, max(widest, len(args))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(seq_len=64, max_depth=4, max_args=5, min_length=16, max_length=64),
        dict(seq_len=300, max_depth=6, max_args=8, min_length=100, max_length=300),
    ],
)
def test_labels_equal_an_independent_evaluation_of_random_trees(kwargs):
    task = ListOps(**kwargs, num_train=10, num_val=10, num_test=400, roots_per_batch=5000)
    task.check()
    s = task.split("test", 0)
    x, y = s.inputs.numpy(), s.targets.numpy()
    ops = []
    for row_x, row_y in zip(x, y, strict=True):
        length = int((row_x != PAD).sum())
        assert (row_x[length:] == PAD).all(), "the expression is left-aligned, padding after it"
        assert task.min_length < length < task.max_length
        value, end, depth, widest = evaluate(row_x)
        assert end == length and depth <= task.max_depth and 2 <= widest <= task.max_args
        assert np.flatnonzero(row_y != IGNORE).tolist() == [length - 1] and row_x[length - 1] == END
        assert row_y[length - 1] == value
        ops += [t for t in row_x if FIRST_OP <= t < FIRST_OP + 4]
    share = np.bincount(np.array(ops) - FIRST_OP, minlength=4) / len(ops)
    assert (abs(share - 0.25) < 0.03).all(), "operators are equally likely"
    assert len(set(y[y != IGNORE])) == 10


def test_operators_match_python_on_random_argument_lists():
    rng = np.random.default_rng(0)
    lists = [list(rng.integers(0, 10, size=rng.integers(2, 11))) for _ in range(3000)]
    counts = np.array([np.bincount(a, minlength=10) for a in lists])
    op = rng.integers(0, 4, size=len(lists))
    expected = [[min(a), max(a), int(np.median(a)), sum(a) % 10][o] for a, o in zip(lists, op, strict=True)]
    np.testing.assert_array_equal(apply_operators(counts, op), expected)


def test_lra_setting_gives_lengths_between_500_and_2000_and_is_deterministic():
    task = ListOps(num_train=20, num_val=20, num_test=20, roots_per_batch=4000)
    a, b = task.split("val", 0), task.split("val", 0)
    assert (a.inputs == b.inputs).all() and a.inputs.shape == (20, 2000)
    lengths = (a.inputs != PAD).sum(1)
    assert (lengths > 500).all() and (lengths < 2000).all()
    assert to_text(a.inputs[0].numpy()).startswith("[") and to_text(a.inputs[0].numpy()).endswith("]")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(seq_len=100), "seq_len=100 must hold the longest expression"),
        (dict(min_length=2000), "min_length=2000 must be >= 0 and leave room"),
        (dict(max_args=1), "max_args=1 >= 2"),
        (dict(vocab_size=10), "vocab_size=10 must be at least 16"),
    ],
)
def test_listops_rejects_impossible_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ListOps(**kwargs).check()
