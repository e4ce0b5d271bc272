"""In-context recall, MAD's first task (Poli et al. 2024), with the semantics of MAD's
`generate_in_context_recall_instance`; the shared differences from MAD are in tasks/mad_base.py.

Tokens: keys [0, c/2), values [c/2, c), noise [c, c + noise_vocab_size), where c = vocab_size - noise_vocab_size
(minus one more, for the copy prefix V-1, when multi_query is false). A sequence is seq_len/2 - 1 key-value pairs,
each key drawn uniformly (keys repeat), its value drawn once per sequence and kept whenever the key comes back;
with frac_noise > 0 each pair is instead two noise tokens with that probability (one random pair never is). Then
a final probe: a key drawn uniformly from those shown, and its value (after the copy prefix V-1 when multi_query is
false). Scored (val/test): the value of the probe, and with multi_query (MAD's benchmark setting) the value of
every pair whose key was shown before; the target sits at the key's position (next-token prediction). Training
targets are every next token (`train_all_tokens`, as MAD).

Layout against MAD: MAD returns inputs[:-1], targets[1:] of its stream, which is seq_len - 1 tokens long with
multi_query; here the arrays are seq_len wide, the extra last position (the probe's value as input) unscored.
"""

from dataclasses import dataclass

import numpy as np

from tasks.base import Count, NonNegative, OpenFraction
from tasks.mad_base import MADTask, first_occurrence, next_token


@dataclass
class InContextRecall(MADTask):
    vocab_size: Count = 16
    seq_len: Count = 128
    multi_query: bool = True
    noise_vocab_size: NonNegative = 0
    frac_noise: OpenFraction = 0.0
    train_all_tokens: bool = True
    num_train: Count = 12_800
    num_val: Count = 1_280
    num_test: Count = 1_280
    family: str = "in_context_recall"
    setting: str = "baseline"

    @property
    def content_vocab(self) -> int:
        """c: key and value tokens together; the noise tokens and the copy prefix come after them."""
        return self.vocab_size - self.noise_vocab_size - (0 if self.multi_query else 1)

    def check(self) -> None:
        super().check()
        if self.seq_len % 2 or self.seq_len < 4:
            raise ValueError(f"seq_len={self.seq_len} must be even and at least 4 (key-value pairs and a probe)")
        if not 0 <= self.frac_noise < 1:
            raise ValueError(f"frac_noise={self.frac_noise} must be in [0, 1)")
        if self.noise_vocab_size < 0 or (self.frac_noise > 0 and self.noise_vocab_size < 1):
            raise ValueError(f"noise_vocab_size={self.noise_vocab_size} must be positive when frac_noise > 0")
        if self.content_vocab < 2:
            raise ValueError(
                f"vocab_size={self.vocab_size} leaves {self.content_vocab} key and value tokens after "
                f"noise_vocab_size={self.noise_vocab_size}; need at least 2"
            )

    def generate_split(self, name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.make(n, rng, train=name == "train" and self.train_all_tokens)

    def generate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.make(n, rng, train=False)

    def make(self, n: int, rng: np.random.Generator, train: bool) -> tuple[np.ndarray, np.ndarray]:
        c, P = self.content_vocab, self.seq_len // 2 - 1  # P pairs before the probe
        K = c // 2
        rows = np.arange(n)
        keys = rng.integers(0, K, size=(n, P))
        value_of = rng.integers(K, c, size=(n, K))  # each key's value, drawn once per sequence
        values = np.take_along_axis(value_of, keys, axis=1)
        real = np.ones((n, P), dtype=bool)
        if self.frac_noise > 0:
            keep = rng.integers(0, P + 1, size=n)  # MAD's not_noise_idx: drawn over all P+1 pairs, probe included
            real = (rng.random((n, P)) >= self.frac_noise) | (np.arange(P) == keep[:, None])
            real[~real.any(axis=1), 0] = True  # where MAD's probe draw would find no key shown (probability ~0)
            noise = rng.integers(c, c + self.noise_vocab_size, size=(n, P, 2))
            keys, values = np.where(real, keys, noise[..., 0]), np.where(real, values, noise[..., 1])

        codes = np.where(real, keys, -1 - np.arange(P))  # noise pairs never match a key
        shown_before = first_occurrence(codes) < np.arange(P)
        # the probe: a key drawn uniformly among the distinct keys shown (the first showing of each, once)
        pick = np.where(real & ~shown_before, rng.random((n, P)), -1.0).argmax(axis=1)
        probe_key = keys[rows, pick]
        probe_value = value_of[rows, probe_key]

        pairs = np.stack([keys, values], axis=2).reshape(n, 2 * P)
        scored_values = np.where(real & shown_before & self.multi_query, values, -100)
        scored = np.stack([np.full((n, P), -100), scored_values], axis=2).reshape(n, 2 * P)
        probe = np.stack([probe_key, probe_value], axis=1)
        probe_scored = np.stack([np.full(n, -100), probe_value], axis=1)
        if not self.multi_query:
            prefix = np.full((n, 1), self.vocab_size - 1)
            probe, probe_scored = np.hstack([prefix, probe]), np.hstack([np.full((n, 1), -100), probe_scored])
        stream, scored = np.hstack([pairs, probe]), np.hstack([scored, probe_scored])
        return next_token(stream, scored, self.seq_len, train)
