"""Induction heads (Olsson et al. 2022; the synthetic task of H3 and Mamba, Fu et al. 2023, Gu & Dao 2023).

A random sequence over tokens [0, V-1) holds the trigger token V-1 twice: once at a random position p < L-2 and
again at the last position. The only scored position is the last: its target is the token that followed the
first trigger, x[p+1].
"""

from dataclasses import dataclass

import numpy as np

from tasks.base import IGNORE, Task


@dataclass
class InductionHeads(Task):
    vocab_size: int = 16
    seq_len: int = 64
    num_train: int = 20_000
    num_val: int = 1_000
    num_test: int = 1_000

    def check(self) -> None:
        super().check()
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size={self.vocab_size} must be at least 3 (2 content tokens + trigger)")
        if self.seq_len < 3:
            raise ValueError(f"seq_len={self.seq_len} must be at least 3")

    @property
    def trigger(self) -> int:
        return self.vocab_size - 1

    def generate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        L = self.seq_len
        inputs = rng.integers(0, self.trigger, size=(n, L))
        first = rng.integers(0, L - 2, size=n)
        rows = np.arange(n)
        inputs[rows, first] = self.trigger
        inputs[:, -1] = self.trigger
        targets = np.full((n, L), IGNORE, dtype=np.int64)
        targets[:, -1] = inputs[rows, first + 1]
        return inputs, targets
