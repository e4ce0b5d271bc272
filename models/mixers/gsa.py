"""Gated Slot Attention (Zhang et al. 2024, "Gated Slot Attention for Efficient Linear-Time Sequence Modeling"): a
two-pass gated linear attention over m memory slots per head, read by a softmax over the slots,

    K_t = K_{t-1} Diag(a_t) + k_t s_t^T      (d_k x m),   o'_t = softmax(K_t^T q_t)   (m slots),
    V_t = Diag(a_t) V_{t-1} + s_t v_t^T      (m x d_v),   o_t = V_t^T o'_t,
    log a_t = logsigmoid(x_t W_f) / 8,   s_t = 1 - a_t   (the slots' write strength, tied to their forget gate).

The layer follows flash-linear-attention's `fla/layers/gsa.py` (GatedSlotAttention) with its defaults: q, k, v, f
projections without bias, no short convolution (optional: causal depthwise + SiLU), the swish feature map on q and
k, SiLU on v, m = key head dim slots, scale 1, then out = W_o RMSNorm(swish(o)) (RMSNorm over the whole width, eps
1e-5: fla's fused rms_norm_linear, which ignores norm_eps); every Linear and short-conv weight N(0, 0.02), biases zero,
as fla's models initialise them. The first pass decays its state along the slot (value) axis, which GLA's chunked form
does not cover: `chunked_slot_read` below; the second pass is GLA's chunked form (models/mixers/linear_attention.py)
with keys s. The gates and both passes run in float32. Not carried over: grouped kv heads (num_kv_heads), the relu and
t2r feature maps; fla's Triton kernel (not wired in: it could not be checked without a GPU).
"""

from collections.abc import Callable
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.init import fla_init_
from models.mixers._conv import ShortConv
from models.mixers.base import Mixer
from models.mixers.linear_attention import chunked_linear_attention, full_precision, recurrent_linear_attention


def chunked_slot_read(q: Tensor, k: Tensor, s: Tensor, log_decay: Tensor, *, chunk_size: int) -> Tensor:
    """r_t = K_t^T q_t with K_t = K_{t-1} Diag(exp(g_t)) + k_t s_t^T, K_0 = 0 (the decay on the slot axis), chunk by
    chunk: r_tm = sum_{i<=t} (q_t . k_i) e^{b_tm - b_im} s_im + e^{b_tm} (q_t^T K_start)_m with b the cumulative log
    decay from the chunk start (exponents <= 0); the state leaving a chunk is K_start e^{b_C} + sum_i k_i (s_i
    e^{b_C - b_i})^T. q, k: (batch, heads, seq, dk); s, log_decay: (batch, heads, seq, m)."""
    b, h, t, dk = k.shape
    m = s.shape[-1]
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = lambda z: F.pad(z, (0, 0, 0, n * c - t)).unflatten(2, (n, c))  # (b, h, n, c, d); padding is future
    q, k, s, cum = pad(q), pad(k), pad(s), pad(log_decay).cumsum(3)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    scores = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0.0)  # (b, h, n, c, c)
    diff = (cum[..., :, None, :] - cum[..., None, :, :]).masked_fill(~causal[..., None], float("-inf"))
    intra = (scores[..., None] * diff.exp() * s[..., None, :, :]).sum(-2)  # (b, h, n, c, m)
    last = cum[..., -1:, :]
    updates = k.transpose(-1, -2) @ (s * (last - cum).exp())  # (b, h, n, dk, m)
    state, states = torch.zeros(b, h, dk, m, dtype=s.dtype, device=s.device), []
    for update, decay in zip(updates.unbind(2), last.exp().unbind(2), strict=True):
        states.append(state)
        state = state * decay + update
    inter = (q @ torch.stack(states, dim=2)) * cum.exp()
    return (intra + inter).flatten(2, 3)[:, :, :t]


def recurrent_slot_read(q: Tensor, k: Tensor, s: Tensor, log_decay: Tensor) -> Tensor:
    """The same one token at a time: the reference for `chunked_slot_read`."""
    b, h, t, dk = k.shape
    state, out = torch.zeros(b, h, dk, s.shape[-1], dtype=s.dtype, device=s.device), []
    for i in range(t):
        state = state * log_decay[:, :, i, None, :].exp() + k[:, :, i, :, None] * s[:, :, i, None, :]
        out.append(q[:, :, i, None, :] @ state)
    return torch.cat(out, dim=2)


class GatedSlotAttention(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 4,
        num_slots: Annotated[int, Ge(1)] | None = None,
        gate_logit_normalizer: Annotated[float, Gt(0)] = 8.0,
        use_short_conv: bool = False,
        conv_size: Annotated[int, Ge(1)] = 4,
        chunk_size: Annotated[int, Ge(1)] = 8,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        if d_model % n_heads:
            raise ValueError(f"mixer.n_heads={n_heads} must divide d_model={d_model}")
        self.n_heads, self.head_dim, self.chunk_size = n_heads, d_model // n_heads, chunk_size
        self.num_slots = self.head_dim if num_slots is None else num_slots  # fla: the key head dim
        self.normalizer = gate_logit_normalizer
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model, bias=False) for _ in "qkv")
        self.f_proj = nn.Linear(d_model, n_heads * self.num_slots, bias=False)
        self.convs = nn.ModuleList(ShortConv(d_model, conv_size, bias=False) for _ in "qkv") if use_short_conv else None
        self.g_norm = nn.RMSNorm(d_model, eps=1e-5)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        fla_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        c = self.chunk_size
        return self._mix(
            x,
            lambda q, k, s, g: chunked_slot_read(q, k, s, g, chunk_size=c),
            lambda q, k, v, g: chunked_linear_attention(q, k, v, g, chunk_size=c),
        )

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time (the RNN view)."""
        return self._mix(x, recurrent_slot_read, recurrent_linear_attention)

    def _mix(self, x: Tensor, read: Callable[..., Tensor], scan: Callable[..., Tensor]) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.convs is not None:
            q, k, v = (F.silu(conv(z)) for conv, z in zip(self.convs, (q, k, v), strict=True))
        heads = lambda z, dh: full_precision(z.view(b, t, self.n_heads, dh).transpose(1, 2))
        q, k, v = heads(F.silu(q), self.head_dim), heads(F.silu(k), self.head_dim), heads(F.silu(v), self.head_dim)
        log_a = F.logsigmoid(heads(self.f_proj(x), self.num_slots)) / self.normalizer  # (b, h, t, m), <= 0
        s = -torch.expm1(log_a)  # 1 - a
        with torch.autocast(x.device.type, enabled=False):
            slots = torch.softmax(read(q, k, s, log_a), dim=-1)
            o = scan(slots, s, v, log_a)
        o = o.transpose(1, 2).reshape(b, t, d)
        return self.o_proj(self.g_norm(F.silu(o)).to(x.dtype))

    def flops_per_token(self, seq_len: int) -> int:
        # per head and token, forward (C = min(chunk, T), K = V = head dim, M slots): first pass, q.k scores 2CK,
        # decayed slot sums 4CM, reading and updating the K x M state 4KM; softmax ~5M; second pass (GLA's chunked
        # form with keys s) 4CM + 2CV + 4MV; x3 for forward + backward.
        c, kd, m = min(self.chunk_size, seq_len), self.head_dim, self.num_slots
        return 3 * self.n_heads * (2 * c * kd + 8 * c * m + 2 * c * kd + 8 * kd * m + 5 * m)
