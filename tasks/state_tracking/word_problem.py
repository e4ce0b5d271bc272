"""Permutation word problems (Merrill, Petty & Sabharwal 2024, "The Illusion of State in State-Space Models"): compose
group elements token by token; the running product is scored at every position.

Source: jopetty/word-problem (generate_data.py): inputs are elements drawn uniformly from the group, the target is
their product; the paper's token-tagging form scores the prefix product at every position. Groups: S<n>
(permutations of n points), A<n> (the even ones), Z<n> (integers mod n, the abelian control) and direct products
`G_x_H` (e.g. A4_x_Z5), as the source names them. Elements are numbered as archbench lists them (permutations in
lexicographic order of their image tuples, A<n> the even ones in that order, products lexicographic in the
factors), not by the source's abstract_algebra indices; the product a·b applies a, then b: (a·b)(i) = b(a(i)). The
state after t tokens is x_1·x_2·...·x_t. S5 is non-solvable (no fixed-depth circuit of TC0 solves it unless
TC0 = NC1), A5 too; Z60 has the same order (60) but is abelian.

Lengths: each example's length is uniform in [train_min_length, train_max_length] (set both to one length to train
at one length, as the paper does), and every test length is a split test@L. Token ids: elements 0..|G|-1, pad |G|.
"""

import itertools
from dataclasses import dataclass

import numpy as np

from tasks.length_generalization import LengthGeneralizationTask


def parity_of(p: tuple) -> int:
    return sum(p[i] > p[j] for i in range(len(p)) for j in range(i + 1, len(p))) % 2


def cayley_table(group: str) -> np.ndarray:
    """table[a, b] = the index of a·b, for the elements of `group` in archbench's order."""
    tables = []
    for factor in group.split("_x_"):
        kind, n = factor[0], int(factor[1:])
        if kind == "Z":
            tables.append((np.arange(n)[:, None] + np.arange(n)[None, :]) % n)
            continue
        perms = [p for p in itertools.permutations(range(n)) if kind == "S" or parity_of(p) == 0]
        arr = np.array(perms)
        m = len(perms)
        # (a·b)(i) = b(a(i)) for every pair at once: composed[a, b, i] = perms[b][perms[a][i]]
        composed = np.take_along_axis(
            np.broadcast_to(arr[None, :, :], (m, m, n)), np.broadcast_to(arr[:, None, :], (m, m, n)), axis=2
        )
        weights = n ** np.arange(n - 1, -1, -1)  # lexicographic order of image tuples = order of these keys
        tables.append(np.searchsorted(arr @ weights, composed @ weights))
    table = tables[0]
    for t in tables[1:]:  # direct product: (a, b)·(c, d) = (a·c, b·d), pairs in lexicographic order
        table = (table[:, None, :, None] * len(t) + t[None, :, None, :]).reshape(len(table) * len(t), -1)
    return table


def check_group(group: str) -> None:
    for factor in group.split("_x_"):
        if len(factor) < 2 or factor[0] not in "SAZ" or not factor[1:].isdigit() or int(factor[1:]) < 1:
            raise ValueError(
                f"group={group!r} must be S<n>, A<n>, Z<n> or products of them joined by _x_ "
                "(e.g. S5, A5, Z60, A4_x_Z5)"
            )
        if factor[0] in "SA" and int(factor[1:]) > 7:
            raise ValueError(f"group={group!r}: permutations of more than 7 points make too large a vocabulary")


@dataclass
class WordProblem(LengthGeneralizationTask):
    group: str = "S5"

    def __post_init__(self):
        check_group(self.group)
        self.table = cayley_table(self.group)
        super().__post_init__()

    @property
    def input_size(self) -> int:
        return len(self.table)

    @property
    def output_size(self) -> int:
        return len(self.table)

    @property
    def pad(self) -> int:
        return len(self.table)

    @property
    def needed_vocab(self) -> int:
        return len(self.table) + 1

    @classmethod
    def width(cls, length: int) -> int:
        return length

    def make(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.integers(0, len(self.table), size=(n, length))
        y = np.empty_like(x)
        state = x[:, 0]
        y[:, 0] = state
        for t in range(1, length):
            state = self.table[state, x[:, t]]
            y[:, t] = state
        return x, y
