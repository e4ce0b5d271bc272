"""Causal sliding-window attention (Beltagy et al. 2020, Longformer; Child et al. 2019's local attention): query i
sees keys i - window + 1 .. i.

The sequence is cut into blocks of `window` queries; each block attends to itself and the block before it, so the
cost is O(seq * window) instead of O(seq^2). On CUDA (`kernel=auto`) FlexAttention runs the window as a block-sparse
mask instead (models/mixers/_flex.py). Everything else (heads, GQA, QK-norm, rope, ALiBi) is `Attention`'s.
"""

from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Lt
from torch import Tensor, nn

from models.mixers import _flex
from models.mixers.attention import Attention, Kernel


class SlidingWindowAttention(Attention):
    """Weights: `Attention`'s (GPT-2's N(0, 0.02))."""

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        window: Annotated[int, Ge(1)] = 32,
        n_heads: Annotated[int, Ge(1)] = 1,
        n_kv_heads: Annotated[int, Ge(1)] | None = None,
        bias: bool = False,
        qk_norm: bool = False,
        kernel: Kernel = "auto",
        dropout: Annotated[float, Ge(0), Lt(1)] = 0.0,
        position: nn.Module | None = None,
    ):
        super().__init__(
            d_model,
            max_seq_len=max_seq_len,
            layer_idx=layer_idx,
            n_heads=n_heads,
            dropout=dropout,
            n_kv_heads=n_kv_heads,
            bias=bias,
            qk_norm=qk_norm,
            kernel=kernel,
            position=position,
        )
        self.window = window

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, h, t, d = q.shape
        w = self.window
        if t <= w:  # the window covers the whole prefix: plain causal attention
            return super().attend(q, k, v)
        if self.flex(q):
            slopes = None if self.score_bias is None else self.score_bias.slopes(h, q.device)
            return _flex.attend(q, k, v, window=w, slopes=slopes)
        n = -(-t // w)  # blocks of w queries; pad the end (padding is future, so no real query sees it)
        pad = lambda z: F.pad(z, (0, 0, 0, n * w - t))
        qb = pad(q).view(b, h, n, w, d).transpose(1, 2)  # (b, n, h, w, d)
        kb, vb = (_with_previous_block(pad(z).view(b, z.shape[1], n, w, d).transpose(1, 2)) for z in (k, v))
        # query a of block c sits at c*w + a; key j of its 2w keys at (c-1)*w + j: distance w + a - j.
        a = torch.arange(w, device=q.device)[:, None]
        j = torch.arange(2 * w, device=q.device)[None, :]
        distance = w + a - j
        first_block = torch.arange(n, device=q.device)[:, None, None] == 0
        visible = (distance >= 0) & (distance < w) & ~(first_block & (j < w))  # (n, w, 2w); block -1 is padding
        visible = visible[:, None]  # (n, 1, w, 2w), broadcast over batch and heads
        if self.score_bias is None:
            mask = visible
        else:
            bias = self.score_bias.bias(h, w + a, j)  # (h, w, 2w): depends only on the distance
            mask = bias.masked_fill(~visible, float("-inf")).to(q.dtype)
        y = F.scaled_dot_product_attention(
            qb, kb, vb, attn_mask=mask, enable_gqa=self.n_kv_heads != h, dropout_p=self.dropout_p
        )
        return y.transpose(1, 2).reshape(b, h, n * w, d)[:, :, :t]

    def kernel_for(self, device_type: str, bf16: bool) -> str:
        return self.masked_kernel(device_type)

    def flops_per_token(self, seq_len: int) -> int:
        # PaLM's 12 * H * Q * T with T replaced by the keys a query sees: min(window, seq_len).
        return 12 * self.n_heads * self.head_dim * min(self.window, seq_len)


def _with_previous_block(z: Tensor) -> Tensor:
    """(b, n, h, w, d) -> (b, n, h, 2w, d): each block's keys preceded by the previous block's (zeros for block 0)."""
    previous = F.pad(z, (0, 0, 0, 0, 0, 0, 1, 0))[:, :-1]
    return torch.cat([previous, z], dim=-2)
