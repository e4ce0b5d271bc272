"""Comba (Hu et al. 2025, "Comba: Improving Bilinear RNNs with Closed-loop Control"): a delta rule whose transition is
a scalar plus a low-rank term, with the read key p apart from the write key k and an output correction,

    S_t = (a_t I - beta_t k_t p_t^T) S_{t-1} + beta_t k_t v_t^T,    o_t = S_t^T q_t / sqrt(d_k),
    i.e. u_t = beta_t (v_t - p_t^T S_{t-1}), S_t = a_t S_{t-1} + k_t u_t^T (the state is read before it decays),
    p_t = k_t sigmoid(d_h) (inner decay), q_t <- q_t - D_h p_t (output correction), q, k, p L2-normalised,
    log a_t = -exp(A_log) softplus(x_t W_a + dt_bias),   beta_t = sigmoid(x_t W_b).

The layer follows flash-linear-attention's `fla/layers/comba.py` with its defaults: q, k, v through causal
depthwise convolutions (size 4, no bias) and SiLU, p and the correction of q computed before the kernel's L2 norm
(so a positive per-head factor on p only matters through q), d = 1 and D = correction_factor (1) per head, Mamba-2's
decay (A = U(0, 16), dt_bias), A_log, dt_bias and D without weight decay, the output gate rmsnorm(o) * sigmoid(x W_g)
per head, then W_o; Linear and short-convolution weights N(0, 0.02), biases zero, as fla's Comba model initialises
them (`fla_init_`). The recurrence is that of fla's Triton kernels (chunk_comba, fused_recurrent_comba: read, then
decay) and of its `naive_chunk_comba`; fla's `naive_recurrent_comba` decays before the read, which the kernels do not
(measured 0.07 apart on unit-size outputs). Trained in the chunked WY/UT form shared with DeltaNet
(`models/mixers/delta_net.py`, with the read key and the undecayed read); `recurrent` runs it token by token. Not
carried over: grouped value heads; fla's Triton kernel (not wired in: it could not be checked without a GPU).
"""

from collections.abc import Callable, Iterable
from typing import Annotated

import torch
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.init import fla_init_
from models.mixers.base import Mixer
from models.mixers.delta_net import (
    check_dims,
    chunked_delta_rule,
    delta_rule_flops,
    inverse_softplus_dt,
    l2_normalise,
    output_layers,
    qkv_heads,
    qkv_projections,
    recurrent_delta_rule,
    short_convs,
    value_head_dim,
)
from models.mixers.gated_deltanet import gdn_log_decay
from models.mixers.linear_attention import full_precision


class Comba(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 4,
        expand_k: Annotated[float, Gt(0)] = 0.75,
        expand_v: Annotated[float, Gt(0)] = 2.0,
        use_gate: bool = True,
        use_output_correction: bool = True,
        use_inner_decay: bool = True,
        correction_factor: float = 1.0,
        use_short_conv: bool = True,
        conv_size: Annotated[int, Ge(1)] = 4,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
        chunk_size: Annotated[int, Ge(1)] = 64,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        key_dim, _ = check_dims(d_model, n_heads, expand_k, None)
        self.dk = key_dim // n_heads
        self.dv = value_head_dim(self.dk, expand_v)
        value_dim = n_heads * self.dv
        self.n_heads, self.chunk_size = n_heads, chunk_size
        self.q_proj, self.k_proj, self.v_proj = qkv_projections(d_model, key_dim, value_dim)
        self.a_proj = nn.Linear(d_model, n_heads, bias=False)
        self.b_proj = nn.Linear(d_model, n_heads, bias=False)
        self.decay = nn.Parameter(torch.ones(n_heads)) if use_inner_decay else None
        self.D = nn.Parameter(torch.full((n_heads,), float(correction_factor))) if use_output_correction else None
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(0, 16).log())
        self.dt_bias = nn.Parameter(inverse_softplus_dt(n_heads))
        self.convs = short_convs((key_dim, key_dim, value_dim), conv_size, use_short_conv)
        self.g_proj, self.o_norm, self.o_proj = output_layers(d_model, value_dim, self.dv, use_gate, norm_eps)
        fla_init_(self)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return [p for p in (self.A_log, self.dt_bias, self.D) if p is not None]  # fla's _no_weight_decay flags

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x, lambda *args, **kw: chunked_delta_rule(*args, **kw, chunk_size=self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time (the RNN view)."""
        return self._mix(x, recurrent_delta_rule)

    def _mix(self, x: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        b, t, _ = x.shape
        q, k, v = qkv_heads(self, x)
        p = k if self.decay is None else k * torch.sigmoid(self.decay)[:, None, None]
        if self.D is not None:
            q = q - self.D[:, None, None] * p
        q, k, p = l2_normalise(q) * self.dk**-0.5, l2_normalise(k), l2_normalise(p)
        beta = torch.sigmoid(full_precision(self.b_proj(x))).transpose(1, 2)  # (b, h, t)
        log_decay = gdn_log_decay(full_precision(self.a_proj(x)), self.A_log, self.dt_bias).transpose(1, 2)
        with torch.autocast(x.device.type, enabled=False):
            o = scan(q, k, v, beta, log_decay, read_key=p, read_decayed=False)
        o = self.o_norm(o.transpose(1, 2))  # (b, t, h, dv)
        if self.g_proj is not None:
            o = o * torch.sigmoid(full_precision(self.g_proj(x))).view(b, t, self.n_heads, self.dv)
        return self.o_proj(o.reshape(b, t, -1).to(x.dtype))

    def flops_per_token(self, seq_len: int) -> int:
        # the delta rule's chunked form (p.k in place of k.k, the same cost): delta_rule_flops = 3 H (C (5 dk + 3 dv)
        # + 6 dk dv), C = min(chunk, T); the decays add O(C) per head, left out
        return delta_rule_flops(self.n_heads, self.dk, self.dv, min(self.chunk_size, seq_len))
