"""Cycle navigation (Delétang et al. 2023, regular): the final position after a walk on a cycle of 5 states.

Source: tasks/regular/cycle_navigation.py. Input: L actions uniform in {0, 1, 2}, meaning stay, right (+1) and left
(-1) as the source maps them (action - 1: 0 is -1, 1 stays, 2 is +1). Answer (one position): the sum of
(action - 1) mod cycle_length, starting from 0.
"""

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge

from tasks.length_generalization import LengthGeneralizationTask


@dataclass
class CycleNavigation(LengthGeneralizationTask):
    cycle_length: Annotated[int, Ge(2)] = 5  # the source fixes 5
    input_size = 3

    @property
    def output_size(self) -> int:
        return self.cycle_length

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.integers(0, 3, size=(n, length))
        return x, ((x - 1).sum(1) % self.cycle_length)[:, None]
