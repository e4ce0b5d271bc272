"""Binary addition (Delétang et al. 2023, context-sensitive): add two little-endian binary numbers.

Source: tasks/cs/binary_addition.py. For L >= 3: the first number has a width uniform in [1, L-2], the second the
rest of L-1, each an integer uniform in [1, 2^width - 1] written little-endian in exactly its width (high zeros
kept); input `a 2 b`. Answer (L + 1 positions): the sum, little-endian without high zeros, then the termination token
2; the source pads with 0s after it and leaves them out of the accuracy; here they are unscored (-100, so out of the
loss too). For L <= 2 the source writes one number from randint(0, 2^L - 1) (exclusive: 0 for L = 1; 0, 1 or 2 for
L = 2) in L bits with no `2`, and the answer is that number; so does this. The sum is computed on bit arrays with a
carry pass, vectorised over examples (the test checks it against Python's integers).
"""

from dataclasses import dataclass

import numpy as np

from tasks.length_generalization import LengthGeneralizationTask, carry, digits_length, nonzero_bits, terminated


def operands(n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Widths, (n, length) little-endian bits of both numbers, and the input `a 2 b`."""
    wa = rng.integers(1, length - 1, size=n)
    wb = length - 1 - wa
    a, b = nonzero_bits(rng, wa, length), nonzero_bits(rng, wb, length)
    j = np.arange(length)[None, :]
    from_b = np.take_along_axis(b, np.clip(j - wa[:, None] - 1, 0, None), axis=1)
    x = np.where(j < wa[:, None], a, np.where(j == wa[:, None], 2, from_b))
    return a, b, x


def short(n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """L <= 2: numbers from randint(0, 2^L - 1), in L little-endian bits."""
    number = rng.integers(0, 2**length - 1, size=n)
    return (number[:, None] >> np.arange(length)[None, :]) & 1


@dataclass
class BinaryAddition(LengthGeneralizationTask):
    input_size = 3
    output_size = 3

    @staticmethod
    def output_length(length: int) -> int:
        return length + 1

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if length <= 2:
            x = short(n, length, rng)
            return x, terminated(x, digits_length(x), length + 1, stop=2)
        a, b, x = operands(n, length, rng)
        total = carry(a + b)
        return x, terminated(total, digits_length(total), length + 1, stop=2)
