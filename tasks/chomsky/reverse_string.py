"""Reverse string (Delétang et al. 2023, deterministic context-free): output s_n ... s_1.

Source: tasks/dcf/reverse_string.py. Input: L symbols uniform in [0, alphabet_size) (binary in the paper). Answer: the
input reversed, at the L positions after it.
"""

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge

from tasks.length_generalization import LengthGeneralizationTask


@dataclass
class ReverseString(LengthGeneralizationTask):
    alphabet_size: Annotated[int, Ge(2)] = 2  # the source's vocab_size

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
        return x, x[:, ::-1].copy()
