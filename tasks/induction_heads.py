"""Induction heads (Olsson et al. 2022; the synthetic task of H3 and Mamba, Fu et al. 2023, Gu & Dao 2023).

A random sequence over tokens [0, V-1) holds the trigger token V-1 twice: once at a random position p < L-2 and
again at the last position. The only scored position is the last: its target is the token that followed the
first trigger, x[p+1].

Extrapolation, as in Mamba's Table 2: train at `seq_len`, and also test at every length in `test_lengths`, each an
extra held-out split `test@<length>` (metrics `test@<length>/accuracy`). The model's positions must cover the
longest: `max_seq_len` (the model reads it from the task config) must be at least max(seq_len, *test_lengths).
Learned position embeddings beyond `seq_len` are never trained: that is part of what the experiment measures.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from tasks.base import IGNORE, SPLITS, Count, Task


@dataclass
class InductionHeads(Task):
    vocab_size: Count = 16
    seq_len: Count = 32  # CPU-sized, as conf/task/induction_heads.yaml; Mamba's 256: induction_heads_mamba.yaml
    num_train: Count = 20_000
    num_val: Count = 1_000
    num_test: Count = 1_000
    test_lengths: list[Count] = field(default_factory=list)
    max_seq_len: Count | None = None  # None: max(seq_len, *test_lengths)

    def __post_init__(self):
        self.test_lengths = [int(length) for length in self.test_lengths]
        if self.max_seq_len is None:
            self.max_seq_len = max([self.seq_len, *self.test_lengths])

    def check(self) -> None:
        super().check()
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size={self.vocab_size} must be at least 3 (2 content tokens + trigger)")
        if self.seq_len < 3:
            raise ValueError(f"seq_len={self.seq_len} must be at least 3")
        if any(length < 3 for length in self.test_lengths):
            raise ValueError(f"test_lengths={self.test_lengths} must all be at least 3")
        longest = max([self.seq_len, *self.test_lengths])
        if self.max_seq_len < longest:
            raise ValueError(
                f"max_seq_len={self.max_seq_len} must cover the longest sequence, {longest} "
                f"(seq_len={self.seq_len}, test_lengths={self.test_lengths}): set "
                f"task.max_seq_len={longest}"
            )

    @property
    def trigger(self) -> int:
        return self.vocab_size - 1

    @property
    def split_names(self) -> tuple[str, ...]:
        return SPLITS + tuple(f"test@{length}" for length in self.test_lengths)

    def generate_split(self, name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if name.startswith("test@"):
            return replace(self, seq_len=int(name.removeprefix("test@")), test_lengths=[]).generate(n, rng)
        return self.generate(n, rng)

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
