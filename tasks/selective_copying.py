"""Selective copying (Gu & Dao 2023, Mamba; MAD's task, Poli et al. 2024), with the semantics of MAD's
`generate_selective_copying_instance`; the shared differences from MAD are in tasks/mad_base.py.

Tokens: content [0, V-2), blank V-2, copy V-1. A sequence is num_tokens_to_copy content tokens (drawn with
replacement) scattered among seq_len - 2k - 1 blanks, then the copy token, then k blanks. Scored: the k positions
after the copy token, whose targets are the content tokens in order (the copy token itself is not scored, and the
model sees blanks, never its own outputs). Training is scored the same way.

Placement of the tokens among the blanks (`placement`):
- `mad`: MAD's rule: each blank is inserted before a uniformly chosen content token (np.insert at an index in
  [0, k)), so the blank counts between tokens are multinomial and the last content token always sits right before
  the copy token. (MAD draws these indices from numpy's global RNG; here they come from the split's stream.)
- `uniform`: the k positions drawn uniformly without replacement among the seq_len - k - 1 before the copy token,
  as in the generator of Mamba's selective copying (the S4 repository's copying task with `variable=True`).
"""

from dataclasses import dataclass

import numpy as np

from tasks.base import IGNORE, choice_without_replacement
from tasks.mad_base import MADTask

PLACEMENTS = ("mad", "uniform")


@dataclass
class SelectiveCopying(MADTask):
    vocab_size: int = 16
    seq_len: int = 256
    num_tokens_to_copy: int = 16
    placement: str = "mad"
    num_train: int = 12_800
    num_val: int = 1_280
    num_test: int = 1_280
    family: str = "selective_copying"
    setting: str = "baseline"

    def check(self) -> None:
        super().check()
        k = self.num_tokens_to_copy
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size={self.vocab_size} must be at least 3 (content, blank and copy tokens)")
        if k < 1 or self.seq_len <= 2 * k + 1:
            raise ValueError(f"num_tokens_to_copy={k} does not fit: seq_len={self.seq_len} must exceed "
                             f"2 * num_tokens_to_copy + 1 = {2 * k + 1}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement={self.placement!r} must be one of {', '.join(PLACEMENTS)}")

    def generate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k, L, V = self.num_tokens_to_copy, self.seq_len, self.vocab_size
        blanks = L - 2 * k - 1
        tokens = rng.integers(0, V - 2, size=(n, k))
        if self.placement == "mad":  # blanks before token i: multinomial; token i at i + blanks before it
            before = rng.multinomial(blanks, np.full(k, 1 / k), size=n)
            positions = np.arange(k) + np.cumsum(before, axis=1)
        else:
            positions = np.sort(choice_without_replacement(rng, n, 0, blanks + k, k), axis=1)
        inputs = np.full((n, L), V - 2, dtype=np.int64)
        np.put_along_axis(inputs, positions, tokens, axis=1)
        inputs[:, blanks + k] = V - 1
        targets = np.full((n, L), IGNORE, dtype=np.int64)
        targets[:, blanks + k + 1 :] = tokens
        return inputs, targets
