"""Length generalisation: train on short inputs, test on longer ones, one held-out split per test length.

The protocol of Delétang et al. 2023 ("Neural Networks and the Chomsky Hierarchy"): every example's input length is
drawn uniformly from [train_min_length, train_max_length] (1 to 40 in the paper) for train, val and test; each test
length L in `test_lengths` (41 to 500 in the paper, 512 sequences each) is an extra split `test@L`; the score is the
mean accuracy over the test lengths, reported as the derived metric `test/length_mean_accuracy`.

A sequence is the input, then `output_length(L)` blank tokens: the model reads the input and must emit the answer at
the blank positions (no teacher forcing of the answer), as the source's `make_model_with_empty_targets` does. Targets
are -100 on the input and on any output position the source's accuracy mask drops. Examples of different lengths in
one split are right-padded with the pad token (targets -100): a causal model's scored outputs never see the padding.

Token ids: the task's input symbols are 0..input_size-1, then blank = input_size, pad = input_size + 1; the answer
classes are 0..output_size-1 (the head scores the whole vocabulary, a class id that is also an input id is fine).
`vocab_size` is max(input_size + 2, output_size); YAML files state it, and `check` says if it is wrong.

Test lengths: `num_test_lengths` evenly spaced integers from `test_min_length` to `test_max_length` (both included;
num_test_lengths = test_max_length - test_min_length + 1 is every length), or an explicit list in `test_lengths`.
`num_length_buckets` > 0 adds the mean accuracy over contiguous groups of test lengths as `bucket@<lo>-<hi>/accuracy`
(board: `--split 'bucket@*'`).
"""

import importlib
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge
from omegaconf import ListConfig

from tasks.base import HIGHER, IGNORE, SPLITS, Task

Positive = Annotated[int, Ge(1)]


def max_width(target: str, *lengths: int) -> int:
    """The longest sequence any split of the task class `target` (its `_target_`) holds, given its longest input
    lengths (numbers or lists, None skipped): the YAML files' `max_seq_len: ${task_width:${._target_},...}`, so
    that the model's positions follow the task's test lengths with no number to keep in step by hand."""
    module, _, name = target.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    flat = [v for item in lengths for v in (item if isinstance(item, (list, tuple, ListConfig)) else [item])]
    return max(cls.width(int(length)) for length in flat if length is not None)


def even_lengths(low: int, high: int, num: int) -> list[int]:
    """`num` integers from low to high, both included, as evenly spaced as integers allow."""
    if num == 1:
        return [low]
    return sorted({low + (i * (high - low)) // (num - 1) for i in range(num)})


@dataclass
class LengthGeneralizationTask(Task):
    """Subclasses set `input_size` and `output_size`, define `output_length(L)` and `sample(n, L, rng)`."""

    vocab_size: int | None = None  # None: the task's own (max(input_size + 2, output_size))
    train_min_length: Positive = 1
    train_max_length: Positive = 40
    test_min_length: Positive = 41
    test_max_length: Positive = 100
    num_test_lengths: Annotated[int, Ge(0)] = 3
    test_lengths: list[int] | None = None  # explicit test lengths; None: the evenly spaced ones above
    num_length_buckets: Annotated[int, Ge(0)] = 0
    num_train: Positive = 20_000
    num_val: Positive = 1_000
    num_test: Positive = 512
    seq_len: int | None = None  # None: the width of the train split, width(train_max_length)
    max_seq_len: int | None = None  # None: the widest split's width

    input_size = 2
    output_size = 2
    metrics = {**Task.metrics, "length_mean_accuracy": HIGHER}  # derived_metrics: the paper's score

    def __post_init__(self):
        if self.test_lengths is None:
            self.test_lengths = (
                even_lengths(self.test_min_length, self.test_max_length, self.num_test_lengths)
                if self.num_test_lengths
                else []
            )
        self.test_lengths = [int(length) for length in self.test_lengths]
        if self.vocab_size is None:
            self.vocab_size = self.needed_vocab
        if self.seq_len is None:
            self.seq_len = self.width(self.train_max_length)
        if self.max_seq_len is None:
            self.max_seq_len = self.widest

    # --- what a subclass defines ---
    @staticmethod
    def output_length(length: int) -> int:
        """Answer positions after an input of `length` (the source's `output_length`; 1 for a classification)."""
        return 1

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(n, input length) input symbols and (n, output_length(length)) answers, -100 where not scored."""
        raise NotImplementedError

    # --- derived ---
    @classmethod
    def width(cls, length: int) -> int:
        """The sequence length of an example of input length `length`: input, then the answer's blanks."""
        return length + cls.output_length(length)

    @property
    def blank(self) -> int:
        return self.input_size

    @property
    def pad(self) -> int:
        return self.input_size + 1

    @property
    def needed_vocab(self) -> int:
        return max(self.input_size + 2, self.output_size)

    @property
    def widest(self) -> int:
        return max(self.width(length) for length in [self.train_max_length, *self.test_lengths])

    @property
    def split_names(self) -> tuple[str, ...]:
        return SPLITS + tuple(f"test@{length}" for length in self.test_lengths)

    def check(self) -> None:
        super().check()
        if self.train_min_length > self.train_max_length:
            raise ValueError(
                f"train_min_length={self.train_min_length} must be at most train_max_length={self.train_max_length}"
            )
        if self.test_min_length > self.test_max_length:
            raise ValueError(
                f"test_min_length={self.test_min_length} must be at most test_max_length={self.test_max_length}"
            )
        if any(length < 1 for length in self.test_lengths):
            raise ValueError(f"test_lengths={self.test_lengths} must all be positive")
        if self.vocab_size != self.needed_vocab:
            raise ValueError(
                f"vocab_size={self.vocab_size} must be {self.needed_vocab} ({self.input_size} input "
                f"symbols, blank, pad, {self.output_size} answer classes): set "
                f"task.vocab_size={self.needed_vocab}"
            )
        if self.seq_len != self.width(self.train_max_length):
            raise ValueError(
                f"seq_len={self.seq_len} must be the train split's width, "
                f"{self.width(self.train_max_length)}: leave task.seq_len unset (null)"
            )
        if self.max_seq_len < self.widest:
            raise ValueError(
                f"max_seq_len={self.max_seq_len} must cover the longest sequence, {self.widest}: set "
                f"task.max_seq_len={self.widest}"
            )

    def make(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of n examples at one input length: the input then blanks; answers at the blanks."""
        x, y = self.sample(n, length, rng)
        blanks = np.full((n, y.shape[1]), self.blank, dtype=np.int64)
        inputs = np.concatenate([x.astype(np.int64), blanks], axis=1)
        targets = np.concatenate([np.full(x.shape, IGNORE, dtype=np.int64), y.astype(np.int64)], axis=1)
        return inputs, targets

    def lengths(self, name: str, n: int, rng: np.random.Generator) -> np.ndarray:
        """Each example's input length: uniform over the training range, or the test split's length."""
        if name.startswith("test@"):
            return np.full(n, int(name.removeprefix("test@")))
        return rng.integers(self.train_min_length, self.train_max_length + 1, size=n)

    def split_width(self, name: str) -> int:
        if name.startswith("test@"):
            return self.width(int(name.removeprefix("test@")))
        return self.seq_len

    def generate_split(self, name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        lengths, width = self.lengths(name, n, rng), self.split_width(name)
        inputs = np.full((n, width), self.pad, dtype=np.int64)
        targets = np.full((n, width), IGNORE, dtype=np.int64)
        for length in np.unique(lengths):  # one vectorised call per distinct length (40 for the paper's train)
            rows = np.flatnonzero(lengths == length)
            x, y = self.make(len(rows), int(length), rng)
            inputs[rows, : x.shape[1]], targets[rows, : y.shape[1]] = x, y
        return inputs, targets

    def generate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.generate_split("train", n, rng)

    def buckets(self) -> list[list[int]]:
        """The test lengths cut into `num_length_buckets` contiguous groups of near-equal size."""
        k = min(self.num_length_buckets, len(self.test_lengths))
        return [list(part) for part in np.array_split(np.asarray(self.test_lengths), k)] if k else []

    def derived_metrics(self, metrics: dict) -> dict:
        """The paper's score, `test/length_mean_accuracy`: the mean of test@<L>/accuracy over the test lengths; and
        `bucket@<lo>-<hi>/accuracy`, the mean over each bucket of test lengths."""
        out = {}
        accuracy = {length: metrics.get(f"test@{length}/accuracy") for length in self.test_lengths}
        if accuracy and all(v is not None for v in accuracy.values()):
            out["test/length_mean_accuracy"] = float(np.mean(list(accuracy.values())))
            for part in self.buckets():
                out[f"bucket@{part[0]}-{part[-1]}/accuracy"] = float(np.mean([accuracy[p] for p in part]))
        return out


def bits(rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 2, size=shape, dtype=np.int64)


def nonzero_bits(rng: np.random.Generator, widths: np.ndarray, cols: int) -> np.ndarray:
    """(n, cols) little-endian bits of integers drawn uniformly from [1, 2^widths[i] - 1] (Python's
    random.randint(1, 2**w - 1)): uniform bits below each row's width, rows of all zeros redrawn."""
    n = len(widths)
    inside = np.arange(cols)[None, :] < widths[:, None]
    out = bits(rng, (n, cols)) * inside
    redo = np.flatnonzero(out.sum(1) == 0)
    while len(redo):
        out[redo] = bits(rng, (len(redo), cols)) * inside[redo]
        redo = redo[out[redo].sum(1) == 0]
    return out


def carry(columns: np.ndarray) -> np.ndarray:
    """Little-endian bits of sum_k columns[:, k] * 2^k (nonnegative column sums), by carrying left to right; the
    output has room for every carry (columns' width plus enough bits for the largest column sum)."""
    n, w = columns.shape
    extra = int(np.ceil(np.log2(columns.max(initial=1) + 1))) + 1
    cols = np.zeros((w + extra, n), dtype=np.int64)  # position-major: each step reads and writes contiguous rows
    cols[:w] = columns.T
    c = np.zeros(n, dtype=np.int64)
    for k in range(w + extra):
        s = c + cols[k]
        cols[k], c = s & 1, s >> 1
    return cols.T.copy()


def digits_length(little_endian: np.ndarray) -> np.ndarray:
    """Binary digits of each row's number without leading zeros (at least 1: zero is written `0`, as f'{0:b}')."""
    nonzero = little_endian != 0
    last = little_endian.shape[1] - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(1), last + 1, 1)


def terminated(digits: np.ndarray, count: np.ndarray, out_len: int, stop: int) -> np.ndarray:
    """(n, out_len) answers: each row's first count[i] digits, the termination token `stop`, then -100 (the source
    pads with 0s and masks everything after the termination token out of the accuracy)."""
    n = len(digits)
    cols = np.arange(out_len)[None, :]
    body = np.zeros((n, out_len), dtype=np.int64)
    w = min(digits.shape[1], out_len)
    body[:, :w] = digits[:, :w]
    out = np.where(cols < count[:, None], body, IGNORE)
    out[np.arange(n), count] = stop
    return out
