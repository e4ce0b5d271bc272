"""Parity as Grazzi et al. 2025 ran it ("Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues", ICLR),
the formal-language formulation of xLSTM (Beck et al. 2024) that their code (automl/unlocking_state_tracking,
xlstm/experiments/data/formal_language/tasks/parity.py) uses.

A sequence of length s (uniform in [train_min_length, train_max_length], 3 to 40 in their configs; tested on 40 to
256) holds s - 1 random bits as tokens 1 and 2, then the answer token: 1 + (the number of 2s mod 2). Token 0 is
padding. The model is trained as a language model (their shift of 1): it reads the s - 1 bits and the answer is
scored at the last bit, the only scored position; the answer token itself is never an input. So a split test@L holds
L - 1 input tokens. Their test split draws s uniformly from [40, 256] in one split; here every test length is its own
split and test/length_mean_accuracy is their mean (the same in expectation when every length is tested).
`test/length_mean_scaled_accuracy` rescales it as xLSTM and Grazzi et al. report it: (acc - 1/2) / (1 - 1/2).
"""

from dataclasses import dataclass

import numpy as np

from tasks.base import HIGHER, IGNORE
from tasks.length_generalization import LengthGeneralizationTask, Positive


@dataclass
class GrazziTask(LengthGeneralizationTask):
    """Next-token form: an example of length L is L - 1 input tokens, its answer scored at the last one; pad 0."""

    train_min_length: Positive = 3
    test_min_length: Positive = 40
    test_max_length: Positive = 256
    classes = 2  # answer classes: chance = 1 / classes
    metrics = {**LengthGeneralizationTask.metrics, "length_mean_scaled_accuracy": HIGHER}

    @classmethod
    def width(cls, length: int) -> int:
        return length - 1

    @property
    def pad(self) -> int:
        return 0

    @property
    def needed_vocab(self) -> int:
        return self.input_size + 1

    def check(self) -> None:
        super().check()
        if self.train_min_length < 3:
            raise ValueError(f"train_min_length={self.train_min_length} must be at least 3")
        if min(self.test_lengths) < 3:  # the field a user set: test_min_length, or the explicit list
            raise ValueError(
                f"test_min_length={self.test_min_length}, test_lengths={self.test_lengths}: every test length must be "
                "at least 3"
            )

    def derived_metrics(self, metrics: dict) -> dict:
        out = super().derived_metrics(metrics)
        if "test/length_mean_accuracy" in out:
            chance = 1 / self.classes
            out["test/length_mean_scaled_accuracy"] = (out["test/length_mean_accuracy"] - chance) / (1 - chance)
        return out


@dataclass
class Parity(GrazziTask):
    input_size = 2  # tokens 1 and 2 (0 is padding)

    def make(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.integers(1, 3, size=(n, length - 1))
        targets = np.full(x.shape, IGNORE, dtype=np.int64)
        targets[:, -1] = 1 + (x == 2).sum(1) % 2
        return x, targets
