"""Differential attention (Ye et al. 2025, "Differential Transformer"): each head is the difference of two softmax
attention maps, which cancels the attention both give to irrelevant context,

    [q1; q2] = x W_q,  [k1; k2] = x W_k,  v = x W_v   (each half of head width d = d_model / n_heads / 2)
    A_i = softmax(q_i k_i^T / sqrt(d) + causal mask),   lambda = exp(l_q1 . l_k1) - exp(l_q2 . l_k2) + lambda_init
    head = (1 - lambda_init) rmsnorm((A_1 - lambda A_2) v),   lambda_init = 0.8 - 0.6 exp(-0.3 layer_idx)

following microsoft/unilm `Diff-Transformer/multihead_diffattn.py` (MultiheadDiffAttn: projections without bias, v
of width 2d per head, the four lambda vectors ~ N(0, 0.1), a per-head RMSNorm of width 2d with eps 1e-5 and a weight,
n_kv_heads for GQA with its head order: query sub-heads 2h and 2h+1 read key sub-heads (2h) // r and (2h+1) // r,
r = n_heads / n_kv_heads). n_heads is the number of differential heads, half a baseline Transformer's, as theirs.
Positions: rope from the backbone rotates q and k (archbench's half-split layout; theirs interleaved: the same map up
to a fixed permutation of the projections' rows).
"""

import math
from typing import Annotated

import torch
from annotated_types import Ge
from torch import Tensor, nn

from models.mixers.base import Mixer


class DiffAttention(Mixer):
    accepts_position = True

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 1,
        n_kv_heads: Annotated[int, Ge(1)] | None = None,
        position: nn.Module | None = None,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if d_model % (2 * n_heads):
            raise ValueError(f"mixer.n_heads={n_heads} must divide d_model / 2 = {d_model / 2} (two maps per head)")
        if n_heads % n_kv_heads:
            raise ValueError(f"mixer.n_kv_heads={n_kv_heads} must divide mixer.n_heads={n_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads // 2
        self.rotation = position if position is not None and not hasattr(position, "bias") else None
        if position is not None and self.rotation is None:
            raise ValueError(f"mixer: differential attention takes rotary positions, not {type(position).__name__}")
        rep = n_heads // n_kv_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model // rep, bias=False)
        self.v_proj = nn.Linear(d_model, d_model // rep, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * layer_idx)
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            setattr(self, name, nn.Parameter(torch.randn(self.head_dim) * 0.1))
        self.subln_weight = nn.Parameter(torch.ones(2 * self.head_dim))

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        h, hk, d = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).view(b, t, 2 * h, d).transpose(1, 2)  # sub-heads 2i, 2i+1: the two maps of head i
        k = self.k_proj(x).view(b, t, 2 * hk, d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, hk, 2 * d).transpose(1, 2)
        if self.rotation is not None:
            q, k = self.rotation(q, k)
        k, v = k.repeat_interleave(h // hk, dim=1), v.repeat_interleave(h // hk, dim=1)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        scores = (q * d**-0.5) @ k.transpose(-1, -2)
        maps = scores.float().masked_fill(~causal, float("-inf")).softmax(-1).view(b, h, 2, t, t)
        lam = (self.lambda_q1 * self.lambda_k1).sum().float().exp() - (
            self.lambda_q2 * self.lambda_k2
        ).sum().float().exp()
        y = (maps[:, :, 0] - (lam + self.lambda_init) * maps[:, :, 1]).to(v.dtype) @ v  # (b, h, t, 2d)
        y = y.float()
        y = y * torch.rsqrt(y.square().mean(-1, keepdim=True) + 1e-5) * self.subln_weight.float()
        y = (y * (1 - self.lambda_init)).to(x.dtype)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, -1))

    def flops_per_token(self, seq_len: int) -> int:
        # Two maps per head of width d (QK^T: 2 * 2d T) and one product with v of width 2d (2 * 2d T), forward; x3.
        return 3 * self.n_heads * (4 * self.head_dim * seq_len + 4 * self.head_dim * seq_len)
