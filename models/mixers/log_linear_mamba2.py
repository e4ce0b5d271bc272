"""Log-linear Mamba-2 (Guo et al. 2025, "Log-Linear Attention"): Mamba-2's SSD with its single state per head replaced
by a Fenwick-tree partition of the prefix into O(log T) buckets, each read with its own data-dependent weight,

    y_t = sum_{s<=t} lambda_t^{l(t,s)} (C_t . B_s) exp(sum_{s<j<=t} dt_j A) dt_s x_s + D x_t,
    l(t,s) = bit_length(t xor s)   (0 for s = t: the token itself; l for the 2^(l-1) tokens of the l-th bucket),
    lambda_t^l = softplus(L_{h,l} dl_{t,h,l})   (dl from in_proj, L a learned per-head, per-level scale, init 1)

following fla-org/flash-linear-attention `fla/layers/log_linear_mamba2.py` (LogLinearMamba2: in_proj [z, xBC, dt, dl]
with bias, a silu depthwise conv without bias, A = -exp(A_log) with A_log = log(1..H), dt log-uniform in [1e-3, 0.1],
15 levels (sequences up to 2^14), gated RMSNorm with the gate before the norm, out_proj with bias; dt_bias, A_log, L
and D without weight decay) and `fla/ops/log_linear_attn/naive.py` (the quadratic reference the test runs).
The log-linear Gated DeltaNet of the paper is not here: fla has no layer or naive reference for it.

The chunked form (chunk_size rounded down to a power of two): within a chunk, the quadratic form with each pair's
level weight; across chunks, every earlier chunk's decayed state sum_s exp(...) B_s x_s^T, read by each query with the
weight of the level its chunk pair falls in (bit_length(chunk_t xor chunk_s) + log2 chunk). `recurrent` keeps one
state per level and merges levels 0..j into j+1 after a token whose index ends in j ones: the Fenwick update, O(log T)
per token.
"""

import math
from collections.abc import Callable, Iterable
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.mixers._conv import ShortConv
from models.mixers.base import Mixer
from models.mixers.linear_attention import full_precision
from models.mixers.mamba2 import dt_bias_init, ssd_heads


def bit_length(x: Tensor) -> Tensor:
    """The number of bits of each non-negative integer (0 for 0)."""
    return (x[..., None] >= 2 ** torch.arange(31, device=x.device)).sum(-1)


def chunked_log_linear(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, lam: Tensor, *, chunk_size: int) -> Tensor:
    """y_t = sum_{s<=t} lam_t[l(t,s)] (q_t . k_s) exp(sum_{s<j<=t} log_a_j) v_s.
    q, k: (b, h, t, N); v: (b, h, t, P); log_a: (b, h, t), <= 0; lam: (b, h, t, levels). Returns (b, h, t, P)."""
    b, h, t, _ = q.shape
    c = 1 << (min(chunk_size, t).bit_length() - 1)  # a power of two: the Fenwick levels align to chunk starts
    n = -(-t // c)
    pad = lambda z: F.pad(z, (0, 0, 0, n * c - t)).unflatten(2, (n, c))
    q, k, v, lam = pad(q), pad(k), pad(v), pad(lam)
    cum = pad(log_a[..., None])[..., 0].cumsum(-1)  # (b, h, n, c): within each chunk
    pos = torch.arange(c, device=q.device)
    level = bit_length(pos[:, None] ^ pos[None, :])  # (c, c)
    causal = pos[:, None] >= pos[None, :]
    decay = (cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, float("-inf")).exp()
    weight = lam.gather(-1, level.expand(b, h, n, c, c))  # lam_t[l(t,s)]
    y = ((q @ k.transpose(-1, -2)) * decay * weight) @ v
    if n == 1:
        return y.flatten(2, 3)[:, :, :t]
    last = cum[..., -1:]
    states = (k * (last - cum).exp()[..., None]).transpose(-1, -2) @ v  # (b, h, n, N, P): each chunk to its end
    ends = F.pad(last[..., 0].cumsum(-1), (1, 0))  # (b, h, n + 1): log decay from the start to each chunk boundary
    idx = torch.arange(n, device=q.device)
    # exp(b_t - B_end(m)) for t in chunk i > m: within chunk i up to t, plus the chunks strictly between
    gap = ends[..., :-1, None] - ends[..., None, 1:]  # (b, h, i, m): start of chunk i minus end of chunk m
    across = (cum[..., :, :, None] + gap[..., :, None, :]).masked_fill(
        ~(idx[:, None] > idx[None, :])[:, None], -torch.inf
    )
    chunk_level = bit_length(idx[:, None] ^ idx[None, :]) + int(math.log2(c))  # (i, m)
    lam_across = lam.gather(-1, chunk_level[:, None].expand(b, h, n, c, n).clamp(max=lam.shape[-1] - 1))
    weights = across.exp() * lam_across  # (b, h, i, c, m)
    y = y + torch.einsum("bhicm,bhicN,bhmNP->bhicP", weights, q, states)
    return y.flatten(2, 3)[:, :, :t]


def recurrent_log_linear(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, lam: Tensor, *, chunk_size: int = 0) -> Tensor:
    """The same, one token at a time with one state per Fenwick level: the reference for `chunked_log_linear`."""
    levels = lam.shape[-1]
    state = torch.zeros(*k.shape[:2], levels, k.shape[-1], v.shape[-1], dtype=v.dtype, device=v.device)
    ys = []
    for i in range(k.shape[2]):
        if i > 0:
            j = ((i - 1) ^ i).bit_length() - 1  # the trailing ones of i - 1: levels 0..j merge into j + 1
            state = log_a[:, :, i, None, None, None].exp() * state
            merged = state[:, :, : j + 1].sum(2, keepdim=True)
            state = torch.cat([torch.zeros_like(state[:, :, : j + 1]), merged, state[:, :, j + 2 :]], dim=2)
        state = torch.cat([(k[:, :, i, :, None] * v[:, :, i, None, :])[:, :, None], state[:, :, 1:]], dim=2)
        read = torch.einsum("bhN,bhlNP->bhlP", q[:, :, i], state)
        ys.append((lam[:, :, i, :, None] * read).sum(2))
    return torch.stack(ys, dim=2)


class LogLinearMamba2(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        d_state: Annotated[int, Ge(1)] = 64,
        d_conv: Annotated[int, Ge(1)] = 4,
        expand: Annotated[float, Gt(0)] = 2,
        head_dim: Annotated[int, Ge(1)] = 32,
        ngroups: Annotated[int, Ge(1)] = 1,
        n_levels: Annotated[int, Ge(1)] = 15,
        dt_min: Annotated[float, Gt(0)] = 1e-3,
        dt_max: Annotated[float, Gt(0)] = 1e-1,
        dt_floor: Annotated[float, Gt(0)] = 1e-4,
        bias: bool = True,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
        chunk_size: Annotated[int, Ge(1)] = 64,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        self.d_inner, self.n_heads = ssd_heads(d_model, expand, head_dim, ngroups)
        self.d_state, self.head_dim = d_state, head_dim
        if max_seq_len > 1 << (n_levels - 1):
            raise ValueError(f"mixer.n_levels={n_levels} covers sequences up to 2^{n_levels - 1}, not {max_seq_len}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"mixer.dt_min={dt_min} and dt_max={dt_max} must satisfy 0 < dt_min <= dt_max")
        self.ngroups, self.n_levels, self.chunk_size, self.norm_eps = ngroups, n_levels, chunk_size, norm_eps
        conv_dim = self.d_inner + 2 * ngroups * d_state
        self.split = [self.d_inner, conv_dim, self.n_heads, self.n_heads * n_levels]  # [z, xBC, dt, dl]
        self.in_proj = nn.Linear(d_model, sum(self.split), bias=bias)
        self.conv = ShortConv(conv_dim, d_conv, bias=False)
        self.dt_bias = nn.Parameter(dt_bias_init(self.n_heads, dt_min, dt_max, dt_floor))
        self.A_log = nn.Parameter(torch.arange(1, self.n_heads + 1, dtype=torch.float32).log())
        self.L = nn.Parameter(torch.ones(self.n_heads, n_levels))
        self.D = nn.Parameter(torch.ones(self.n_heads))
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return (self.dt_bias, self.A_log, self.L, self.D)  # fla's _no_weight_decay flags

    def forward(self, u: Tensor) -> Tensor:
        return self._block(u, chunked_log_linear)

    def recurrent(self, u: Tensor) -> Tensor:
        """The same layer with the Fenwick-tree recurrence run token by token."""
        return self._block(u, recurrent_log_linear)

    def _block(self, u: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        b, t, _ = u.shape
        z, xbc, dt, dl = self.in_proj(u).split(self.split, dim=-1)
        x, B, C = F.silu(self.conv(xbc)).split([self.d_inner, *[self.ngroups * self.d_state] * 2], dim=-1)
        dt = F.softplus(full_precision(dt) + self.dt_bias.float()).transpose(1, 2)  # (b, h, t)
        log_a = -torch.exp(self.A_log.float())[:, None] * dt
        lam = F.softplus(self.L.float() * full_precision(dl).view(b, t, self.n_heads, self.n_levels))
        per_head = self.n_heads // self.ngroups
        groups = lambda m: full_precision(m.view(b, t, self.ngroups, self.d_state).transpose(1, 2)).repeat_interleave(
            per_head, dim=1
        )  # (b, h, t, d_state): head i reads group i // per_head
        x = full_precision(x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2))
        with torch.autocast(u.device.type, enabled=False):
            y = scan(groups(C), groups(B), x * dt[..., None], log_a, lam.transpose(1, 2), chunk_size=self.chunk_size)
            y = y + self.D.float()[:, None, None] * x
        y = y.transpose(1, 2).reshape(b, t, self.d_inner) * F.silu(full_precision(z))  # the gate before the norm
        y = y.view(b, t, self.ngroups, -1)
        y = (y * torch.rsqrt(y.square().mean(-1, keepdim=True) + self.norm_eps)).view(b, t, self.d_inner)
        return self.out_proj((y * self.norm_weight).to(u.dtype))

    def flops_per_token(self, seq_len: int) -> int:
        # Forward per head: within a chunk the scores and their product, 2C(N + P); each chunk's state, 2NP; reading
        # every earlier chunk's state, 2 (T / C) N P on average over positions; x3 for forward + backward.
        c, n, p = min(self.chunk_size, seq_len), self.d_state, self.head_dim
        return 3 * self.n_heads * (2 * c * (n + p) + 2 * n * p + math.ceil(seq_len / c) * 2 * n * p)
