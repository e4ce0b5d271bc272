"""Multi-scale retention (Sun et al. 2023, RetNet): per head h, S_t = gamma_h S_{t-1} + k_t v_t^T, y_t = q_t S_t,
with fixed decays gamma_h = 1 - 2^(-5-h), rotary q and k (the paper's e^{i n theta}), a group norm per head and a
swish output gate: out = W_o (swish(x W_g) * GroupNorm(y)). Trained in the chunk-wise form. The value dim is d_model
(the paper doubles it), and the paper's extra scale normalisations are left out: the group norm undoes them."""

import math
from collections.abc import Callable
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor, nn

from models.init import normal_init_
from models.mixers.base import Mixer
from models.mixers.linear_attention import (
    ChunkSize,
    chunked_linear_attention,
    full_precision,
    recurrent_linear_attention,
)
from models.positions import RotaryPosition


class Retention(Mixer):
    """Weights: N(0, 0.02), biases zero, as flash-linear-attention's RetNet model initialises its layers
    (fla/models/retnet/modeling_retnet.py `_init_weights`, initializer_range 0.02)."""

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 4,
        chunk_size: ChunkSize = 64,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        if d_model % n_heads:
            raise ValueError(f"mixer.n_heads={n_heads} must divide d_model={d_model}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        if self.head_dim % 2:
            raise ValueError(f"retention rotates q and k: d_model/n_heads={self.head_dim} must be even")
        self.chunk_size = chunk_size
        self.qkvg = nn.Linear(d_model, 4 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.rotary = RotaryPosition(d_model, max_seq_len=max_seq_len)
        self.group_norm = nn.GroupNorm(n_heads, d_model)
        gamma = 1 - 2.0 ** (-5.0 - torch.arange(n_heads, dtype=torch.float64))
        self.register_buffer("log_gamma", gamma.log().float().view(1, n_heads, 1, 1), persistent=False)
        normal_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x, lambda q, k, v, g: chunked_linear_attention(q, k, v, g, chunk_size=self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time (RetNet's recurrent form)."""
        return self._mix(x, recurrent_linear_attention)

    def _mix(self, x: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        b, t, d = x.shape
        q, k, v, g = self.qkvg(x).chunk(4, dim=-1)
        q, k, v = (full_precision(z.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)) for z in (q, k, v))
        q, k = self.rotary(q, k / math.sqrt(self.head_dim))
        log_decay = self.log_gamma.to(q.dtype).expand(1, self.n_heads, t, 1)
        with torch.autocast(x.device.type, enabled=False):
            y = scan(q, k, v, log_decay)
        y = self.group_norm(y.transpose(1, 2).reshape(b * t, d)).view(b, t, d)
        return self.out(F.silu(g) * y.to(g.dtype))

    def flops_per_token(self, seq_len: int) -> int:
        # Chunked form per head, forward: intra-chunk scores, their decay and product with v, 2CD + C + 2CD, plus
        # reading and updating the D x D state, 4D^2 (D = head_dim, C = min(chunk, T)); x3 for forward + backward.
        c, d = min(self.chunk_size, seq_len), self.head_dim
        return 3 * self.n_heads * (4 * c * d + c + 4 * d * d)
