"""Odds first (Delétang et al. 2023, context-sensitive): the symbols at odd indices, then those at even ones.

Source: tasks/cs/odds_first.py. Input: L symbols uniform in [0, alphabet_size) (binary in the paper). Answer (L
positions): s[1::2] then s[::2] in 0-based indices, as the source's code computes it (its docstring's example,
`00110101 -> 0100 0111`, puts the 0-based even indices first; the code, which made the paper's data, does not).
"""

from dataclasses import dataclass

import numpy as np

from tasks.chomsky.strings import StringTransduction


@dataclass
class OddsFirst(StringTransduction):
    def transduce(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([x[:, 1::2], x[:, ::2]], axis=1)
