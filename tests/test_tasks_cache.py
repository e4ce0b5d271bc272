"""The disk cache of generated splits: keyed by parameters, split and seed; written once, read back identical;
readable by `datasets`; off below the size threshold; a damaged file is regenerated."""

import logging

import numpy as np
import pytest
import torch

from tasks import cache
from tasks.induction_heads import InductionHeads
from tasks.lm_text import LMText
from tasks.memorization import Memorization
from tasks.mqar import MQAR


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("ARCHBENCH_CACHE_MIN_TOKENS", "1")
    monkeypatch.delenv("ARCHBENCH_NO_CACHE", raising=False)
    return tmp_path / "tasks"


def test_a_cached_split_is_written_once_and_read_back_identical(cache_dir, monkeypatch):
    task = MQAR(vocab_size=64, seq_len=32, num_train=100, num_val=10, num_test=10)
    first = task.split("train", 0)
    [path] = cache_dir.glob("MQAR-train-*.arrow")
    calls = []
    monkeypatch.setattr(MQAR, "generate", lambda self, n, rng: calls.append(n))
    second = task.split("train", 0)
    assert calls == [], "the second call reads the cache"
    assert torch.equal(first.inputs, second.inputs) and torch.equal(first.targets, second.targets)
    assert second.inputs.dtype == torch.long
    import datasets

    rows = datasets.Dataset.from_file(str(path))
    assert rows.num_rows == 100 and rows[3]["inputs"] == first.inputs[3].tolist()


def test_the_key_follows_the_data_not_the_labels(cache_dir):
    task = Memorization(vocab_size=64, seq_len=16, num_train=10)
    path = cache.path_for(task, "train", 0, 10)
    assert (
        cache.path_for(Memorization(vocab_size=64, seq_len=16, num_train=10, num_test=99, setting="x"), "train", 0, 10)
        == path
    ), "split sizes of other splits and labels do not change the data"
    for other in [
        cache.path_for(task, "train", 1, 10),
        cache.path_for(task, "val", 0, 10),
        cache.path_for(task, "train", 0, 11),
        cache.path_for(Memorization(vocab_size=64, seq_len=18, num_train=10), "train", 0, 10),
    ]:
        assert other != path
    task.version += 1
    assert cache.path_for(task, "train", 0, 10) != path, "a generator's version is part of the key"


def test_small_splits_and_real_text_are_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHBENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("ARCHBENCH_CACHE_MIN_TOKENS", raising=False)
    InductionHeads(seq_len=16, num_train=100).split("train", 0)
    assert not list(tmp_path.rglob("*.arrow"))
    monkeypatch.setenv("ARCHBENCH_CACHE_MIN_TOKENS", "1")
    assert cache.min_tokens(LMText()) is None
    monkeypatch.setenv("ARCHBENCH_NO_CACHE", "1")
    InductionHeads(seq_len=16, num_train=100).split("train", 0)
    assert not list(tmp_path.rglob("*.arrow"))


def test_extra_splits_are_cached_under_their_own_name(cache_dir):
    task = InductionHeads(seq_len=16, num_train=20, num_val=5, num_test=30, test_lengths=[40])
    splits = task.splits(0)
    assert len(list(cache_dir.glob("InductionHeads-test_40-*.arrow"))) == 1
    assert torch.equal(task.splits(0)["test@40"].inputs, splits["test@40"].inputs)


def test_a_damaged_file_is_generated_again(cache_dir, caplog):
    task = MQAR(vocab_size=64, seq_len=32, num_train=50, num_val=10, num_test=10)
    good = task.split("val", 0)
    [path] = cache_dir.glob("MQAR-val-*.arrow")
    path.write_bytes(b"not arrow")
    with caplog.at_level(logging.WARNING):
        again = task.split("val", 0)
    assert torch.equal(good.inputs, again.inputs) and "unreadable" in caplog.text
    assert cache.read(path)[0].shape == (10, 32)


def test_large_vocabularies_round_trip_as_int32(cache_dir):
    x = np.array([[0, 40_000], [5, 7]])
    y = np.array([[-100, 3], [-100, 70_000]])
    cache.write(cache_dir / "t.arrow", x, y)
    rx, ry = cache.read(cache_dir / "t.arrow")
    np.testing.assert_array_equal(rx, x)
    np.testing.assert_array_equal(ry, y)
