"""Causal softmax attention (Vaswani et al. 2017) with grouped KV heads (Ainslie et al. 2023, GQA).

n_kv_heads = n_heads is multi-head attention, 1 < n_kv_heads < n_heads is GQA, n_kv_heads = 1 is MQA
(Shazeer 2019). qk_norm=true RMS-normalises each head's queries and keys before the dot product (Dehghani et al.
2023, with RMSNorm as in OLMo 2). Positions: rope rotates q and k; ALiBi adds its bias to the scores. With no bias,
F.scaled_dot_product_attention runs with is_causal=True and no mask, so CUDA takes the flash kernel. With ALiBi,
`kernel=auto` uses FlexAttention on CUDA (a score modification, compiled: models/mixers/_flex.py) and SDPA with an
explicit bias mask elsewhere; `kernel=sdpa` or `kernel=flex` forces one. `dropout` drops attention probabilities in
training (Zoology's MHA: 0.1); FlexAttention has no dropout, so training with dropout runs on SDPA.
"""

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Lt
from torch import Tensor, nn

from models.init import normal_init_
from models.mixers import _flex
from models.mixers.base import Mixer

Kernel = Literal["auto", "sdpa", "flex"]


class Attention(Mixer):
    """Weights: GPT-2's N(0, 0.02), biases zero (nanoGPT `_init_weights`)."""

    accepts_position = True

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 1,
        n_kv_heads: Annotated[int, Ge(1)] | None = None,
        bias: bool = False,
        qk_norm: bool = False,
        kernel: Kernel = "auto",
        dropout: Annotated[float, Ge(0), Lt(1)] = 0.0,
        position: nn.Module | None = None,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        self.dropout = dropout
        self.kernel = kernel
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if d_model % n_heads:
            raise ValueError(f"mixer.n_heads={n_heads} must divide d_model={d_model}")
        if n_heads % n_kv_heads:
            raise ValueError(f"mixer.n_kv_heads={n_kv_heads} must divide mixer.n_heads={n_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.score_bias = position if hasattr(position, "bias") else None  # ALiBi-like: added to the scores
        self.rotation = None if position is None or self.score_bias is not None else position  # rope: on q, k
        if self.rotation is not None and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head dim, got d_model/n_heads={self.head_dim}")
        self.qkv = nn.Linear(d_model, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else None
        normal_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        y = self.attend(*self.project(x))
        return self.out(y.transpose(1, 2).reshape(b, t, -1))

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (batch, seq, d_model) -> q (batch, n_heads, seq, head_dim), k and v (batch, n_kv_heads, seq, head_dim),
        normalised and rotated when asked."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim, self.n_kv_heads * self.head_dim], -1
        )
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotation is not None:
            q, k = self.rotation(q, k)
        return q, k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Causal softmax attention over the whole prefix: (batch, heads, seq, head_dim) -> same shape as q."""
        gqa = self.n_kv_heads != self.n_heads
        if self.score_bias is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa, dropout_p=self.dropout_p)
        if self.flex(q):
            return _flex.attend(q, k, v, slopes=self.score_bias.slopes(self.n_heads, q.device))
        pos = torch.arange(q.shape[-2], device=q.device)
        scores_bias = self.score_bias.bias(self.n_heads, pos[:, None], pos[None, :])  # (heads, seq, seq)
        mask = scores_bias.masked_fill(pos[None, :] > pos[:, None], float("-inf")).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa, dropout_p=self.dropout_p)

    @property
    def dropout_p(self) -> float:
        """The attention dropout in effect: `dropout` in training, 0 in evaluation."""
        return self.dropout if self.training else 0.0

    def flex(self, q: Tensor) -> bool:
        """FlexAttention for a masked or biased pattern: always with kernel=flex, on CUDA with kernel=auto."""
        return self.dropout_p == 0 and self.masked_kernel(q.device.type) == "flex"

    def masked_kernel(self, device_type: str) -> str:
        usable = self.score_bias is None or hasattr(self.score_bias, "slopes")
        asked = self.kernel == "flex" or (self.kernel == "auto" and device_type == "cuda")
        return "flex" if usable and asked else "sdpa"

    def kernel_for(self, device_type: str, bf16: bool) -> str:
        # plain causal attention is always SDPA (is_causal: the flash kernel on CUDA); a bias (ALiBi) may be flex
        return "sdpa" if self.score_bias is None else self.masked_kernel(device_type)

    def flops_per_token(self, seq_len: int) -> int:
        # PaLM (Chowdhery et al. 2022, App. B): 12 * H * Q * T per layer for QK^T and AV, forward + backward.
        return 12 * self.n_heads * self.head_dim * seq_len
