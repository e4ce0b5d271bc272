"""Memorization, MAD's task (Poli et al. 2024), with the semantics of MAD's `generate_memorization_instance`; the
shared differences from MAD are in tasks/mad_base.py.

A fixed key-to-value map, the same for every sequence and split, must be learned into the weights: with
c = vocab_size - 1, keys [0, c/2) are paired with values [c/2, c) by MAD's own construction (itertools permutations
of each range shuffled by np.random.default_rng(kv_map_seed), then zipped; MAD's seed is 12345), so the map is
exactly MAD's. A sequence is seq_len/2 pairs (key, insert token V-1), keys drawn uniformly with replacement; the
target at each insert token is the key's value. MAD trains on 256 sequences and tests on fresh ones.
"""

from dataclasses import dataclass
from functools import cached_property
from itertools import permutations

import numpy as np

from tasks.base import IGNORE, Count, NonNegative
from tasks.mad_base import MADTask


@dataclass
class Memorization(MADTask):
    vocab_size: Count = 256
    seq_len: Count = 32
    kv_map_seed: NonNegative = 12345
    num_train: Count = 256
    num_val: Count = 1_280
    num_test: Count = 1_280
    family: str = "memorization"
    setting: str = "baseline"

    def check(self) -> None:
        super().check()
        if self.seq_len % 2:
            raise ValueError(f"seq_len={self.seq_len} must be even (key, insert token pairs)")
        if self.vocab_size < 5:
            raise ValueError(f"vocab_size={self.vocab_size} must be at least 5 (a key, a value and the insert token)")

    @cached_property
    def kv_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, values): MAD's `generate_kv_map` on c = vocab_size - 1 tokens, same draws, same result."""
        c = self.vocab_size - 1
        rng = np.random.default_rng(self.kv_map_seed)
        keys = list(permutations(range(c // 2), 1))
        rng.shuffle(keys)
        values = list(permutations(range(c // 2, c), 1))
        rng.shuffle(values)
        m = min(len(keys), len(values))
        return np.array(keys[:m]).reshape(-1), np.array(values[:m]).reshape(-1)

    def generate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        keys, values = self.kv_map
        pick = rng.integers(0, len(keys), size=(n, self.seq_len // 2))
        inputs = np.full((n, self.seq_len), self.vocab_size - 1, dtype=np.int64)
        targets = np.full((n, self.seq_len), IGNORE, dtype=np.int64)
        inputs[:, 0::2], targets[:, 1::2] = keys[pick], values[pick]
        return inputs, targets
