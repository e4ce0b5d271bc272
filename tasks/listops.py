"""ListOps as in Long Range Arena (Tay et al. 2021), with the generator of LRA's lra_benchmarks/data/listops.py
(after Nangia & Bowman 2018), vectorized over trees.

A tree: below max_depth a node is an operator with probability 1/4, else a digit 0-9; an operator (MIN, MAX, MED =
int(np.median), SM = sum mod 10, each with probability 1/4) takes 2 to max_args arguments. The root is at depth 1.
Trees whose length in tokens (operators, digits and closing brackets; LRA's tokenizer drops the parentheses of its
string form) is strictly between min_length and max_length are kept, as LRA keeps them.

Tokens: digits 0-9 are ids 0-9 (so the class is the token id), `]` is 10, `[MIN` 11, `[MAX` 12, `[MED` 13, `[SM` 14,
padding 15. The expression starts at position 0 and is padded after its end; the scored position is its last token,
the root's `]`, whose target is the value (10 classes): a causal model has read the whole expression there, and the
padding after it is never seen by the scored position.

Where this differs from LRA: no deduplication of trees (LRA keeps a set; at LRA's lengths duplicates are vanishingly
rare, but small presets can repeat trees within and across splits); the random streams are numpy's, per split.
Generation is level by level over many trees at once, so tens of thousands of trees take seconds; large splits are
cached on disk (tasks/cache.py).
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tasks.base import IGNORE, Count, Task

VALUE_P = 0.25  # LRA: a node below max_depth is an operator iff random() <= VALUE_P
OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END, FIRST_OP, PAD = 10, 11, 15
TOKENS = tuple(str(d) for d in range(10)) + ("]",) + OPERATORS + ("<pad>",)


@dataclass
class ListOps(Task):
    vocab_size: Count = 16
    seq_len: Count = 2000
    max_depth: Count = 10
    max_args: Count = 10
    min_length: Count = 500
    max_length: Count = 2000
    num_train: Count = 96_000
    num_val: Count = 2_000
    num_test: Count = 2_000
    cache_min_tokens: ClassVar[int] = 1 << 22  # tree generation costs more per token than the other generators
    roots_per_batch: Count = 50_000

    def check(self) -> None:
        super().check()
        if self.vocab_size < len(TOKENS):
            raise ValueError(f"vocab_size={self.vocab_size} must be at least {len(TOKENS)} (ListOps' tokens)")
        if self.max_depth < 1 or self.max_args < 2:
            raise ValueError(f"max_depth={self.max_depth} must be >= 1 and max_args={self.max_args} >= 2")
        if not 0 <= self.min_length < self.max_length - 1:
            raise ValueError(
                f"min_length={self.min_length} must be >= 0 and leave room below "
                f"max_length={self.max_length} (lengths are strictly between the two)"
            )
        if self.seq_len < self.max_length - 1:
            raise ValueError(
                f"seq_len={self.seq_len} must hold the longest expression, max_length - 1 = {self.max_length - 1}"
            )
        if self.max_depth == 1 and self.min_length >= 1:
            raise ValueError(f"max_depth=1 makes every tree one digit, never longer than min_length={self.min_length}")

    def generate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        inputs, targets, got = [], [], 0
        while got < n:
            x, y = self._batch(rng)
            inputs.append(x[: n - got])
            targets.append(y[: n - got])
            got += len(inputs[-1])
        if not inputs:
            return np.zeros((0, self.seq_len), dtype=np.int64), np.zeros((0, self.seq_len), dtype=np.int64)
        return np.concatenate(inputs), np.concatenate(targets)

    def _batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Trees from roots_per_batch roots, the kept ones serialized: (inputs, targets) of those."""
        B = self.roots_per_batch
        levels, tree = [], np.arange(B)
        tokens_so_far = np.zeros(B, dtype=np.int64)  # a lower bound on each tree's length
        for depth in range(1, self.max_depth + 1):
            m = len(tree)
            if m == 0:
                break
            is_op = rng.random(m) <= VALUE_P if depth < self.max_depth else np.zeros(m, dtype=bool)
            n_args = np.where(is_op, rng.integers(2, self.max_args + 1, size=m), 0)
            node = {
                "tree": tree,
                "is_op": is_op,
                "n_args": n_args,
                "op": rng.integers(0, 4, size=m),
                "digit": rng.integers(0, 10, size=m),
            }
            tokens_so_far += np.bincount(tree, weights=np.where(is_op, 2, 1), minlength=B).astype(np.int64)
            # a tree already too long is cut here (its operators get no arguments); it is rejected below
            too_long = tokens_so_far[tree] >= self.max_length
            node["is_op"] = is_op & ~too_long
            node["n_args"] = np.where(node["is_op"], n_args, 0)
            levels.append(node)
            tree = np.repeat(tree, node["n_args"])

        # bottom up: length and value of every node, from the counts of its arguments' values
        below_len = below_val = None
        for node in reversed(levels):
            is_op, n_args = node["is_op"], node["n_args"]
            length, value = np.ones(len(is_op), dtype=np.int64), node["digit"].copy()
            if is_op.any():
                parent = np.repeat(np.arange(len(is_op)), n_args)  # the node each argument belongs to
                ops = np.flatnonzero(is_op)
                length[ops] = 2 + np.bincount(parent, weights=below_len, minlength=len(is_op))[ops].astype(np.int64)
                counts = np.bincount(parent * 10 + below_val, minlength=10 * len(is_op)).reshape(-1, 10)[ops]
                value[ops] = apply_operators(counts, node["op"][ops])
            node["length"], node["value"] = length, value
            below_len, below_val = length, value
        root = levels[0]
        keep = (
            (tokens_so_far < self.max_length) & (root["length"] > self.min_length) & (root["length"] < self.max_length)
        )
        return self._serialize(levels, keep)

    def _serialize(self, levels: list[dict], keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pre-order tokens of the kept trees: an operator at its start, `]` at its end, arguments in between."""
        row = np.cumsum(keep) - 1  # the output row of each kept tree
        n = int(keep.sum())
        inputs = np.full((n, self.seq_len), PAD, dtype=np.int64)
        start = np.zeros(len(levels[0]["tree"]), dtype=np.int64)
        for depth, node in enumerate(levels):
            sel = keep[node["tree"]]
            r, s, length = row[node["tree"][sel]], start[sel], node["length"][sel]
            is_op = node["is_op"][sel]
            inputs[r, s] = np.where(is_op, FIRST_OP + node["op"][sel], node["digit"][sel])
            inputs[r[is_op], (s + length - 1)[is_op]] = END
            if depth + 1 < len(levels):  # arguments start after the operator, one after another
                parent = np.repeat(np.arange(len(node["is_op"])), node["n_args"])
                below = levels[depth + 1]["length"]
                before = np.cumsum(below) - below
                first_arg = np.cumsum(node["n_args"]) - node["n_args"]
                start = start[parent] + 1 + before - before[first_arg[parent]]
        root = levels[0]
        targets = np.full((n, self.seq_len), IGNORE, dtype=np.int64)
        targets[np.arange(n), root["length"][keep] - 1] = root["value"][keep]
        return inputs, targets


def apply_operators(counts: np.ndarray, op: np.ndarray) -> np.ndarray:
    """Each row of `counts` (k, 10) counts an operator's argument values 0-9; op 0..3 = MIN, MAX, MED, SM.
    MED is int(np.median(args)): the mean of the two middle values, truncated."""
    c = counts.sum(axis=1)
    cum = np.cumsum(counts, axis=1)
    smallest = (cum == 0).sum(axis=1)
    largest = 9 - (np.cumsum(counts[:, ::-1], axis=1) == 0).sum(axis=1)
    low, high = (cum <= ((c - 1) // 2)[:, None]).sum(axis=1), (cum <= (c // 2)[:, None]).sum(axis=1)
    total = counts @ np.arange(10)
    return np.choose(op, [smallest, largest, (low + high) // 2, total % 10])


def to_text(tokens: np.ndarray) -> str:
    """An expression in LRA's notation without its parentheses, e.g. `[MAX 2 9 [MIN 4 7 ] 0 ]`."""
    return " ".join(TOKENS[t] for t in tokens if t != PAD)
