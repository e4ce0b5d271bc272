"""Fuzzy in-context recall, MAD's task (Poli et al. 2024), with the semantics of MAD's
`generate_fuzzy_in_context_recall_instance`; the shared differences from MAD are in tasks/mad_base.py.

Keys and values are motifs: runs of 1 to k_motif_size (v_motif_size) distinct tokens, from keys [0, c/2) and values
[c/2, c), c = vocab_size - 1 - noise_vocab_size with multi_query (the pad token is V-1), or vocab_size - 2 without
(pad V-2, copy prefix V-1). Training keys have random sizes; held-out keys always have k_motif_size tokens. A
sequence is key-value pairs (a key keeps the value it first came with), each pair replaced by as many noise tokens
with probability frac_noise, while the sequence is shorter than seq_len - |probe| - (k_motif_size + v_motif_size);
a probe pair is placed at the first pair starting at or after a uniform position in [0, seq_len - 2|probe|) (unless
its key came up by chance before), and repeated at the end. The sequence is left-padded to seq_len + 1 and shifted.
Scored (val/test): the probe's final value, and with multi_query (MAD's benchmark setting) the value tokens of every
pair whose key was shown before (the probe's placed pair itself is never scored, as in MAD). Training targets are
every next token, padding included (`train_all_tokens`, as MAD).

As in MAD, the probe's position can fall after the sequence has ended: then its key appears only at the end and its
value cannot be inferred from the input (about 5% of sequences at length 64, 3% at 128, 0.2% at 1,024, in MAD's
generator as here).
"""

from dataclasses import dataclass

import numpy as np

from tasks.base import Count, NonNegative, OpenFraction
from tasks.mad_base import MADTask, first_occurrence, in_chunks, next_token


@dataclass
class FuzzyRecall(MADTask):
    vocab_size: Count = 16
    seq_len: Count = 128
    k_motif_size: Count = 3
    v_motif_size: Count = 3
    multi_query: bool = True
    noise_vocab_size: NonNegative = 0
    frac_noise: OpenFraction = 0.0
    train_all_tokens: bool = True
    num_train: Count = 12_800
    num_val: Count = 1_280
    num_test: Count = 1_280
    family: str = "fuzzy_recall"
    setting: str = "baseline"

    @property
    def content_vocab(self) -> int:
        return self.vocab_size - self.noise_vocab_size - (1 if self.multi_query else 2)

    @property
    def pad(self) -> int:
        return self.vocab_size - 1 if self.multi_query else self.vocab_size - 2

    def check(self) -> None:
        super().check()
        km, vm, c = self.k_motif_size, self.v_motif_size, self.content_vocab
        if km < 1 or vm < 1:
            raise ValueError(f"k_motif_size={km} and v_motif_size={vm} must be at least 1")
        if c // 2 < km or c - c // 2 < vm:
            raise ValueError(
                f"vocab_size={self.vocab_size} leaves {c // 2} key and {c - c // 2} value tokens; "
                f"motifs of distinct tokens need k_motif_size={km} and v_motif_size={vm}"
            )
        if self.seq_len <= 2 * (km + vm):
            raise ValueError(f"seq_len={self.seq_len} must exceed 2 * (k_motif_size + v_motif_size) = {2 * (km + vm)}")
        if not 0 <= self.frac_noise < 1:
            raise ValueError(f"frac_noise={self.frac_noise} must be in [0, 1)")
        if self.noise_vocab_size < 0 or (self.frac_noise > 0 and self.noise_vocab_size < 1):
            raise ValueError(f"noise_vocab_size={self.noise_vocab_size} must be positive when frac_noise > 0")

    def generate_split(self, name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.make(n, rng, train=name == "train" and self.train_all_tokens)

    def generate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.make(n, rng, train=False)

    def make(self, n: int, rng: np.random.Generator, train: bool) -> tuple[np.ndarray, np.ndarray]:
        per_row = (self.seq_len // 3 + 4) * (self.k_motif_size + self.v_motif_size)
        return in_chunks(lambda m: self._make(m, rng, train), n, max(1, (1 << 21) // per_row))

    def _make(self, n: int, rng: np.random.Generator, train: bool) -> tuple[np.ndarray, np.ndarray]:
        km, vm, L, c = self.k_motif_size, self.v_motif_size, self.seq_len, self.content_vocab
        K = c // 2
        # the probe pair
        probe = {
            "ksz": rng.integers(1, km + 1, size=n) if train else np.full(n, km),
            "vsz": rng.integers(1, vm + 1, size=n),
            "key": distinct_tuples(rng, (n,), 0, K, km),
            "val": distinct_tuples(rng, (n,), K, c, vm),
        }
        probe["at"] = (rng.random(n) * (L - 2 * (probe["ksz"] + probe["vsz"]))).astype(np.int64)
        # pairs average 4 tokens or more: L/3 + 4 of them fill nearly every row; a row that runs out gets the
        # worst case (every pair 2 tokens long) with more draws appended, which leaves the distribution unchanged
        few, most = L // 3 + 4, L // 2 + 2
        slots = self._draw_slots(n, min(few, most), rng, train)
        stream, scored, ran_out = self._build(slots, probe, train)
        if ran_out.any() and few < most:
            extra = self._draw_slots(int(ran_out.sum()), most - few, rng, train)
            slots = {k: np.concatenate([v[ran_out], extra[k]], axis=1) for k, v in slots.items()}
            stream[ran_out], scored[ran_out], _ = self._build(slots, {k: v[ran_out] for k, v in probe.items()}, train)
        return next_token(stream, scored, L, train)

    def _draw_slots(self, n: int, S: int, rng: np.random.Generator, train: bool) -> dict[str, np.ndarray]:
        """Every pair's draws, as MAD's loop draws them: sizes, key motif, a fresh value motif, noise."""
        km, vm, c = self.k_motif_size, self.v_motif_size, self.content_vocab
        K = c // 2
        slots = {
            "ksz": rng.integers(1, km + 1, size=(n, S)) if train else np.full((n, S), km),
            "vsz": rng.integers(1, vm + 1, size=(n, S)),
            "key": distinct_tuples(rng, (n, S), 0, K, km),
            "val": distinct_tuples(rng, (n, S), K, c, vm),
            "noise": np.zeros((n, S), dtype=bool),
        }
        if self.frac_noise > 0:
            slots["noise"] = rng.random((n, S)) < self.frac_noise
            slots["noise_tok"] = rng.integers(c, c + self.noise_vocab_size, size=(n, S, km + vm))
        return slots

    def _build(self, slots: dict, probe: dict, train: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The padded stream (n, L+1), its held-out targets, and which rows ran out of pairs."""
        km, vm, L, c = self.k_motif_size, self.v_motif_size, self.seq_len, self.content_vocab
        K, W = c // 2, km + vm
        n, S = slots["ksz"].shape
        rows, cols = np.arange(n), np.arange(S)
        ksz, key_tok, val_tok, vsz, noise = slots["ksz"], slots["key"], slots["val"], slots["vsz"], slots["noise"]
        kps, vps, probe_key, probe_val = probe["ksz"], probe["vsz"], probe["key"], probe["val"]
        limit = L - (kps + vps) - W  # MAD's loop adds pairs while the sequence is shorter than this
        powers = (K + 1) ** np.arange(km)

        def code(
            tokens: np.ndarray, size: np.ndarray
        ) -> np.ndarray:  # one integer per motif: its tokens in base K+1, so sizes never collide
            return np.where(np.arange(km) < size[..., None], (tokens + 1) * powers, 0).sum(-1)

        probe_code = code(probe_key, kps)

        def layout(ksz: np.ndarray, key_tok: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, ...]:
            kcode = code(key_tok, ksz)
            first = first_occurrence(np.where(noise, -1 - cols, kcode))
            is_probe_key = ~noise & (kcode == probe_code[:, None])
            vlen = np.where(is_probe_key, vps[:, None], np.take_along_axis(vsz, first, axis=1))
            length = np.where(noise, ksz + vsz, ksz + vlen)
            start = np.cumsum(length, axis=1) - length
            return first, is_probe_key, vlen, start

        first, is_probe_key, vlen, start = layout(ksz, key_tok, noise)
        # MAD places the probe at the first pair starting at or after probe_at, unless its key came by chance before
        late = start >= probe["at"][:, None]
        at = np.where(late.any(axis=1), late.argmax(axis=1), S)
        chance = np.where(is_probe_key.any(axis=1), is_probe_key.argmax(axis=1), S)
        placed = (at < S) & (chance >= at)
        placed &= start[rows, np.minimum(at, S - 1)] < limit
        r, slot = rows[placed], at[placed]
        ksz, key_tok, noise = ksz.copy(), key_tok.copy(), noise.copy()
        ksz[r, slot], key_tok[r, slot], noise[r, slot] = kps[placed], probe_key[placed], False
        # the pairs after the probe see it: lay out again (everything up to the probe stays where it was)
        first, is_probe_key, vlen, start = layout(ksz, key_tok, noise)
        included = start < limit[:, None]
        scored = (first < cols) & ~noise & self.multi_query  # the key was shown before (never the placed probe)
        scored[r, slot] = False

        # every pair: key tokens then value tokens (the value the key first came with), or noise
        vtok = np.where(
            is_probe_key[..., None], probe_val[:, None, :], np.take_along_axis(val_tok, first[..., None], axis=1)
        )
        tok = np.concatenate([key_tok, vtok], axis=2)
        tgt = np.concatenate([np.full((n, S, km), -100), np.where(scored[..., None], vtok, -100)], axis=2)
        keep = np.concatenate([np.arange(km) < ksz[..., None], np.arange(vm) < vlen[..., None]], axis=2)
        if self.frac_noise > 0:
            tok = np.where(noise[..., None], slots["noise_tok"], tok)
            tgt = np.where(noise[..., None], -100, tgt)
            keep = np.where(noise[..., None], np.arange(W) < (ksz + vsz)[..., None], keep)
        keep &= included[..., None]

        # the final probe: [copy prefix], key, value; its value is always scored
        prefix = np.full((n, 0 if self.multi_query else 1), self.vocab_size - 1)
        final = np.hstack([prefix, probe_key, probe_val])
        final_tgt = np.hstack([np.full(prefix.shape, -100), np.full((n, km), -100), probe_val])
        final_keep = np.hstack([prefix >= 0, np.arange(km) < kps[:, None], np.arange(vm) < vps[:, None]])

        mask = np.hstack([keep.reshape(n, S * W), final_keep])
        count = mask.sum(axis=1)
        assert (count <= L + 1).all(), "a fuzzy recall sequence overflowed seq_len + 1"
        # left-pad to seq_len + 1: a row's kept tokens, in order, fill its last `count` places
        rr, cc = np.nonzero(mask)
        dest = (L + 1 - count)[rr] + np.arange(len(rr)) - np.repeat(np.cumsum(count) - count, count)
        stream = np.full((n, L + 1), self.pad, dtype=np.int64)
        scored_stream = np.full((n, L + 1), -100, dtype=np.int64)
        stream[rr, dest] = np.hstack([tok.reshape(n, S * W), final])[rr, cc]
        scored_stream[rr, dest] = np.hstack([tgt.reshape(n, S * W), final_tgt])[rr, cc]
        return stream, scored_stream, included[:, -1]


def distinct_tuples(rng: np.random.Generator, shape: tuple, low: int, high: int, k: int) -> np.ndarray:
    """shape + (k,) draws from [low, high), distinct along the last axis, every ordered k-tuple equally likely:
    draw the j-th from the high - low - j values left, then step it past the ones already taken (in sorted order)."""
    out = np.empty((*shape, k), dtype=np.int64)
    for j in range(k):
        r = rng.integers(0, high - low - j, size=shape)
        for taken in np.sort(out[..., :j], axis=-1).transpose(-1, *range(len(shape))):
            r += r >= taken
        out[..., j] = r
    return out + low
