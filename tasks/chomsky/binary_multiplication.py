"""Binary multiplication (Delétang et al. 2023, context-sensitive): multiply two little-endian binary numbers.

Source: tasks/cs/binary_multiplication.py. The input is drawn as in binary_addition (`a 2 b`, widths summing to
L-1). Answer (L positions): the product, little-endian without high zeros (at most L-1 bits), then the termination
token 2, then (unscored here, 0s masked from the accuracy in the source) padding. For L <= 2 the source draws the
input as binary_addition does and sets the answer to L-1 zeros (none for L = 1, `0` for L = 2) whatever the input;
so does this. The product is computed on bit arrays (column sums by FFT, then a carry pass); the test checks it
against Python's integers.
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
        # column sums c_k = sum_i a_i b_(k-i), by FFT (exact: each is an integer of at most L, far inside float64's
        # rounding error at these sizes), then carried into bits
        size = 2 * length
        columns = np.fft.irfft(np.fft.rfft(a, size, axis=1) * np.fft.rfft(b, size, axis=1), size, axis=1)
        product = carry(np.rint(columns).astype(np.int64))
        return x, terminated(product, digits_length(product), length, stop=2)
