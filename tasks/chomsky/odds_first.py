"""Odds first (Delétang et al. 2023, context-sensitive): the symbols at odd indices, then those at even ones.

Source: tasks/cs/odds_first.py. Input: L symbols uniform in [0, alphabet_size) (binary in the paper). Answer (L
positions): s[1::2] then s[::2] in 0-based indices, as the source's code computes it (its docstring's example,
`00110101 -> 0100 0111`, puts the 0-based even indices first; the code, which made the paper's data, does not).
"""

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge

from tasks.length_generalization import LengthGeneralizationTask


@dataclass
class OddsFirst(LengthGeneralizationTask):
    alphabet_size: Annotated[int, Ge(2)] = 2

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
        return x, np.concatenate([x[:, 1::2], x[:, ::2]], axis=1)
