"""Stick-breaking attention (Tan et al. 2025, "Scaling Stick-Breaking Attention: An Efficient Implementation and
In-depth Study"): each query breaks a unit stick over its keys from the nearest backwards, so recency orders the
weights and no position encoding is needed,

    z_ij = q_i . k_j / sqrt(d),   A_ij = sigmoid(z_ij) prod_{j<l<i} (1 - sigmoid(z_il)),   o_i = sum_{j<i} A_ij v_j

(j <= i and j < l <= i with `attend_current`); the stick left over, 1 - sum_j A_ij, is dropped. Follows
fla-org/flash-linear-attention `fla/layers/stickbreaking_attn.py` (StickBreakingAttention: q, k, v without bias by
default, o without bias, optional per-head RMS q/k norm with eps 1e-6, GQA, attend_current off, no positions) and
its reference `fla/ops/stickbreaking_attn/naive.py`, as fla-org/flame's `custom_models/sba` (sb_ref.py) computes it:
in log space, log A_ij = logsigmoid(z_ij) + sum_{j<l<i} logsigmoid(-z_il), every term <= 0, in fp32. Weights
N(0, 0.02), biases zero, as fla's models initialise every Linear. Not a recurrence: the weights of every key change
with each new query.
"""

from collections.abc import Callable
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.init import normal_init_
from models.mixers.base import Mixer
from models.mixers.linear_attention import full_precision


def stickbreaking(q: Tensor, k: Tensor, v: Tensor, scale: float, attend_current: bool = False) -> Tensor:
    """q, k, v: (batch, heads, seq, d) -> o (batch, heads, seq, d_v), in the inputs' precision (the layer: fp32)."""
    t = q.shape[-2]
    pos = torch.arange(t, device=q.device)
    visible = pos[None, :] <= pos[:, None] if attend_current else pos[None, :] < pos[:, None]
    z = (q @ k.transpose(-1, -2)) * scale
    log_rest = F.logsigmoid(-z).masked_fill(~visible, 0.0)  # log(1 - sigmoid(z)); 0 where a key is not seen
    after = log_rest.flip(-1).cumsum(-1).flip(-1) - log_rest  # sum over the visible keys l > j
    return (F.logsigmoid(z) + after).masked_fill(~visible, float("-inf")).exp() @ v


class StickBreakingAttention(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 1,
        n_kv_heads: Annotated[int, Ge(1)] | None = None,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        attend_current: bool = False,
        norm_eps: Annotated[float, Gt(0)] = 1e-6,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if d_model % n_heads:
            raise ValueError(f"mixer.n_heads={n_heads} must divide d_model={d_model}")
        if n_heads % n_kv_heads:
            raise ValueError(f"mixer.n_kv_heads={n_kv_heads} must divide mixer.n_heads={n_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.attend_current = attend_current
        kv_dim = n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, d_model, bias=qkv_bias)
        self.k_proj = nn.Linear(d_model, kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d_model, kv_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=norm_eps) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=norm_eps) if qk_norm else None
        normal_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.mix(x, stickbreaking)

    def mix(self, x: Tensor, attend: Callable[..., Tensor]) -> Tensor:
        """The layer around `attend(q, k, v, scale, attend_current)` on (batch, heads, seq, d) tensors."""
        b, t, _ = x.shape
        heads = lambda z: z.view(b, t, -1, self.head_dim).transpose(1, 2)
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        rep = self.n_heads // self.n_kv_heads  # query head i reads key head i // rep, as fla
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        q, k, v = full_precision(q), full_precision(k), full_precision(v)  # scores, log-sigmoids, sums: fp32
        with torch.autocast(x.device.type, enabled=False):
            o = attend(q, k, v, self.head_dim**-0.5, self.attend_current)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, -1).to(x.dtype))

    def flops_per_token(self, seq_len: int) -> int:
        # As softmax attention: QK^T and AV, 4 T d per head forward (the log-sigmoids and the cumulative sum are
        # elementwise on the T x T scores); x3 for forward + backward.
        return 12 * self.n_heads * self.head_dim * seq_len
