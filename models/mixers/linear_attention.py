"""Causal linear attention with the ELU+1 feature map (Katharopoulos et al. 2020, "Transformers are RNNs").

y_t = phi(q_t)^T S_t / (phi(q_t)^T z_t) with S_t = sum_{j<=t} phi(k_j) v_j^T and z_t = sum_{j<=t} phi(k_j).
This file also holds the chunked and recurrent forms of the decayed state S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,
y_t = q_t^T S_t that Based, retention and GLA share (Yang et al. 2023's chunk-wise form, decays in log space).
"""

import math
from collections.abc import Callable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.init import normal_init_
from models.mixers.base import Mixer

ChunkSize = Annotated[int, Ge(1)]  # tokens per chunk of the chunked forms: exact for any size


class LinearAttention(Mixer):
    """Weights: N(0, 0.02), as Zoology's model init gives every linear layer (zoology/model.py `_init_weights`)."""

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 1,
        feature_map: Literal["elu", "taylor"] = "elu",
        feature_dim: Annotated[int, Ge(1)] | None = None,
        chunk_size: ChunkSize = 64,
        eps: Annotated[float, Gt(0)] = 1e-6,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        if d_model % n_heads:
            raise ValueError(f"mixer.n_heads={n_heads} must divide d_model={d_model}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qk_dim = self.head_dim if feature_dim is None else feature_dim  # q, k per head before the feature map
        self.feature_map, self.chunk_size, self.eps = feature_map, chunk_size, eps
        self.q = nn.Linear(d_model, n_heads * self.qk_dim, bias=False)
        self.k = nn.Linear(d_model, n_heads * self.qk_dim, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        normal_init_(self)

    @property
    def state_dim(self) -> int:
        """Size of phi(q): qk_dim for elu, 1 + qk_dim + qk_dim^2 for the 2nd-order Taylor map."""
        return self.qk_dim if self.feature_map == "elu" else 1 + self.qk_dim + self.qk_dim**2

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x, lambda q, k, v: chunked_linear_attention(q, k, v, chunk_size=self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time (the RNN view): the reference the chunked form is tested against."""
        return self._mix(x, recurrent_linear_attention)

    def _mix(self, x: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        b, t, _ = x.shape
        heads = lambda z, d: full_precision(z.view(b, t, self.n_heads, d).transpose(1, 2))
        q, k = (self._phi(heads(proj(x), self.qk_dim)) for proj in (self.q, self.k))
        v = heads(self.v(x), self.head_dim)
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # the last column accumulates the normaliser z_t
        with torch.autocast(x.device.type, enabled=False):
            y = scan(q, k, v)
            y = y[..., :-1] / (y[..., -1:] + self.eps)
        return self.out(y.transpose(1, 2).reshape(b, t, -1).to(x.dtype))

    def _phi(self, x: Tensor) -> Tensor:
        if self.feature_map == "elu":
            return F.elu(x) + 1
        # Taylor: phi(q).phi(k) = 1 + q.k/sqrt(d) + (q.k)^2/(2d), the 2nd-order expansion of exp(q.k/sqrt(d)).
        d = self.qk_dim
        outer = (x[..., :, None] * x[..., None, :]).flatten(-2) / math.sqrt(2 * d)
        return torch.cat([torch.ones_like(x[..., :1]), x / d**0.25, outer], dim=-1)

    def flops_per_token(self, seq_len: int) -> int:
        # Chunked form per head, forward: intra-chunk scores and their product with v, 2C(F + V), plus reading and
        # updating the F x V state, 4FV (F = state_dim, V = head_dim + 1 with the normaliser column,
        # C = min(chunk, T)); x3 for forward + backward.
        c, f, v = min(self.chunk_size, seq_len), self.state_dim, self.head_dim + 1
        return 3 * self.n_heads * (2 * c * (f + v) + 4 * f * v)


def chunked_linear_attention(
    q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None = None, *, chunk_size: int
) -> Tensor:
    """y_t = q_t^T S_t, S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, S_0 = 0, chunk by chunk.

    q, k: (batch, heads, seq, dk); v: (batch, heads, seq, dv); log_decay g: None (no decay) or (batch | 1, heads,
    seq, dk | 1) <= 0, per key dimension (GLA) or per head (retention). Within a chunk the decay between
    positions i <= t is exp(b_t - b_i) with b the cumulative log decay; every exponent taken is <= 0, so
    nothing overflows. Chunks are exact and parallel; only the (dk, dv) state is carried across chunks.
    """
    b, h, t, dk = k.shape
    dv = v.shape[-1]
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = lambda z: F.pad(z, (0, 0, 0, n * c - t)).unflatten(2, (n, c))  # (b, h, n, c, d); padding is future
    q, k, v = pad(q), pad(k), pad(v)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    if log_decay is None:
        scores = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0.0)
        q_in, k_out = q, k  # q as seen from the chunk start; k as seen from the chunk end
        chunk_decay = None
    else:
        cum = pad(log_decay.expand(b, h, t, log_decay.shape[-1])).cumsum(-2)  # b_t, (b, h, n, c, dk | 1)
        diff = (cum[..., :, None, :] - cum[..., None, :, :]).masked_fill(~causal[..., None], float("-inf"))
        if log_decay.shape[-1] == 1:  # one decay per head: decay the q.k scores
            scores = (q @ k.transpose(-1, -2)) * diff.squeeze(-1).exp()
        else:  # one decay per key dimension: sum_d q_td k_id exp(b_td - b_id)
            scores = (q[..., :, None, :] * k[..., None, :, :] * diff.exp()).sum(-1)  # 2x faster than einsum on CPU
        last = cum[..., -1:, :]
        q_in, k_out = q * cum.exp(), k * (last - cum).exp()
        chunk_decay = last.squeeze(-2).exp()  # (b, h, n, dk | 1): the state's decay over a whole chunk
    updates = k_out.transpose(-1, -2) @ v  # (b, h, n, dk, dv): each chunk's contribution to the state
    if chunk_decay is None:  # the state entering chunk i is the sum of the updates of chunks < i
        states = F.pad(updates.cumsum(2), (0, 0, 0, 0, 1, 0))[:, :, :-1]
    else:  # S_i = decay_{i-1} S_{i-1} + U_{i-1}, carried chunk by chunk (unbind: one backward for all slices)
        state, states = torch.zeros(b, h, dk, dv, dtype=v.dtype, device=v.device), []
        for update, decay in zip(updates.unbind(2), chunk_decay.unbind(2), strict=True):
            states.append(state)
            state = decay[..., None] * state + update
        states = torch.stack(states, dim=2)
    y = scores @ v + q_in @ states
    return y.flatten(2, 3)[:, :, :t]


def recurrent_linear_attention(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None = None) -> Tensor:
    """The same recurrence one step at a time: the reference for `chunked_linear_attention`."""
    b, h, t, dk = k.shape
    state = torch.zeros(b, h, dk, v.shape[-1], dtype=v.dtype, device=v.device)
    ys = []
    for i in range(t):
        if log_decay is not None:
            state = log_decay[:, :, i, :, None].exp() * state
        state = state + k[:, :, i, :, None] * v[:, :, i, None, :]
        ys.append(q[:, :, i, None, :] @ state)
    return torch.cat(ys, dim=2)


def full_precision(z: Tensor) -> Tensor:
    """Scans accumulate over the whole sequence: run them in float32 even when autocast hands over bf16."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
