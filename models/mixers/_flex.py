"""FlexAttention (PyTorch's torch.nn.attention.flex_attention) for the attention patterns the flash kernel cannot
take as they are: a sliding window, as a block-sparse mask (blocks beyond the window are skipped, not masked), and
ALiBi, as a score modification (no (heads, seq, seq) bias tensor in memory). On CUDA it runs compiled into a fused
kernel; elsewhere eagerly (it materialises the scores: a reference for tests, not a fast path).
"""

import functools
import warnings

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention


@functools.cache
def _compiled():
    return torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=64)
def block_mask(seq_len: int, window: int | None, device: str) -> BlockMask:
    """Causal (query i sees keys j <= i), and within `window` keys (i - j < window) when one is given."""

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        causal = q_idx >= kv_idx
        return causal if window is None else causal & (q_idx - kv_idx < window)

    return create_block_mask(mask_mod, None, None, seq_len, seq_len, device=device)


def attend(q: Tensor, k: Tensor, v: Tensor, *, window: int | None = None, slopes: Tensor | None = None) -> Tensor:
    """Causal attention, (batch, heads, seq, head_dim) -> same shape as q; k and v may have fewer heads (GQA).
    `window`: each query sees its last `window` keys (itself included). `slopes` (heads,): ALiBi, score of query i on
    key j minus slopes[h] * (i - j)."""
    score_mod = None
    if slopes is not None:

        def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return score - slopes[h] * (q_idx - kv_idx)

    mask = block_mask(q.shape[-2], window, str(q.device))
    if q.is_cuda:
        return _compiled()(q, k, v, score_mod=score_mod, block_mask=mask, enable_gqa=k.shape[1] != q.shape[1])
    with warnings.catch_warnings():  # "called without torch.compile()": eager is the intent off CUDA
        warnings.simplefilter("ignore", UserWarning)
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=mask, enable_gqa=k.shape[1] != q.shape[1])
