"""MesaNet (von Oswald et al. 2025, "MesaNet: Sequence Modeling by Locally Optimal Test-Time Training"): each token's
output is the least-squares optimal linear map from the keys seen so far to their values, applied to the query,

    H_kk,t = a_t H_kk,t-1 + beta_t k_t k_t^T,   H_kv,t = a_t H_kv,t-1 + beta_t k_t v_t^T
    o_t = H_kv,t^T (H_kk,t + diag(lambda))^{-1} q_t,   a_t = sigmoid(w_a x_t + b_a), beta_t = sigmoid(w_b x_t + b_b)

with q, k through a silu short convolution then L2-normalised per head, lambda = softplus(l) + 0.25 per key channel
(l initialised so that lambda = 1), a per-head RMSNorm on o. Follows fla-org/flash-linear-attention
`fla/layers/mesa_net.py` (MesaNet without the output gate: projections without bias, a and b with bias, conv size
4 without bias, lambda without weight decay) and `fla/ops/mesa_net/naive.py`. The system is solved exactly
(`naive_mesa_net_exact`, torch.linalg.solve) where fla's chunk kernel runs up to 30 conjugate-gradient steps, which
reach the same solution in at most head_dim steps in exact arithmetic; the test compares with both.

Both statistics are prefix sums with a scalar decay per head and step: the chunked form computes every position's
d x d statistics chunk by chunk (a decay matrix times the chunk's outer products), `recurrent` one token at a time,
and each position's d x d system is solved in a batch. Weights N(0, 0.02), biases zero, as fla's models initialise
Linear and Conv1d layers.
"""

import math
from collections.abc import Callable, Iterable
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.init import normal_init_
from models.mixers._conv import ShortConv
from models.mixers._scan import diagonal_scan, diagonal_scan_recurrent
from models.mixers.base import Mixer
from models.mixers.delta_net import l2_normalise
from models.mixers.linear_attention import full_precision


def decayed_prefix_sums(x: Tensor, log_a: Tensor, chunk_size: int) -> Tensor:
    """Every h_t = exp(log_a_t) h_{t-1} + x_t (h_{-1} = 0) for x (b, t, channels) whose decay log_a (b, t, 1) is one
    scalar per step, chunk by chunk: within a chunk a (c x c) matrix of decays times the chunk's inputs (a matmul,
    every exponent <= 0), the chunks' end states carried by the diagonal scan of models/mixers/_scan.py."""
    b, t, m = x.shape
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = lambda z: F.pad(z, (0, 0, 0, n * c - t)).unflatten(1, (n, c))  # zero padding is future
    x, cum = pad(x), pad(log_a).cumsum(2)  # (b, n, c, m), (b, n, c, 1)
    causal = torch.ones(c, c, dtype=torch.bool, device=x.device).tril()
    local = (cum - cum.transpose(-1, -2)).masked_fill(~causal, float("-inf")).exp() @ x
    if n > 1:
        ends = diagonal_scan(local[:, :, -1], cum[:, :, -1].expand(b, n, m), chunk_size)
        local = local + cum.exp() * F.pad(ends[:, :-1], (0, 0, 1, 0))[:, :, None]
    return local.flatten(1, 2)[:, :t]


def mesa(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, beta: Tensor, lam: Tensor, scan: Callable) -> Tensor:
    """o_t = H_kv,t^T (H_kk,t + diag(lam))^-1 q_t. q, k: (b, t, h, dk); v: (b, t, h, dv); log_a, beta: (b, t, h);
    lam: (h, dk); scan(x, log_a) -> every h_t = exp(log_a_t) h_{t-1} + x_t for x (b, t, channels), log_a (b, t, 1)."""
    b, t, h, dk = k.shape
    kb = k * beta[..., None]
    outer = lambda z: (kb[..., :, None] * z[..., None, :]).flatten(2)  # (b, t, h * dk * d)
    per_head = lambda z: z.unflatten(2, (h, -1)).transpose(1, 2).flatten(0, 1)  # (b h, t, entries)
    back = lambda z, d: z.unflatten(0, (b, h)).transpose(1, 2).reshape(b, t, h, dk, d)
    decay = per_head(log_a)  # (b h, t, 1)
    h_kk = back(scan(per_head(outer(k)), decay), dk)
    h_kv = back(scan(per_head(outer(v)), decay), v.shape[-1])
    x = torch.linalg.solve(h_kk + torch.diag_embed(lam), q)  # (b, t, h, dk)
    return (x[..., None] * h_kv).sum(-2)


class MesaNet(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 4,
        head_dim: Annotated[int, Ge(1)] = 16,
        conv_size: Annotated[int, Ge(1)] = 4,
        lambda_lower_bound: Annotated[float, Gt(0)] = 0.25,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
        chunk_size: Annotated[int, Ge(1)] = 64,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        self.n_heads, self.head_dim, self.chunk_size, self.norm_eps = n_heads, head_dim, chunk_size, norm_eps
        self.lambda_lower_bound = lambda_lower_bound
        width = n_heads * head_dim
        self.q_proj = nn.Linear(d_model, width, bias=False)
        self.k_proj = nn.Linear(d_model, width, bias=False)
        self.v_proj = nn.Linear(d_model, width, bias=False)
        self.a_proj = nn.Linear(d_model, n_heads, bias=True)
        self.b_proj = nn.Linear(d_model, n_heads, bias=True)
        self.q_conv1d = ShortConv(width, conv_size, bias=False)
        self.k_conv1d = ShortConv(width, conv_size, bias=False)
        self.lambda_params = nn.Parameter(torch.full((width,), math.log(math.expm1(1.0 - lambda_lower_bound))))
        self.o_norm_weight = nn.Parameter(torch.ones(head_dim))
        self.o_proj = nn.Linear(width, d_model, bias=False)
        normal_init_(self)
        for conv in (self.q_conv1d, self.k_conv1d):
            nn.init.normal_(conv.conv.weight, mean=0.0, std=0.02)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return (self.lambda_params,)  # as fla flags it

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x, lambda z, log_a: decayed_prefix_sums(z, log_a, self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same layer with both statistics accumulated one token at a time."""
        return self._mix(x, lambda z, log_a: diagonal_scan_recurrent(z, log_a.expand_as(z)))

    def _mix(self, x: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        b, t, _ = x.shape
        heads = lambda z: full_precision(z).view(b, t, self.n_heads, self.head_dim)
        q = l2_normalise(heads(F.silu(self.q_conv1d(self.q_proj(x)))))
        k = l2_normalise(heads(F.silu(self.k_conv1d(self.k_proj(x)))))
        v = heads(self.v_proj(x))
        beta = torch.sigmoid(full_precision(self.b_proj(x)))
        log_a = F.logsigmoid(full_precision(self.a_proj(x)))
        lam = (F.softplus(self.lambda_params.float()) + self.lambda_lower_bound).view(self.n_heads, self.head_dim)
        with torch.autocast(x.device.type, enabled=False):
            o = mesa(q, k, v, log_a, beta, lam, scan)
            o = o * torch.rsqrt(o.square().mean(-1, keepdim=True) + self.norm_eps) * self.o_norm_weight.float()
        return self.o_proj(o.flatten(2).to(x.dtype))

    def flops_per_token(self, seq_len: int) -> int:
        # Per head, forward: both statistics' updates, 2 d^2 each; the d x d solve, ~2 d^3 / 3; reading H_kv, 2 d^2;
        # x3 for forward + backward.
        d = self.head_dim
        return 3 * self.n_heads * (6 * d * d + math.ceil(2 * d**3 / 3))
