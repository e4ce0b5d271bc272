"""Modular arithmetic with brackets (Delétang et al. 2023, deterministic context-free): reduce a bracketed expression
modulo 5.

Source: tasks/dcf/modular_arithmetic_brackets.py, with mult=True as the paper's constants.py builds it. An expression
of length L is drawn recursively: L = 1: a digit d; 2: `-d`; 3: `(d)`; 4: `(-d)`; L >= 5: `(A op B)` with A of length
uniform in [1, L-4], B of length L-3-len(A), op uniform over +, - (and * if mult). Digits are uniform in
[0, modulus). Tokens: digits 0..modulus-1, `+` modulus, `-` modulus+1, `*` modulus+2, `(` modulus+3, `)` modulus+4
(input_size modulus+6 as in the source, whose `x` and `=` never occur here). Answer (one position): the value mod
modulus. Generated breadth-first, every segment of one depth across all examples at once, then evaluated bottom-up.
"""

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge

from tasks.length_generalization import LengthGeneralizationTask

PLUS, MINUS, TIMES, OPEN, CLOSE = range(5)  # offsets from the modulus


def expressions(
    n: int, length: int, modulus: int, mult: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(n, length) token ids and (n,) values of random bracketed expressions (the source's
    generate_one_expression_and_result, vectorised)."""
    tok = np.zeros((n, length), dtype=np.int64)
    value = np.zeros(2 * n * length + n, dtype=np.int64)  # a node per segment; each split makes two
    row, start, size, node = np.arange(n), np.zeros(n, dtype=np.int64), np.full(n, length), np.arange(n)
    next_id, levels = n, []
    while len(node):
        leaf = size <= 4
        r, s, k, i = row[leaf], start[leaf], size[leaf], node[leaf]
        d = rng.integers(0, modulus, size=len(i))
        neg, bracket = (k == 2) | (k == 4), k >= 3
        tok[r[bracket], s[bracket]] = modulus + OPEN
        tok[r[bracket], (s + k - 1)[bracket]] = modulus + CLOSE
        tok[r[neg], (s + (k == 4))[neg]] = modulus + MINUS
        tok[r, s + (k >= 2) + (k == 4)] = d  # the digit: first, or after `-`, `(` or `(-`
        value[i] = np.where(neg, -d % modulus, d)
        r, s, k, i = row[~leaf], start[~leaf], size[~leaf], node[~leaf]
        left = rng.integers(1, k - 3) if len(k) else k
        op = rng.integers(0, 3 if mult else 2, size=len(k))
        tok[r, s] = modulus + OPEN
        tok[r, s + 1 + left] = modulus + op  # PLUS, MINUS, TIMES are 0, 1, 2
        tok[r, s + k - 1] = modulus + CLOSE
        m = len(i)
        a, b = next_id + np.arange(m), next_id + m + np.arange(m)
        next_id += 2 * m
        levels.append((i, a, b, op))
        row, start = np.concatenate([r, r]), np.concatenate([s + 1, s + 2 + left])
        size, node = np.concatenate([left, k - 3 - left]), np.concatenate([a, b])
    for i, a, b, op in reversed(levels):
        va, vb = value[a], value[b]
        value[i] = np.where(op == PLUS, va + vb, np.where(op == MINUS, va - vb, va * vb)) % modulus
    return tok, value[:n]


@dataclass
class ModularArithmeticBrackets(LengthGeneralizationTask):
    modulus: Annotated[int, Ge(2)] = 5
    mult: bool = True  # the paper's setting (constants.py); the source class's default is False

    @property
    def input_size(self) -> int:
        return self.modulus + 6

    @property
    def output_size(self) -> int:
        return self.modulus

    def sample(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x, y = expressions(n, length, self.modulus, self.mult, rng)
        return x, y[:, None]
