"""Kimi Delta Attention (KDA; Kimi Team 2025, "Kimi Linear: An Expressive, Efficient Attention Architecture"): Gated
DeltaNet with its decay per key channel instead of per head,

    S_t = (I - beta_t k_t k_t^T) Diag(a_t) S_{t-1} + beta_t k_t v_t^T,    o_t = S_t^T q_t / sqrt(d_k),
    log a_t = -exp(A_log) * softplus(x_t W_f1 W_f2 + dt_bias)  (one per key channel),
    beta_t = sigmoid(x_t W_b)  (x2 with `allow_neg_eigval`: eigenvalues of I - beta k k^T in [-1, 1]).

The layer follows flash-linear-attention's `fla/layers/kda.py` (KimiDeltaAttention) with its defaults: q, k, v
through causal depthwise convolutions (size 4, no bias) and SiLU, q and k L2-normalised per head in the kernel
(x / sqrt(sum x^2 + 1e-6)), the decay's input from a low-rank projection (rank = value head dim, no biases), A_log =
log U(1, 16) per head and dt_bias per key channel with softplus(dt_bias) log-uniform in [1e-3, 0.1] (both without
weight decay), the output gate rmsnorm(o) * sigmoid(x W_g1 W_g2 + b_g) per head (low rank = value head dim, bias on
the second factor), then W_o; Linear and short-convolution weights N(0, 0.02), biases zero, as fla's KDA model
initialises them (`fla_init_`). The decays and beta are computed in float32 whatever the autocast.
Not carried over: fla's grouped value heads (num_v_heads > num_heads) and its `lower_bound`/`safe_gate` variant of
the gate (lower_bound * sigmoid(.), a kernel speed option off by default). Trained in the chunked WY/UT form shared
with DeltaNet (`models/mixers/delta_net.py`, the decay per key channel); `recurrent` runs it token by token. No
Triton path: fla's `chunk_kda` is not wired in (it could not be checked without a GPU).
"""

from collections.abc import Callable, Iterable
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.init import fla_init_
from models.mixers.base import Mixer
from models.mixers.delta_net import (
    check_dims,
    chunked_delta_rule,
    inverse_softplus_dt,
    l2_normalise,
    qkv_heads,
    qkv_projections,
    recurrent_delta_rule,
    short_convs,
    value_head_dim,
)
from models.mixers.linear_attention import full_precision


class KimiDeltaAttention(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 4,
        expand_k: Annotated[float, Gt(0)] = 1.0,
        expand_v: Annotated[float, Gt(0)] = 1.0,
        use_short_conv: bool = True,
        conv_size: Annotated[int, Ge(1)] = 4,
        allow_neg_eigval: bool = False,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
        chunk_size: Annotated[int, Ge(1)] = 8,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        key_dim, _ = check_dims(d_model, n_heads, expand_k, None)
        self.n_heads, self.chunk_size = n_heads, chunk_size
        self.dk = key_dim // n_heads
        self.dv = value_head_dim(self.dk, expand_v)
        value_dim = n_heads * self.dv
        self.beta_scale = 2.0 if allow_neg_eigval else 1.0
        self.q_proj, self.k_proj, self.v_proj = qkv_projections(d_model, key_dim, value_dim)
        self.convs = short_convs((key_dim, key_dim, value_dim), conv_size, use_short_conv)
        self.f_proj = nn.Sequential(nn.Linear(d_model, self.dv, bias=False), nn.Linear(self.dv, key_dim, bias=False))
        self.b_proj = nn.Linear(d_model, n_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(1, 16).log())
        self.dt_bias = nn.Parameter(inverse_softplus_dt(key_dim))
        self.g_proj = nn.Sequential(nn.Linear(d_model, self.dv, bias=False), nn.Linear(self.dv, value_dim, bias=True))
        self.o_norm = nn.RMSNorm(self.dv, eps=norm_eps)
        self.o_proj = nn.Linear(value_dim, d_model, bias=False)
        fla_init_(self)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return (self.A_log, self.dt_bias)  # fla's _no_weight_decay flags

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x, lambda *args, **kw: chunked_delta_rule(*args, **kw, chunk_size=self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time (the RNN view)."""
        return self._mix(x, recurrent_delta_rule)

    def transition_range(self) -> tuple[float, float]:
        """The range of the eigenvalues of I - beta k k^T (the decays a_t <= 1 multiply them)."""
        return 1.0 - self.beta_scale, 1.0

    def _mix(self, x: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        b, t, _ = x.shape
        heads = lambda z, dh: full_precision(z.view(b, t, self.n_heads, dh).transpose(1, 2))
        q, k, v = qkv_heads(self, x)
        q, k = l2_normalise(q) * self.dk**-0.5, l2_normalise(k)
        log_decay = kda_log_decay(heads(self.f_proj(x), self.dk), self.A_log, self.dt_bias)  # (b, h, t, dk)
        beta, v, read_key = self._write(x, k, v)
        with torch.autocast(x.device.type, enabled=False):
            o = scan(q, k, v, beta, log_decay, read_key=read_key)
        gate = torch.sigmoid(full_precision(self.g_proj(x))).view(b, t, self.n_heads, self.dv)
        o = self.o_norm(o.transpose(1, 2)) * gate
        return self.o_proj(o.reshape(b, t, -1).to(x.dtype))

    def _write(self, x: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(beta, the values written, the read key) of the delta rule: KDA's scalar rate per head, v and k."""
        beta = self.beta_scale * torch.sigmoid(full_precision(self.b_proj(x))).transpose(1, 2)  # (b, h, t)
        return beta, v, None

    def flops_per_token(self, seq_len: int) -> int:
        # The chunked delta rule with a decay per key channel, per head and token, forward (C = min(chunk, T)): the
        # decayed pairs p.k and q.k, C dk each times 4 (difference, exp, product, sum) 8 C dk; the triangular
        # solve with dv + dk right-hand sides C (dk + dv); the intra-chunk product with u 2 C dv; reading the state
        # for u and o and writing it 6 dk dv; x3 for forward + backward.
        c, dk, dv = min(self.chunk_size, seq_len), self.dk, self.dv
        return 3 * self.n_heads * (c * (9 * dk + 3 * dv) + 6 * dk * dv)


def kda_log_decay(f: Tensor, A_log: Tensor, dt_bias: Tensor) -> Tensor:
    """log a_t = -exp(A_log_h) * softplus(f + dt_bias) <= 0 per key channel, in float32 at least (fla's
    naive_kda_gate).
    f: (batch, heads, seq, dk); A_log: (heads,); dt_bias: (heads * dk,)."""
    h, dk = f.shape[1], f.shape[-1]
    f = full_precision(f) + full_precision(dt_bias).view(h, 1, dk)
    return -full_precision(A_log).exp().view(h, 1, 1) * F.softplus(f)
