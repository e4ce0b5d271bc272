"""Modular arithmetic without brackets (Delétang et al. 2023, regular): reduce `d op d op ... d` modulo 5.

Source: tasks/regular/modular_arithmetic.py. The expression has odd length (an even L becomes L - 1, as the source
does): digits uniform in [0, modulus) at even positions, operators uniform over `operators` at odd positions.
Tokens: digits 0..modulus-1, then `+` modulus, `-` modulus+1, `*` modulus+2, `_` modulus+3 (the source's blank
symbol: in its alphabet, never generated). Answer (one position): the value with the usual precedence (products
first, then sums and differences left to right), mod modulus. The source multiplies unreduced int32 values, which
would wrap after ~15 factors of 4 in a row (probability ~3^-15 per position); archbench reduces every product mod
modulus, so its labels are exact.
"""

from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from annotated_types import Ge

from tasks.length_generalization import LengthGeneralizationTask

OPS = {"+": 0, "-": 1, "*": 2, "_": 3}


def evaluate(x: np.ndarray, modulus: int) -> np.ndarray:
    """Values of (n, 2k+1) expressions `d op d ... d`, products before sums, by one left-to-right pass."""
    nums, ops = x[:, ::2] % modulus, x[:, 1::2] - modulus
    total, term = np.zeros(len(x), dtype=np.int64), nums[:, 0].copy()
    for j in range(ops.shape[1]):
        op, v = ops[:, j], nums[:, j + 1]
        mul = op == OPS["*"]
        total = np.where(mul, total, (total + term) % modulus)
        term = np.where(mul, term * v % modulus, np.where(op == OPS["-"], -v % modulus, v))
    return (total + term) % modulus


@dataclass
class ModularArithmetic(LengthGeneralizationTask):
    modulus: Annotated[int, Ge(2)] = 5
    operators: list[str] = field(default_factory=lambda: ["+", "*", "-"])

    @property
    def input_size(self) -> int:
        return self.modulus + len(OPS)

    @property
    def output_size(self) -> int:
        return self.modulus

    def check(self) -> None:
        super().check()
        if not self.operators or any(op not in ("+", "-", "*") for op in self.operators):
            raise ValueError(f"operators={self.operators} must be a non-empty list of '+', '-', '*'")

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        length = length if length % 2 else length - 1
        x = np.empty((n, length), dtype=np.int64)
        x[:, ::2] = rng.integers(0, self.modulus, size=(n, length // 2 + 1))
        ops = self.modulus + np.array([OPS[op] for op in self.operators])
        x[:, 1::2] = ops[rng.integers(0, len(ops), size=(n, length // 2))]
        return x, evaluate(x, self.modulus)[:, None]
