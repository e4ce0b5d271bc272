"""Modular arithmetic without brackets as Grazzi et al. 2025 ran it: the xLSTM formal-language formulation in their
code (automl/unlocking_state_tracking, xlstm/experiments/data/formal_language/tasks/modular_arithmetic.py).

Tokens: 0 padding, 1 `+`, 2 `-`, 3 `*`, 4 `=`, 5..9 the numbers 0..4 (modulus 5, vocab 10 as their configs). A
sequence of odd length s = 2k - 1 (k uniform, so that s is uniform over the odd lengths of [train_min_length,
train_max_length]: 3 to 39 in their configs; tested from 40 to 256) is numbers at even positions and operators
uniform over +, -, * at odd positions, the second-to-last `=`, the last the answer: the value with products first,
mod 5, as a number token. Trained as a language model (shift of 1): the model reads the expression and `=`, and the
answer is scored at `=`. A test split test@L of even L holds length L - 1 (as their odd lengths). Their labels
multiply unreduced integers (exact in practice); here products are reduced mod 5, which is exact.
`test/length_mean_scaled_accuracy`: (acc - 1/5) / (1 - 1/5).
"""

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge

from tasks.base import IGNORE
from tasks.state_tracking.parity import GrazziTask

PLUS, MINUS, TIMES, EQUALS, ZERO = 1, 2, 3, 4, 5


@dataclass
class ModularArithmetic(GrazziTask):
    modulus: Annotated[int, Ge(2)] = 5

    @property
    def input_size(self) -> int:  # the numbers and four symbols; with padding, vocab_size = modulus + 5
        return self.modulus + 4

    @property
    def classes(self) -> int:
        return self.modulus

    def make(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s = length if length % 2 else length - 1
        expr = np.empty((n, s - 2), dtype=np.int64)
        expr[:, ::2] = rng.integers(0, self.modulus, size=(n, (s - 1) // 2))
        expr[:, 1::2] = rng.integers(PLUS, TIMES + 1, size=(n, (s - 3) // 2))
        m, total = self.modulus, np.zeros(n, dtype=np.int64)
        term = expr[:, 0] % m
        for j in range(1, s - 2, 2):
            op, v = expr[:, j], expr[:, j + 1]
            mul = op == TIMES
            total = np.where(mul, total, (total + term) % m)
            term = np.where(mul, term * v % m, np.where(op == MINUS, -v % m, v))
        value = (total + term) % m
        expr[:, ::2] += ZERO
        x = np.concatenate([expr, np.full((n, 1), EQUALS)], axis=1)
        targets = np.full(x.shape, IGNORE, dtype=np.int64)
        targets[:, -1] = ZERO + value
        return x, targets
