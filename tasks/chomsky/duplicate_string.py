"""Duplicate string (Delétang et al. 2023, context-sensitive): output s_1 ... s_n s_1 ... s_n.

Source: tasks/cs/duplicate_string.py. Input: L symbols uniform in [0, alphabet_size) (binary in the paper). Answer:
the input twice, at the 2L positions after it.
"""

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge

from tasks.length_generalization import LengthGeneralizationTask


@dataclass
class DuplicateString(LengthGeneralizationTask):
    alphabet_size: Annotated[int, Ge(2)] = 2  # the source's vocab_size

    @property
    def input_size(self) -> int:
        return self.alphabet_size

    @property
    def output_size(self) -> int:
        return self.alphabet_size

    @staticmethod
    def output_length(length: int) -> int:
        return 2 * length

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.integers(0, self.alphabet_size, size=(n, length))
        return x, np.concatenate([x, x], axis=1)
