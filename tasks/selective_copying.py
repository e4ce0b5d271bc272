"""Selective copying (Gu & Dao 2023, Mamba; MAD's task, Poli et al. 2024), with the semantics of MAD's
`generate_selective_copying_instance`; the shared differences from MAD are in tasks/mad_base.py.

Tokens: content [0, V-2), blank V-2, copy (marker) V-1; k = num_tokens_to_copy content tokens, drawn with
replacement. Two layouts (`placement`):
- `mad` (MAD's `generate_selective_copying_instance`): the k tokens among seq_len - 2k - 1 blanks, then one copy
  token, then k blanks. Scored: the k positions after the copy token, whose targets are the tokens in order (the
  copy token is not scored; the model sees blanks there, never its own outputs). Each blank is inserted before a
  uniformly chosen content token (np.insert at an index in [0, k)), so the blank counts between tokens are
  multinomial and the last token always sits right before the copy token. (MAD draws these indices from numpy's
  global RNG; here they come from the split's stream.)
- `mamba` (the generator of Mamba's Table 1, `torch_copying_data(L, M, A, variable=True)` of the S4 repository,
  with L = seq_len - 2k, M = k, A = V and its tokens relabelled: its pad 0 is blank V-2 here, its content 1..A-2 is
  0..V-3): the k tokens at positions drawn uniformly without replacement among the first seq_len - k, blanks
  elsewhere, then k marker tokens. Scored: the k marker positions, whose targets are the tokens in order.
Training is scored the same way as the held-out splits.
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tasks.base import IGNORE, Count, choice_without_replacement
from tasks.mad_base import MADTask

PLACEMENTS = ("mad", "mamba")


@dataclass
class SelectiveCopying(MADTask):
    vocab_size: Count = 16
    seq_len: Count = 256
    num_tokens_to_copy: Count = 16
    placement: str = "mad"
    num_train: Count = 12_800
    num_val: Count = 1_280
    num_test: Count = 1_280
    family: str = "selective_copying"
    setting: str = "baseline"
    version: ClassVar[int] = 2  # 2: placement mamba is S4's layout (k markers), not one copy token and k blanks

    def check(self) -> None:
        super().check()
        k = self.num_tokens_to_copy
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size={self.vocab_size} must be at least 3 (content, blank and copy tokens)")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement={self.placement!r} must be one of {', '.join(PLACEMENTS)}")
        least = 2 * k + 1 if self.placement == "mad" else 2 * k  # mad: one copy token; mamba: markers only
        if k < 1 or self.seq_len <= least:
            raise ValueError(
                f"num_tokens_to_copy={k} does not fit: seq_len={self.seq_len} must exceed {least} "
                f"(placement={self.placement})"
            )

    def generate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k, L, V = self.num_tokens_to_copy, self.seq_len, self.vocab_size
        tokens = rng.integers(0, V - 2, size=(n, k))
        inputs = np.full((n, L), V - 2, dtype=np.int64)
        targets = np.full((n, L), IGNORE, dtype=np.int64)
        if self.placement == "mad":  # blanks before token i: multinomial; token i at i + blanks before it
            blanks = L - 2 * k - 1
            before = rng.multinomial(blanks, np.full(k, 1 / k), size=n)
            positions = np.arange(k) + np.cumsum(before, axis=1)
            inputs[:, blanks + k] = V - 1
        else:  # mamba: k of the first L - k positions, then k markers
            positions = np.sort(choice_without_replacement(rng, n, 0, L - k, k), axis=1)
            inputs[:, L - k :] = V - 1
        np.put_along_axis(inputs, positions, tokens, axis=1)
        targets[:, L - k :] = tokens
        return inputs, targets
