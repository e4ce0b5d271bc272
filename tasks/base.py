"""The task interface: a seed becomes train/val/test splits of (inputs, targets) LongTensors of shape (N, seq_len).
On the device a split keeps the smallest integer type its values fit (`Split.to`) and a batch is cast to int64
(`Split.batch`); a split may instead read its windows from token shards on disk (tasks/lm_shards.py).

`targets` is -100 wherever a position is not scored. Each split draws from its own seed, derived from the run's
seed and the split's name, so train, validation and test never share a random stream. A task may add held-out
splits beyond test (e.g. `test@512`, a longer length); the trainer evaluates every split but train and val.
Large splits are cached on disk (tasks/cache.py), keyed by the task's parameters, the split and the seed.
"""

import zlib
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import numpy as np
import torch
from annotated_types import Ge, Gt, Le, Lt

from tasks import cache

IGNORE = -100
SPLITS = ("train", "val", "test")
HIGHER, LOWER = "higher", "lower"  # which way a metric is better (Task.metrics)

# A field's range is declared beside it with these (harness/run/schema.py checks every config value against them
# before anything runs); a task's check() keeps only what relates several fields.
Count = Annotated[int, Ge(1)]
NonNegative = Annotated[int, Ge(0)]
Fraction = Annotated[float, Ge(0), Le(1)]
OpenFraction = Annotated[float, Ge(0), Lt(1)]
PositiveFloat = Annotated[float, Gt(0)]


@dataclass
class Split:
    inputs: torch.Tensor  # (N, seq_len) int64 as a task makes it; the smallest integer type that holds it after .to
    targets: torch.Tensor  # (N, seq_len) int64, IGNORE where not scored
    _positions: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    random_windows: ClassVar[bool] = False  # True: the trainer asks for each step's batch (tasks/lm_shards.py)

    def to(self, device: torch.device | str) -> "Split":
        """On `device`, in the smallest integer type that holds the values (uint8, int8, int16 or int32; IGNORE is
        negative): a batch is cast to int64 when it is drawn, so the split takes an eighth to a half of the memory."""
        return Split(smallest_int(self.inputs).to(device), smallest_int(self.targets).to(device))

    def batch(self, idx: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, targets, scored positions) of the rows `idx`, int64; positions are computed once per split."""
        if self._positions is None:
            self._positions = scored_positions(self.targets)
        return self.inputs[idx].long(), self.targets[idx].long(), self._positions[idx]

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def __len__(self) -> int:
        return len(self.inputs)


def smallest_int(t: torch.Tensor) -> torch.Tensor:
    """`t` in the smallest of uint8, int8, int16, int32 that holds its values (int64 if none does)."""
    if t.is_floating_point() or t.numel() == 0:
        return t
    low, high = int(t.min()), int(t.max())
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return t.to(dtype)
    return t


def scored_positions(targets: torch.Tensor) -> torch.Tensor:
    """(N, k) positions of each row's scored targets (k = the most any row has), padded with unscored positions.
    Computed once per split, so that a step gathers a fixed number of positions: no data-dependent shape, hence no
    host synchronisation (boolean indexing would wait for the GPU every step to learn how many positions there are)."""
    k = int((targets != IGNORE).sum(1).max()) if len(targets) else 0
    return (targets == IGNORE).to(torch.uint8).argsort(dim=1, stable=True)[:, : max(k, 1)]


class Task:
    """Subclasses set `vocab_size`, `seq_len`, `num_train`, `num_val`, `num_test` and implement `generate`."""

    vocab_size: int
    seq_len: int
    num_train: int
    num_val: int
    num_test: int
    # every metric the task's runs record (<split>/<name>), and whether it is better "higher" or "lower": the board's
    # ranks and marks, the race and a search read it (tasks/registry.py); accuracy: token accuracy over scored positions
    metrics: ClassVar[dict[str, str]] = {"loss": LOWER, "accuracy": HIGHER}
    cache_min_tokens: int = cache.MIN_TOKENS  # splits of at least this many tokens are cached on disk
    version: int = 1  # bump when a generator's output changes, so that cached splits are not reused

    @property
    def max_seq_len(self) -> int:
        """The longest sequence any split holds: what the model's positions must cover."""
        return self.seq_len

    @property
    def split_names(self) -> tuple[str, ...]:
        """train, val, test, then any extra held-out splits."""
        return SPLITS

    def check(self) -> None:
        """Raise ValueError naming the field if fields together cannot make a valid task (each field's own range is
        declared beside it and checked by the harness before this)."""

    def generate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def derived_metrics(self, metrics: dict) -> dict:
        """Metrics computed from the trainer's (e.g. bits per byte from a byte-level loss); none by default."""
        return {}

    def split_size(self, name: str) -> int:
        """Examples in a split; extra held-out splits are as large as test."""
        return {"train": self.num_train, "val": self.num_val}.get(name, self.num_test)

    def split_width(self, name: str) -> int:
        """The sequence length of a split's arrays: seq_len, or <length> for an extra split `test@<length>`."""
        return int(name.removeprefix("test@")) if name.startswith("test@") else self.seq_len

    def generate_split(self, name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The arrays of one split; tasks whose train split differs from the held-out ones override this."""
        return self.generate(n, rng)

    def split(self, name: str, seed: int) -> Split:
        n = self.split_size(name)
        inputs, targets = cache.load_or_make(
            self, name, seed, n, lambda: self.generate_split(name, n, split_rng(seed, name))
        )
        return Split(torch.as_tensor(inputs, dtype=torch.long), torch.as_tensor(targets, dtype=torch.long))

    def splits(self, seed: int) -> dict[str, Split]:
        self.check()
        return {name: self.split(name, seed) for name in self.split_names}


def split_rng(seed: int, split: str) -> np.random.Generator:
    """Independent streams per (seed, split): numpy's SeedSequence hashes both into the state. Extra held-out
    splits (e.g. `test@512`) are told apart by a CRC of their name."""
    key = [SPLITS.index(split)] if split in SPLITS else [len(SPLITS), zlib.crc32(split.encode())]
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def choice_without_replacement(rng: np.random.Generator, n: int, low: int, high: int, k: int) -> np.ndarray:
    """(n, k) draws from [low, high), distinct within each row, uniformly random, vectorized over rows.

    Rows with a collision are redrawn (cheap while k^2 is small against the range); otherwise a random
    permutation of the whole range is cut.
    """
    size = high - low
    if k > size:
        raise ValueError(f"cannot draw {k} distinct values from [{low}, {high})")
    if k * k > 6 * size:  # collisions likely: permute the (small) range instead
        return low + rng.random((n, size)).argsort(axis=1)[:, :k]
    out = rng.integers(low, high, size=(n, k))
    redo = np.arange(n)
    while True:
        s = np.sort(out[redo], axis=1)
        redo = redo[(s[:, 1:] == s[:, :-1]).any(axis=1)]
        if len(redo) == 0:
            return out
        out[redo] = rng.integers(low, high, size=(len(redo), k))


def weighted_choice_without_replacement(rng: np.random.Generator, n: int, p: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices into p, distinct within each row, drawn one after another with probability proportional to
    the remaining weights (what np.random.choice(replace=False, p=p) does), vectorized by exponential keys
    (Efraimidis & Spirakis 2006): the k smallest of E_i / p_i, in increasing order."""
    keys = rng.standard_exponential((n, len(p))) / p
    idx = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < len(p) else np.tile(np.arange(len(p)), (n, 1))
    order = np.take_along_axis(keys, idx, axis=1).argsort(axis=1)
    return np.take_along_axis(idx, order, axis=1)
