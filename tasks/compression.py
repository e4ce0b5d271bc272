"""Compression, MAD's task (Poli et al. 2024), after MAD's `generate_compression_instance`, adapted to next-token
prediction with a mask; the shared differences from MAD are in tasks/mad_base.py.

MAD's setup is an autoencoder: an encoder reads seq_len - 1 random tokens and a compression token, its output at
that last position is the only thing a separate MLP decoder sees, and the decoder (given a position embedding)
reconstructs every input token. archbench has one causal model and no decoder, so here the sequence is m =
seq_len / 2 random tokens from [0, V-1) followed by m compression tokens V-1, and the i-th compression token's
target is the i-th random token: the model must reproduce the sequence from what it carried past it. For models
with a fixed-size state (recurrences, SSMs, linear attention) the state after the m tokens is the bottleneck, as in
MAD. Attention can look back at the tokens, so for it this is copying, not compression; MAD's bottleneck would take
a model-side change (an encoder-decoder backbone). MAD's length L (L - 1 random tokens) corresponds to seq_len = 2L
here (L random tokens, one more than MAD), so the baseline is seq_len 64 for MAD's 32.
"""

from dataclasses import dataclass

import numpy as np

from tasks.base import IGNORE, Count
from tasks.mad_base import MADTask


@dataclass
class Compression(MADTask):
    vocab_size: Count = 16
    seq_len: Count = 64
    num_train: Count = 12_800
    num_val: Count = 1_280
    num_test: Count = 1_280
    family: str = "compression"
    setting: str = "baseline"

    def check(self) -> None:
        super().check()
        if self.seq_len % 2 or self.seq_len < 2:
            raise ValueError(f"seq_len={self.seq_len} must be even (m tokens, then m compression tokens)")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size={self.vocab_size} must be at least 2 (content and compression tokens)")

    def generate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        m = self.seq_len // 2
        tokens = rng.integers(0, self.vocab_size - 1, size=(n, m))
        inputs = np.hstack([tokens, np.full((n, m), self.vocab_size - 1)])
        targets = np.hstack([np.full((n, m), IGNORE), tokens])
        return inputs, targets
