"""Bucket sort (Delétang et al. 2023, context-sensitive): sort a string over a fixed alphabet.

Source: tasks/cs/bucket_sort.py. Input: L symbols uniform in [0, alphabet_size) (5 in the paper). Answer: the input
sorted in increasing order, at the L positions after it.
"""

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge

from tasks.chomsky.strings import StringTransduction


@dataclass
class BucketSort(StringTransduction):
    alphabet_size: Annotated[int, Ge(2)] = 5  # the source's vocab_size

    def transduce(self, x: np.ndarray) -> np.ndarray:
        return np.sort(x, axis=1)
