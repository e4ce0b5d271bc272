"""Task semantics: which positions are scored, value ranges, that the answer is computable from the input,
determinism by seed and independent splits. Generic checks run over every task in conf/task/."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from tasks.base import IGNORE, SPLITS, split_rng, weighted_choice_without_replacement
from tasks.induction_heads import InductionHeads
from tasks.lm_text import LMText
from tasks.mqar import MQAR
from tests.conftest import options


def small(task):
    task.num_train, task.num_val, task.num_test = 64, 32, 32
    if hasattr(task, "roots_per_batch"):  # ListOps: fewer trees per generated batch
        task.roots_per_batch = 2000
    return task


@pytest.mark.parametrize("name", options("task"))
def test_every_task_is_deterministic_with_independent_splits(compose, name):
    cfg = compose([f"task={name}"])
    task = small(instantiate(cfg.task))
    assert cfg.model.max_seq_len == task.max_seq_len >= task.seq_len
    a, b, other = task.splits(0), task.splits(0), task.splits(1)
    assert tuple(a)[:3] == SPLITS
    for split in a:
        assert torch.equal(a[split].inputs, b[split].inputs) and torch.equal(a[split].targets, b[split].targets)
        if isinstance(task, LMText) and split != "train":  # real text: the same val and test for every seed
            assert torch.equal(a[split].inputs, other[split].inputs)
        else:
            assert not torch.equal(a[split].inputs, other[split].inputs)
        width = task.split_width(split)
        assert a[split].inputs.shape == a[split].targets.shape == (len(a[split]), width) and width <= task.max_seq_len
        assert a[split].inputs.min() >= 0 and a[split].inputs.max() < task.vocab_size
        scored = a[split].targets[a[split].targets != IGNORE]
        assert len(scored) > 0 and scored.min() >= 0 and scored.max() < task.vocab_size
    assert not torch.equal(a["train"].inputs[:32], a["test"].inputs[:32])


def test_mqar_exact_semantics():
    task = MQAR(vocab_size=64, seq_len=32, num_kv_pairs=4, num_train=500, num_val=1, num_test=1)
    x, y = task.split("train", 0).inputs.numpy(), task.split("train", 0).targets.numpy()
    kv, V = 4, 64
    keys, values = x[:, 0 : 2 * kv : 2], x[:, 1 : 2 * kv : 2]
    assert ((keys >= 1) & (keys < V // 2)).all() and ((values >= V // 2) & (values < V)).all()
    assert all(len(set(r)) == kv for r in keys) and all(len(set(r)) == kv for r in values)
    assert (y[:, : 2 * kv] == IGNORE).all()
    for row_x, row_y, row_k, row_v in zip(x, y, keys, values, strict=True):
        pos = np.flatnonzero(row_y != IGNORE)
        assert len(pos) == kv and ((pos - 2 * kv) % 2 == 0).all()
        lookup = dict(zip(row_k, row_v, strict=True))
        assert sorted(row_x[pos]) == sorted(row_k), "each key is queried exactly once"
        assert all(row_y[p] == lookup[row_x[p]] for p in pos), "the target is the queried key's value"
        filler = np.setdiff1d(np.arange(2 * kv, 32), pos)
        assert (row_x[filler] == 0).all()


def test_mqar_random_non_queries_fill_only_the_gaps():
    base = MQAR(vocab_size=64, seq_len=32, num_kv_pairs=4, num_train=200, num_val=1, num_test=1)
    rand = MQAR(
        vocab_size=64, seq_len=32, num_kv_pairs=4, num_train=200, num_val=1, num_test=1, random_non_queries=True
    )
    xb, xr = base.split("train", 3), rand.split("train", 3)
    assert torch.equal(xb.targets, xr.targets)
    kept = xb.inputs != 0
    assert torch.equal(xb.inputs[kept], xr.inputs[kept]) and (xr.inputs[~kept] != 0).any()


def test_mqar_gaps_follow_the_power_law():
    """The first query's gap is drawn with probability a * i^(a-1) / sum: compare with exact probabilities."""
    task = MQAR(vocab_size=512, seq_len=64, num_kv_pairs=1, num_train=40_000, num_val=1, num_test=1)
    y = task.split("train", 0).targets.numpy()
    gaps = (np.argmax(y != IGNORE, axis=1) - 2) // 2
    space = (64 - 2) // 2
    p = 0.01 * np.arange(1, space + 1) ** (0.01 - 1)
    p /= p.sum()
    freq = np.bincount(gaps, minlength=space) / len(gaps)
    np.testing.assert_allclose(freq[:3], p[:3], atol=0.01)
    assert freq[0] > freq[5] > 0


def test_weighted_sampling_without_replacement_matches_numpy():
    """Same distribution as np.random.choice(replace=False, p=p): check the second draw's marginal."""
    p = np.array([0.5, 0.3, 0.15, 0.05])
    draws = weighted_choice_without_replacement(np.random.default_rng(0), 100_000, p, 2)
    assert (draws[:, 0] != draws[:, 1]).all()
    second = np.array([sum(p[i] * p[j] / (1 - p[i]) for i in range(4) if i != j) for j in range(4)])
    np.testing.assert_allclose(np.bincount(draws[:, 1], minlength=4) / 100_000, second, atol=0.006)
    np.testing.assert_allclose(np.bincount(draws[:, 0], minlength=4) / 100_000, p, atol=0.006)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(seq_len=33), "seq_len=33 must be even"),
        (dict(vocab_size=32, seq_len=32), "vocab_size=32 must be greater than seq_len=32"),
        (dict(num_kv_pairs=9, seq_len=32), "num_kv_pairs=9 does not fit"),
    ],
)
def test_mqar_rejects_impossible_settings(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MQAR(**{"vocab_size": 64, "seq_len": 32, **kwargs}).check()


def test_a_field_outside_its_declared_range_is_refused_by_the_schema():
    from harness.run import schema

    with pytest.raises(schema.SchemaError, match=r"task.num_train=0: must be an integer >= 1"):
        schema.check_fields("task.", {"num_train": 0}, MQAR)


def test_induction_heads_semantics():
    task = InductionHeads(vocab_size=8, seq_len=20, num_train=300, num_val=1, num_test=1)
    s = task.split("train", 0)
    x, y = s.inputs.numpy(), s.targets.numpy()
    assert (y[:, :-1] == IGNORE).all()
    assert ((x == task.trigger).sum(axis=1) == 2).all() and (x[:, -1] == task.trigger).all()
    first = np.argmax(x == task.trigger, axis=1)
    assert (y[:, -1] == x[np.arange(len(x)), first + 1]).all()
    assert (y[:, -1] != task.trigger).all()


def test_induction_heads_tests_longer_lengths_in_extra_splits():
    task = InductionHeads(vocab_size=8, seq_len=16, num_train=50, num_val=10, num_test=300, test_lengths=[32, 64])
    assert task.max_seq_len == 64
    splits = task.splits(0)
    assert list(splits) == ["train", "val", "test", "test@32", "test@64"]
    for name, length in [("test", 16), ("test@32", 32), ("test@64", 64)]:
        x, y = splits[name].inputs.numpy(), splits[name].targets.numpy()
        assert x.shape == (300, length)
        assert (y[:, :-1] == IGNORE).all() and ((x == task.trigger).sum(axis=1) == 2).all()
        first = np.argmax(x == task.trigger, axis=1)
        assert (y[:, -1] == x[np.arange(300), first + 1]).all()
        assert first.max() > length // 2, "the first trigger ranges over the whole longer sequence"
    assert not torch.equal(splits["test@32"].inputs[:, :16], splits["test"].inputs)


def test_induction_heads_needs_positions_for_its_longest_test():
    with pytest.raises(ValueError, match="max_seq_len=16 must cover the longest sequence, 64.*task.max_seq_len=64"):
        InductionHeads(seq_len=16, test_lengths=[32, 64], max_seq_len=16).check()


def test_the_model_gets_positions_for_the_longest_test_length(compose):
    cfg = compose(["task=induction_heads_mamba"])
    assert cfg.model.max_seq_len == 4096 == max(cfg.task.test_lengths)
    assert compose(["task=mqar", "task.seq_len=32"]).model.max_seq_len == 32


def test_split_streams_differ():
    a, b = split_rng(0, "train").integers(0, 1 << 30, 8), split_rng(0, "test").integers(0, 1 << 30, 8)
    assert not np.array_equal(a, b)
    c, d = split_rng(0, "test@512").integers(0, 1 << 30, 8), split_rng(0, "test@1024").integers(0, 1 << 30, 8)
    assert not np.array_equal(c, d) and not np.array_equal(b, c)
