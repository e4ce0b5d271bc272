"""Binary multiplication (Delétang et al. 2023, context-sensitive): multiply two little-endian binary numbers.

Source: tasks/cs/binary_multiplication.py. The input is drawn as in binary_addition (`a 2 b`, widths summing to
L-1). Answer (L positions): the product, little-endian without high zeros (at most L-1 bits), then the termination
token 2, then (unscored here, 0s masked from the accuracy in the source) padding. For L <= 2 the source draws the
input as binary_addition does and sets the answer to L-1 zeros (none for L = 1, `0` for L = 2) whatever the input;
so does this. The product is computed on bit arrays (shifted sums of column products, then a carry pass).
"""

from dataclasses import dataclass

import numpy as np

from tasks.chomsky.binary_addition import operands, short
from tasks.length_generalization import LengthGeneralizationTask, carry, digits_length, terminated


@dataclass
class BinaryMultiplication(LengthGeneralizationTask):
    input_size = 3
    output_size = 3

    @staticmethod
    def output_length(length: int) -> int:
        return length

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if length <= 2:
            x = short(n, length, rng)
            zeros = np.zeros((n, length), dtype=np.int64)
            return x, terminated(zeros, np.full(n, length - 1), length, stop=2)
        a, b, x = operands(n, length, rng)
        columns = np.zeros((n, 2 * length), dtype=np.int64)
        for i in range(length - 2):  # the first number has at most L-2 bits
            columns[:, i : i + length] += a[:, i : i + 1] * b
        product = carry(columns)
        return x, terminated(product, digits_length(product), length, stop=2)
