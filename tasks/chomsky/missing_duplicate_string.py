"""Missing duplicate (Delétang et al. 2023, context-sensitive): the symbol hidden in a string written twice.

Source: tasks/cs/missing_duplicate_string.py. A binary string of L // 2 bits is written twice; one position of the
2 (L // 2) is drawn uniformly and replaced by the token 2; an odd L appends the token 3. Answer (one position): the
hidden bit. For L = 1 the source sets input [1] and answer 1; so does this.
"""

from dataclasses import dataclass

import numpy as np

from tasks.length_generalization import LengthGeneralizationTask, bits


@dataclass
class MissingDuplicateString(LengthGeneralizationTask):
    input_size = 4
    output_size = 2

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if length == 1:
            return np.ones((n, 1), dtype=np.int64), np.ones((n, 1), dtype=np.int64)
        half = bits(rng, (n, length // 2))
        x = np.concatenate([half, half], axis=1)
        hidden = rng.integers(0, x.shape[1], size=n)
        rows = np.arange(n)
        answer = x[rows, hidden].copy()
        x[rows, hidden] = 2
        if length % 2:
            x = np.concatenate([x, np.full((n, 1), 3)], axis=1)
        return x, answer[:, None]
