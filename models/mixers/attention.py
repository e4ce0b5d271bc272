"""Causal softmax attention (Vaswani et al. 2017) with grouped KV heads (Ainslie et al. 2023, GQA).

n_kv_heads = n_heads is multi-head attention, 1 < n_kv_heads < n_heads is GQA, n_kv_heads = 1 is MQA
(Shazeer 2019). Runs on F.scaled_dot_product_attention with is_causal=True, so CUDA takes the flash kernel.
"""

import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    accepts_position = True

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: int = 4,
        n_kv_heads: int | None = None,
        bias: bool = False,
        position: nn.Module | None = None,
    ):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_heads < 1 or d_model % n_heads:
            raise ValueError(f"mixer.n_heads={n_heads} must divide d_model={d_model}")
        if n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(f"mixer.n_kv_heads={n_kv_heads} must divide mixer.n_heads={n_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        if position is not None and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head dim, got d_model/n_heads={self.head_dim}")
        self.qkv = nn.Linear(d_model, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.position = position

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim, self.n_kv_heads * self.head_dim], -1
        )
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.position is not None:
            q, k = self.position(q, k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv_heads != self.n_heads)
        return self.out(y.transpose(1, 2).reshape(b, t, -1))

    def flops_per_token(self, seq_len: int) -> int:
        # PaLM (Chowdhery et al. 2022, App. B): 12 * H * Q * T per layer for QK^T and AV, forward + backward.
        return 12 * self.n_heads * self.head_dim * seq_len
