"""Parity check (Delétang et al. 2023, regular): is the number of 1s in a binary string odd?

Source: tasks/regular/parity_check.py. Input: L uniform bits. Answer (one position after the input): the count of
1s mod 2.
"""

from dataclasses import dataclass

import numpy as np

from tasks.length_generalization import LengthGeneralizationTask, bits


@dataclass
class ParityCheck(LengthGeneralizationTask):
    input_size = 2
    output_size = 2

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = bits(rng, (n, length))
        return x, (x.sum(1) % 2)[:, None]
