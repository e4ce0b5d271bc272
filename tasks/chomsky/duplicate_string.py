"""Duplicate string (Delétang et al. 2023, context-sensitive): output s_1 ... s_n s_1 ... s_n.

Source: tasks/cs/duplicate_string.py. Input: L symbols uniform in [0, alphabet_size) (binary in the paper). Answer:
the input twice, at the 2L positions after it.
"""

from dataclasses import dataclass

import numpy as np

from tasks.chomsky.strings import StringTransduction


@dataclass
class DuplicateString(StringTransduction):
    @staticmethod
    def output_length(length: int) -> int:
        return 2 * length

    def transduce(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, x], axis=1)
