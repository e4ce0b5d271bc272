"""The skeleton four of the Delétang et al. 2023 tasks share (reverse_string, duplicate_string, odds_first,
bucket_sort): the input is L symbols uniform in [0, alphabet_size), the answer a function of that string over the same
alphabet (`transduce`), `output_length(L)` symbols long."""

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge

from tasks.length_generalization import LengthGeneralizationTask


@dataclass
class StringTransduction(LengthGeneralizationTask):
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

    def transduce(self, x: np.ndarray) -> np.ndarray:
        """The answers (n, output_length(L)) to the strings `x` (n, L)."""
        raise NotImplementedError

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.integers(0, self.alphabet_size, size=(n, length))
        return x, self.transduce(x)
