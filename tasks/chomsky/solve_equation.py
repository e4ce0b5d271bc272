"""Solve equation (Delétang et al. 2023, deterministic context-free): find x in `expression = value` modulo 5.

Source: tasks/dcf/solve_equation.py. An expression of length L-2 is drawn as in modular_arithmetic_brackets with +
and - only (so the solution is unique); a position is drawn uniformly in [0, L-2) and moved forward (cyclically) to
the first digit at or after it (so a digit after a long run of brackets is likelier, as in the source); that digit
becomes `x` and is the answer (one position). The input is the expression, `=`, and its value. For L < 3 the source
gives all-0 inputs and the answer 0; so does this. Tokens: digits 0..modulus-1, `+` modulus, `-` modulus+1,
`(` modulus+2, `)` modulus+3, `x` modulus+4, `=` modulus+5.
"""

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge

from tasks.chomsky.modular_arithmetic_brackets import CLOSE, OPEN, expressions
from tasks.length_generalization import LengthGeneralizationTask

X, EQUALS = 4, 5  # offsets from the modulus; +, - are 0, 1, ( and ) are 2, 3


@dataclass
class SolveEquation(LengthGeneralizationTask):
    modulus: Annotated[int, Ge(2)] = 5

    @property
    def input_size(self) -> int:
        return self.modulus + 6

    @property
    def output_size(self) -> int:
        return self.modulus

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        m = self.modulus
        if length < 3:
            return np.zeros((n, length), dtype=np.int64), np.zeros((n, 1), dtype=np.int64)
        expr, value = expressions(n, length - 2, m, False, rng)
        expr = np.where(expr == m + OPEN, m + 2, np.where(expr == m + CLOSE, m + 3, expr))  # this task's ids
        w = length - 2
        digit = expr < m
        pos = np.where(digit, np.arange(w)[None, :], w + w)
        following = np.minimum.accumulate(pos[:, ::-1], axis=1)[:, ::-1]  # the first digit at or after each index
        start = rng.integers(0, w, size=n)
        rows = np.arange(n)
        chosen = following[rows, start]
        chosen = np.where(chosen >= w, following[:, 0], chosen)  # none after: wrap around to the first digit
        answer = expr[rows, chosen].copy()
        expr[rows, chosen] = m + X
        x = np.concatenate([expr, np.full((n, 1), m + EQUALS), value[:, None]], axis=1)
        return x, answer[:, None]
