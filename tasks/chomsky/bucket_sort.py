"""Bucket sort (Delétang et al. 2023, context-sensitive): sort a string over a fixed alphabet.

Source: tasks/cs/bucket_sort.py. Input: L symbols uniform in [0, alphabet_size) (5 in the paper). Answer: the input
sorted in increasing order, at the L positions after it.
"""

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge

from tasks.length_generalization import LengthGeneralizationTask


@dataclass
class BucketSort(LengthGeneralizationTask):
    alphabet_size: Annotated[int, Ge(2)] = 5  # the source's vocab_size

    @property
    def input_size(self) -> int:
        return self.alphabet_size

    @property
    def output_size(self) -> int:
        return self.alphabet_size

    @staticmethod
    def output_length(length: int) -> int:
        return length

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.integers(0, self.alphabet_size, size=(n, length))
        return x, np.sort(x, axis=1)
