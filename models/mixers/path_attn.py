"""PaTH attention (Yang et al. 2025, "PaTH Attention: Position Encoding via Accumulating Householder Transformations"):
softmax attention whose position encoding is a data-dependent product of Householder-like reflections between the
query and the key, in place of RoPE,

    w_t = l2norm(silu(conv(W_w x)_t)) per head, beta_t = 2 sigmoid(b^T x_t + b_0) in (0, 2), H_t = I - beta_t w_t w_t^T
    s_ij = q_i^T H_i H_{i-1} ... H_{j+1} k_j   (j <= i),   o_i = sum_j softmax_j((s_ij + c_i - c_j) / sqrt(d_h)) v_j

with c the cumulative log forget gate of FoX (`forget_gate`, PaTH-FoX; off by default as fla's), scaled with the
scores as fla's kernels and its naive reference do (FoX itself adds it unscaled). Follows fla-org/
flash-linear-attention `fla/layers/path_attn.py` (PaTHAttention: q, k, v, o projections without bias, w through a
rank-32 bottleneck and a short convolution (kernel 3, no bias, silu), beta in (0, 2) always, i.e. negative eigenvalues
on: `allow_neg_eigval=false` gives (0, 1)), `fla/ops/path_attn/naive.py` (the reference the test runs), and its
decoding path (each cached key k_j <- H_t k_j as token t arrives: `recurrent` here). Weights N(0, 0.02), biases zero,
as fla's PaTH model initialises every Linear and Conv1d.

The scores are computed chunk by chunk (not with fla's UT transform): within a chunk of c tokens, each query is
reflected backwards one token per step (q_i, H_i q_i, H_{i-1} H_i q_i, ... against k_i, k_{i-1}, ...), which also
gives it moved to the chunk's start; each key is reflected forwards to the chunk's end; a chunk's reflections
multiply into one d_h x d_h matrix, which carries the queries across whole chunks. The (seq, seq) score matrix is
then masked and soft-maxed as attention.
"""

import math
from collections.abc import Iterable
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor, nn

from models.init import normal_init_
from models.mixers._conv import ShortConv
from models.mixers.base import Mixer
from models.mixers.delta_net import l2_normalise
from models.mixers.linear_attention import full_precision


def reflect(x: Tensor, w: Tensor, beta: Tensor) -> Tensor:
    """H x = x - beta (w . x) w on the last axis; beta has no last axis."""
    return x - (beta * (x * w).sum(-1))[..., None] * w


def path_scores(q: Tensor, k: Tensor, w: Tensor, beta: Tensor, *, chunk_size: int) -> Tensor:
    """s_ij = q_i^T H_i ... H_{j+1} k_j for j <= i (entries above the diagonal are 0), H_t = I - beta_t w_t w_t^T.
    q, k, w: (batch, heads, seq, d); beta: (batch, heads, seq). Returns (batch, heads, seq, seq)."""
    b, h, t, d = q.shape
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = lambda z: F.pad(z, (0, 0, 0, n * c - t)).unflatten(2, (n, c))  # beta 0 on padding: H = I there
    q, k, w, beta = pad(q), pad(k), pad(w), pad(beta[..., None])[..., 0]
    local = torch.diag_embed((q * k).sum(-1))  # (b, h, n, c, c): lag 0
    cur = q
    for lag in range(1, c + 1):  # cur[p] <- H_{p-lag+1} cur[p] while p - lag + 1 is in the chunk
        cur = torch.cat(
            [
                cur[..., : lag - 1, :],
                reflect(cur[..., lag - 1 :, :], w[..., : c - lag + 1, :], beta[..., : c - lag + 1]),
            ],
            dim=-2,
        )
        if lag < c:
            local = local + torch.diag_embed((cur[..., lag:, :] * k[..., : c - lag, :]).sum(-1), offset=-lag)
    if n == 1:
        return local[:, :, 0, :t, :t]
    q_start, k_end = cur, k  # queries moved to their chunk's start; keys moved to their chunk's end, below
    for lag in range(1, c):
        k_end = torch.cat(
            [reflect(k_end[..., : c - lag, :], w[..., lag:, :], beta[..., lag:]), k_end[..., c - lag :, :]], dim=-2
        )
    across = torch.eye(d, dtype=q.dtype, device=q.device).expand(b, h, n, d, d)
    for s in range(c):  # the chunk's product H_{c-1} ... H_0
        across = across - beta[..., s, None, None] * w[..., s, :, None] * (w[..., s, None, :] @ across)
    full = q.new_zeros(b, h, n, n, c, c)
    idx = torch.arange(n, device=q.device)
    full[:, :, idx, idx] = local
    rows = q_start[:, :, 1:]  # query chunks lag..n-1, carried across the chunks in between
    for lag in range(1, n):
        full[:, :, idx[lag:], idx[: n - lag]] = rows @ k_end[:, :, : n - lag].transpose(-1, -2)
        if lag < n - 1:
            rows = rows[:, :, 1:] @ across[:, :, 1 : n - lag]
    return full.permute(0, 1, 2, 4, 3, 5).reshape(b, h, n * c, n * c)[:, :, :t, :t]


def path_attend(scores: Tensor, v: Tensor, log_f: Tensor | None, scale: float) -> Tensor:
    """softmax over j <= i of scale (s_ij + c_i - c_j) (c the cumulative log forget gate), times v."""
    t = scores.shape[-1]
    if log_f is not None:
        cum = log_f.cumsum(-1)
        scores = scores + cum[..., :, None] - cum[..., None, :]
    logits = scores * scale
    causal = torch.ones(t, t, dtype=torch.bool, device=scores.device).tril()
    return logits.masked_fill(~causal, float("-inf")).softmax(-1) @ v


class PaTHAttention(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 1,
        n_kv_heads: Annotated[int, Ge(1)] | None = None,
        forget_gate: bool = False,
        low_rank_w: bool = True,
        w_conv: bool = True,
        conv_size: Annotated[int, Ge(1)] = 3,
        allow_neg_eigval: bool = True,
        chunk_size: Annotated[int, Ge(1)] = 16,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if d_model % n_heads:
            raise ValueError(f"mixer.n_heads={n_heads} must divide d_model={d_model}")
        if n_heads % n_kv_heads:
            raise ValueError(f"mixer.n_kv_heads={n_kv_heads} must divide mixer.n_heads={n_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.chunk_size, self.neg = chunk_size, allow_neg_eigval
        kv_dim = n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, kv_dim, bias=False)
        self.v_proj = nn.Linear(d_model, kv_dim, bias=False)
        low_rank = nn.Sequential(nn.Linear(d_model, 32, bias=False), nn.Linear(32, kv_dim, bias=False))
        self.w_proj = low_rank if low_rank_w else nn.Linear(d_model, kv_dim, bias=False)
        self.w_conv = ShortConv(kv_dim, conv_size, bias=False) if w_conv else None
        self.bt_proj = nn.Linear(d_model, n_kv_heads, bias=True)
        self.g_proj = nn.Linear(d_model, n_heads, bias=True) if forget_gate else None
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        normal_init_(self)
        if self.w_conv is not None:
            nn.init.normal_(self.w_conv.conv.weight, mean=0.0, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v, w, beta, log_f = self._project(x)
        with torch.autocast(x.device.type, enabled=False):
            y = path_attend(path_scores(q, k, w, beta, chunk_size=self.chunk_size), v, log_f, self.head_dim**-0.5)
        return self._out(y, x)

    def recurrent(self, x: Tensor) -> Tensor:
        """Token by token as fla decodes: every cached key is reflected by each new token's H_t, then attended."""
        q, k, v, w, beta, log_f = self._project(x)
        scale, ys = self.head_dim**-0.5, []
        with torch.autocast(x.device.type, enabled=False):
            cached = k[:, :, :0]
            for t in range(x.shape[1]):
                cached = reflect(cached, w[:, :, t, None], beta[:, :, t, None])
                cached = torch.cat([cached, k[:, :, t, None]], dim=2)
                logits = (cached @ q[:, :, t, :, None])[..., 0]  # (b, h, t + 1)
                if log_f is not None:
                    cum = log_f[:, :, : t + 1].cumsum(-1)
                    logits = logits + cum[..., -1:] - cum
                ys.append((logits * scale).softmax(-1)[:, :, None] @ v[:, :, : t + 1])
        return self._out(torch.cat(ys, dim=2), x)

    def _project(self, x: Tensor) -> tuple[Tensor, ...]:
        """q, k, v, w: (batch, heads, seq, head_dim), keys and w repeated over the query heads of their group; beta,
        log forget gate (or None): (batch, heads, seq); fp32 from here on."""
        b, t, _ = x.shape
        rep = self.n_heads // self.n_kv_heads
        heads = lambda z, r: full_precision(z).view(b, t, -1, self.head_dim).transpose(1, 2).repeat_interleave(r, 1)
        w = self.w_proj(x)
        if self.w_conv is not None:
            w = F.silu(self.w_conv(w))
        w = l2_normalise(heads(w, rep))
        beta = torch.sigmoid(full_precision(self.bt_proj(x))) * (2.0 if self.neg else 1.0)
        beta = beta.transpose(1, 2).repeat_interleave(rep, 1)
        log_f = None if self.g_proj is None else F.logsigmoid(full_precision(self.g_proj(x))).transpose(1, 2)
        return heads(self.q_proj(x), 1), heads(self.k_proj(x), rep), heads(self.v_proj(x), rep), w, beta, log_f

    def _out(self, y: Tensor, x: Tensor) -> Tensor:
        return self.o_proj(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1).to(x.dtype))

    def transition_range(self) -> tuple[float, float]:
        """The range of the eigenvalue 1 - beta of each reflection H_t along w_t."""
        return (-1.0 if self.neg else 0.0), 1.0

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return ()  # fla flags none

    def flops_per_token(self, seq_len: int) -> int:
        # Attention's QK^T and AV, 4 T d forward per head; carrying queries across chunks, T d^2 / c; the reflections
        # within a chunk (queries, keys, the chunk's product), ~10 c d + 4 d^2; x3 for forward + backward.
        t, d, c = seq_len, self.head_dim, min(self.chunk_size, seq_len)
        return 3 * self.n_heads * (4 * t * d + math.ceil(t * d * d / c) + 10 * c * d + 4 * d * d)
