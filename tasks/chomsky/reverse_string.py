"""Reverse string (Delétang et al. 2023, deterministic context-free): output s_n ... s_1.

Source: tasks/dcf/reverse_string.py. Input: L symbols uniform in [0, alphabet_size) (binary in the paper). Answer: the
input reversed, at the L positions after it.
"""

from dataclasses import dataclass

import numpy as np

from tasks.chomsky.strings import StringTransduction


@dataclass
class ReverseString(StringTransduction):
    def transduce(self, x: np.ndarray) -> np.ndarray:
        return x[:, ::-1].copy()
