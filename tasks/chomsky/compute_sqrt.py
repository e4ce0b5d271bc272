"""Compute square root (Delétang et al. 2023, context-sensitive): floor(sqrt(N)) of a big-endian binary number.

Source: tasks/cs/compute_sqrt.py. Input: an integer uniform in [1, 2^L - 1] in L big-endian bits (high zeros kept).
Answer (ceil(L/2) positions, every one scored): floor(sqrt(N)) in ceil(L/2) big-endian bits. The bits are drawn
vectorised; the square root is Python's math.isqrt per example (bits to int and back through bytes), the one step
here that is per example rather than per array (about 1 µs each).
"""

import math
from dataclasses import dataclass

import numpy as np

from tasks.length_generalization import LengthGeneralizationTask, nonzero_bits


def isqrt_bits(big_endian: np.ndarray, out_bits: int) -> np.ndarray:
    n, width = big_endian.shape
    pad = -width % 8
    packed = np.packbits(np.pad(big_endian.astype(np.uint8), ((0, 0), (pad, 0))), axis=1)
    nbytes = -(-out_bits // 8)
    roots = b"".join(math.isqrt(int.from_bytes(row.tobytes(), "big")).to_bytes(nbytes, "big") for row in packed)
    out = np.unpackbits(np.frombuffer(roots, dtype=np.uint8).reshape(n, nbytes), axis=1)
    return out[:, nbytes * 8 - out_bits :].astype(np.int64)


@dataclass
class ComputeSqrt(LengthGeneralizationTask):
    input_size = 2
    output_size = 2

    @staticmethod
    def output_length(length: int) -> int:
        return math.ceil(length / 2)

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = nonzero_bits(rng, np.full(n, length), length)[:, ::-1].copy()
        return x, isqrt_bits(x, self.output_length(length))
