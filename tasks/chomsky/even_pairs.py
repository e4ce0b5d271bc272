"""Even pairs (Delétang et al. 2023, regular): is the number of `01` and `10` pairs in a binary string odd?

Source: tasks/regular/even_pairs.py. Input: L uniform bits. Answer (one position): the count of unequal adjacent
pairs mod 2, which is 1 exactly when the first and last bits differ (0 for L = 1).
"""

from dataclasses import dataclass

import numpy as np

from tasks.length_generalization import LengthGeneralizationTask, bits


@dataclass
class EvenPairs(LengthGeneralizationTask):
    input_size = 2
    output_size = 2

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = bits(rng, (n, length))
        return x, (x[:, :1] != x[:, -1:]).astype(np.int64)
