"""Gated DeltaNet (Yang et al. 2025, "Gated Delta Networks: Improving Mamba2 with Delta Rule"), the linear layer of
Qwen3-Next: the delta rule with a data-dependent scalar decay a_t per head (Mamba-2's gate),

    S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,    o_t = S_t^T q_t / sqrt(d_k),
    log a_t = -exp(A_log) * softplus(x_t W_a + dt_bias),   beta_t = sigmoid(x_t W_b)  (x2 with `allow_neg_eigval`).

The layer follows flash-linear-attention's `fla/layers/gated_deltanet.py` with its defaults: q, k, v through causal
depthwise convolutions (size 4, no bias) and SiLU, q and k L2-normalised per head, A = U(0, 16) and dt = softplus(
dt_bias) log-uniform in [1e-3, 0.1] at init (A_log and dt_bias take no weight decay), the output gate
rmsnorm(o) * swish(x W_g) per head, then W_o. Heads as fla counts them: key dim = d_model * expand_k (fla's
head_dim 256 x 6 heads at hidden size 2048 is expand_k 0.75), value head dim = key head dim * expand_v (2).
Not carried over: fla's grouped value heads (num_v_heads > num_heads). Trained in the chunked WY/UT form shared
with DeltaNet (`models/mixers/delta_net.py`); on CUDA with flash-linear-attention, `kernel=auto` runs
`fla.ops.gated_delta_rule.chunk_gated_delta_rule` on the same q, k, v, beta and log decays.
"""

from collections.abc import Callable, Iterable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.mixers.base import Mixer
from models.mixers.delta_net import (
    check_dims,
    check_kernel,
    chunked_delta_rule,
    delta_rule_flops,
    heads_last,
    inverse_softplus_dt,
    l2_normalise,
    output_layers,
    output_norm,
    qkv_heads,
    qkv_projections,
    recurrent_delta_rule,
    resolve_fla,
    short_convs,
    use_fla,
    value_head_dim,
)
from models.mixers.linear_attention import full_precision


class GatedDeltaNet(Mixer):
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
        use_short_conv: bool = True,
        conv_size: Annotated[int, Ge(1)] = 4,
        allow_neg_eigval: bool = False,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
        chunk_size: Annotated[int, Ge(1)] = 64,
        kernel: Literal["auto", "torch", "fla"] = "auto",
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        check_kernel(kernel)
        key_dim, _ = check_dims(d_model, n_heads, expand_k, None)
        self.dk = key_dim // n_heads
        self.dv = value_head_dim(self.dk, expand_v)
        value_dim = n_heads * self.dv
        self.n_heads, self.chunk_size, self.kernel = n_heads, chunk_size, kernel
        self.beta_scale = 2.0 if allow_neg_eigval else 1.0
        self.q_proj, self.k_proj, self.v_proj = qkv_projections(d_model, key_dim, value_dim)
        self.a_proj = nn.Linear(d_model, n_heads, bias=False)
        self.b_proj = nn.Linear(d_model, n_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(0, 16).log())
        self.dt_bias = nn.Parameter(inverse_softplus_dt(n_heads))
        self.convs = short_convs((key_dim, key_dim, value_dim), conv_size, use_short_conv)
        self.g_proj, self.o_norm, self.o_proj = output_layers(d_model, value_dim, self.dv, use_gate, norm_eps)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return (self.A_log, self.dt_bias)  # as in the reference (their _no_weight_decay flags)

    def kernel_for(self, device_type: str, bf16: bool) -> str:
        return resolve_fla(self.kernel, device_type, bf16, needs_bf16=False)

    def forward(self, x: Tensor) -> Tensor:
        if use_fla(self.kernel, x, needs_bf16=False):
            return self._mix(x, fla_gated_delta_rule)
        return self._mix(x, lambda *args: chunked_delta_rule(*args, chunk_size=self.chunk_size))

    def transition_range(self) -> tuple[float, float]:
        """The range of the eigenvalues of the state transition I - beta k k^T (times a_t <= 1 when gated)."""
        return 1.0 - self.beta_scale, 1.0

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time (the RNN view)."""
        return self._mix(x, recurrent_delta_rule)

    def _mix(self, x: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        q, k, v = qkv_heads(self, x)
        q, k = l2_normalise(q) * self.dk**-0.5, l2_normalise(k)
        beta = self.beta_scale * torch.sigmoid(full_precision(self.b_proj(x))).transpose(1, 2)  # (b, h, t)
        log_decay = gdn_log_decay(full_precision(self.a_proj(x)), self.A_log, self.dt_bias).transpose(1, 2)
        with torch.autocast(x.device.type, enabled=False):
            o = scan(q, k, v, beta, log_decay)
        return self.o_proj(output_norm(self, o, x).to(x.dtype))

    def flops_per_token(self, seq_len: int) -> int:  # the same recurrence whichever kernel runs it
        # the scan's: delta_rule_flops = 3 * H * (C (5 dk + 3 dv) + 6 dk dv), C = min(chunk, T); the decays add
        # O(C) per head, left out
        return delta_rule_flops(self.n_heads, self.dk, self.dv, min(self.chunk_size, seq_len))


def gdn_log_decay(a: Tensor, A_log: Tensor, dt_bias: Tensor) -> Tensor:
    """log a_t = -exp(A_log) * softplus(a + dt_bias) <= 0: fla's naive_gdn_gate (Mamba-2's dt * A)."""
    return -A_log.float().exp() * F.softplus(a + dt_bias.float())


def fla_gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_decay: Tensor) -> Tensor:
    """fla's chunked gated delta-rule kernel on (batch, heads, seq, dim) tensors, q normalised and scaled."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    out = chunk_gated_delta_rule(
        heads_last(q), heads_last(k), heads_last(v), heads_last(log_decay), heads_last(beta), scale=1.0
    )
    return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)
