"""Multi-query associative recall (Arora et al. 2023, Zoology), with the semantics of Zoology's `multiquery_ar`.

A sequence starts with `num_kv_pairs` key-value pairs (keys from [1, V/2), values from [V/2, V), distinct within
the sequence); each key is then queried once, at position 2*kv + 2*gap, with gaps drawn without replacement from
range((L - 2*kv) / 2) with probability proportional to a * i^(a-1), i = 1.. (small a favours short gaps). The
target at a query position is the key's value; every other target is -100. Non-query positions hold 0, or random
tokens with `random_non_queries=true` (Zoology's default). The draws follow Zoology's distributions exactly; the
random streams differ, so the examples are not the same arrays as Zoology's for the same seed.
"""

from dataclasses import dataclass

import numpy as np

from tasks.base import (
    IGNORE,
    Count,
    PositiveFloat,
    Task,
    choice_without_replacement,
    weighted_choice_without_replacement,
)


@dataclass
class MQAR(Task):
    # CPU-sized, as conf/task/mqar.yaml; Zoology's Figure 2 sizes (vocab 8,192, 100,000 train, 3,000 test) are the
    # presets conf/task/zoology/mqar_<length>.yaml
    vocab_size: Count = 128
    seq_len: Count = 64
    num_kv_pairs: Count = 4
    power_a: PositiveFloat = 0.01
    random_non_queries: bool = False
    num_train: Count = 20_000
    num_val: Count = 1_000
    num_test: Count = 1_000

    def check(self) -> None:
        super().check()
        if self.seq_len % 2:
            raise ValueError(f"seq_len={self.seq_len} must be even")
        if self.vocab_size <= self.seq_len:
            raise ValueError(f"vocab_size={self.vocab_size} must be greater than seq_len={self.seq_len}")
        if self.num_kv_pairs < 1 or 4 * self.num_kv_pairs > self.seq_len:
            raise ValueError(
                f"num_kv_pairs={self.num_kv_pairs} does not fit: 4 * num_kv_pairs must be <= "
                f"seq_len={self.seq_len} (pairs plus a query slot for each)"
            )
        if self.num_kv_pairs > self.vocab_size // 2 - 1:
            raise ValueError(
                f"num_kv_pairs={self.num_kv_pairs} needs more distinct keys than "
                f"vocab_size={self.vocab_size} has ({self.vocab_size // 2 - 1})"
            )
        if self.power_a <= 0:
            raise ValueError(f"power_a={self.power_a} must be positive")

    def generate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        kv, L, V = self.num_kv_pairs, self.seq_len, self.vocab_size
        context = 2 * kv
        keys = choice_without_replacement(rng, n, 1, V // 2, kv)
        values = choice_without_replacement(rng, n, V // 2, V, kv)
        space = (L - context) // 2
        p = self.power_a * np.arange(1, space + 1) ** (self.power_a - 1)
        gaps = weighted_choice_without_replacement(rng, n, p / p.sum(), kv)

        inputs = np.zeros((n, L), dtype=np.int64)
        inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values
        query_pos = context + 2 * gaps
        np.put_along_axis(inputs, query_pos, keys, axis=1)
        targets = np.full((n, L), IGNORE, dtype=np.int64)
        np.put_along_axis(targets, query_pos, values, axis=1)
        if self.random_non_queries:
            filler = inputs == 0
            inputs[filler] = rng.integers(0, V, size=int(filler.sum()))
        return inputs, targets
