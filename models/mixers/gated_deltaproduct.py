"""Gated DeltaProduct (Siems et al. 2025, "DeltaProduct: Improving State-Tracking in Linear RNNs via Householder
Products"): n delta-rule steps per token, so that the state transition is a product of n generalised Householder
matrices (times Gated DeltaNet's scalar decay a_t per head),

    S_t = a_t prod_{j=1..n} (I - beta_tj k_tj k_tj^T) S_{t-1} + (the n writes beta_tj k_tj v_tj^T),
    o_t = S_t^T q_t / sqrt(d_k),   log a_t = -exp(A_log) softplus(x_t W_a + dt_bias),   beta_tj = sigmoid(.)
    (x2 with `allow_neg_eigval`: each factor's eigenvalues in [-1, 1], on by default as in the paper and fla).

With n = 1 it is Gated DeltaNet. The layer follows flash-linear-attention's `fla/layers/gated_deltaproduct.py` (the
authors' code, automl/DeltaProduct, is a fork of it) with its defaults: q, k, v projections (k, v and beta n times
wider, token-major: the projection's channels are (step, head, dim)), causal depthwise convolutions (size 4, no
bias) and SiLU, q and k L2-normalised per head, Mamba-2's decay (A = U(0, 16), dt_bias; no weight decay), the output
gate rmsnorm(o) * swish(x W_g) per head, then W_o. Computed as fla's reference does (chunk_ref.py and naive.py):
the gated delta rule on the sequence of n T steps, where step j of token t reads key k_tj, value v_tj, rate
beta_tj, the decay only at j = 1 and the query only at j = n, so it reuses the chunked WY/UT form of
`models/mixers/delta_net.py` (its chunks count steps, not tokens). Initialised as fla's models do (`fla_init_`:
N(0, 0.02) on every Linear and short-convolution weight; the layer's own xavier `_initialize_weights` is never
called by fla). Not carried over: grouped value heads; fla's Triton kernel (not wired in: no GPU to check it).
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
    delta_rule_flops,
    inverse_softplus_dt,
    l2_normalise,
    output_layers,
    output_norm,
    recurrent_delta_rule,
    short_convs,
    value_head_dim,
)
from models.mixers.gated_deltanet import gdn_log_decay
from models.mixers.linear_attention import full_precision


class GatedDeltaProduct(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 4,
        expand_k: Annotated[float, Gt(0)] = 0.75,
        expand_v: Annotated[float, Gt(0)] = 2.0,
        num_householder: Annotated[int, Ge(1)] = 2,
        use_forget_gate: bool = True,
        use_gate: bool = True,
        use_short_conv: bool = True,
        conv_size: Annotated[int, Ge(1)] = 4,
        allow_neg_eigval: bool = True,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
        chunk_size: Annotated[int, Ge(1)] = 64,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        key_dim, _ = check_dims(d_model, n_heads, expand_k, None)
        self.dk = key_dim // n_heads
        self.dv = value_head_dim(self.dk, expand_v)
        value_dim, n = n_heads * self.dv, num_householder
        self.n_heads, self.n_steps, self.chunk_size = n_heads, n, chunk_size
        self.beta_scale = 2.0 if allow_neg_eigval else 1.0
        self.q_proj = nn.Linear(d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, key_dim * n, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim * n, bias=False)
        self.b_proj = nn.Linear(d_model, n_heads * n, bias=False)
        self.a_proj = self.A_log = self.dt_bias = None
        if use_forget_gate:
            self.a_proj = nn.Linear(d_model, n_heads, bias=False)
            self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(0, 16).log())
            self.dt_bias = nn.Parameter(inverse_softplus_dt(n_heads))
        self.convs = short_convs((key_dim, key_dim * n, value_dim * n), conv_size, use_short_conv)
        self.g_proj, self.o_norm, self.o_proj = output_layers(d_model, value_dim, self.dv, use_gate, norm_eps)
        fla_init_(self)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return () if self.A_log is None else (self.A_log, self.dt_bias)  # fla's _no_weight_decay flags

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x, lambda *args: chunked_delta_rule(*args, chunk_size=self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one step at a time (the RNN view, n steps per token)."""
        return self._mix(x, recurrent_delta_rule)

    def transition_range(self) -> tuple[float, float]:
        """The range of the eigenvalues of each Householder factor I - beta k k^T (a_t <= 1 multiplies them)."""
        return 1.0 - self.beta_scale, 1.0

    def _mix(self, x: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        b, t, _ = x.shape
        n, h = self.n_steps, self.n_heads
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.convs is not None:
            q, k, v = (conv(z) for conv, z in zip(self.convs, (q, k, v), strict=True))
        # (b, t, n * h * d) -> (b, h, t * n, d): step j of token t at position t * n + j, as fla's '(t n)'
        steps = lambda z, d: full_precision(z.reshape(b, t * n, h, d).transpose(1, 2))
        q = full_precision(F.silu(q).reshape(b, t, h, self.dk).transpose(1, 2))
        q = l2_normalise(q) * self.dk**-0.5
        q = F.pad(q[:, :, :, None], (0, 0, n - 1, 0)).flatten(2, 3)  # the query reads after the last step only
        k, v = l2_normalise(steps(F.silu(k), self.dk)), steps(F.silu(v), self.dv)
        beta = self.beta_scale * torch.sigmoid(full_precision(self.b_proj(x))).view(b, t * n, h).transpose(1, 2)
        log_decay = None
        if self.A_log is not None:  # the decay acts once per token, at its first step
            g = gdn_log_decay(full_precision(self.a_proj(x)), self.A_log, self.dt_bias).transpose(1, 2)
            log_decay = F.pad(g[..., None], (0, n - 1)).flatten(2, 3)
        with torch.autocast(x.device.type, enabled=False):
            o = scan(q, k, v, beta, log_decay)
        o = o.unflatten(2, (t, n))[:, :, :, -1]  # (b, h, t, dv): the output after each token's last step
        return self.o_proj(output_norm(self, o, x).to(x.dtype))

    def flops_per_token(self, seq_len: int) -> int:
        # the scan's on n steps per token: n * delta_rule_flops, delta_rule_flops = 3 H (C (5 dk + 3 dv) + 6 dk dv)
        # with C = min(chunk, n T); the decays add O(C) per head, left out
        c = min(self.chunk_size, self.n_steps * seq_len)
        return self.n_steps * delta_rule_flops(self.n_heads, self.dk, self.dv, c)
