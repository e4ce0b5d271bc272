"""RWKV-6 "Finch" time mixing (Peng et al. 2024, "Eagle and Finch: RWKV with Matrix-Valued States and Dynamic
Recurrence"): a linear-attention state per head with a data-dependent decay per key channel and a bonus for the
current token,

    o_t = r_t^T (S_{t-1} + Diag(u) k_t v_t^T),    S_t = Diag(w_t) S_{t-1} + k_t v_t^T,    w_t = exp(-exp(d_t)),

with every input taken from a data-dependent token shift (ddlerp): x + (x_{t-1} - x_t) * (mu_* + lora_*(x)).
The layer follows flash-linear-attention's `fla/layers/rwkv6.py` (RWKV6Attention) with its defaults: the shared
low-rank token-shift LoRA (rank 32, five branches r, w, k, v, g, plus a bias per branch), r, k, v, g projections
without bias, the decay d_t from a LoRA of rank 64 (tanh, with bias), key dim d_model / 2, value dim d_model, the
bonus u per head and key channel, scale 1, then W_o(GroupNorm(o) * swish(g)) (a LayerNorm per head with bias, eps
1e-5); its initialisation (xavier-uniform with gain 2^-2.5 on the Linear layers, the decay LoRA's first factor zero
and second orthogonal x0.1, the shifts' mu, their biases and u zero). fla warns that its RWKV-6 may differ from
BlinkDL/RWKV-LM's (RWKV_Tmix_x060, whose init is depth-dependent); archbench follows fla's, which it is checked
against. Trained in GLA's chunked form (models/mixers/linear_attention.py) on the inputs shifted by one token (S_{t-1}
is GLA's state after k_{t-1}, v_{t-1} with decay w_{t-1}) plus the bonus term; `recurrent` runs the recurrence above
token by token. The decays run in float32. Not carried over: fla's Triton kernel (not wired in).
"""

import math
from collections.abc import Callable
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.mixers.base import Mixer
from models.mixers.linear_attention import chunked_linear_attention, full_precision


def chunked_rwkv6(r: Tensor, k: Tensor, v: Tensor, log_w: Tensor, u: Tensor, *, chunk_size: int) -> Tensor:
    """o_t = r_t^T S_{t-1} + (r_t . (u * k_t)) v_t: GLA's chunked form on k, v, log w shifted one token later.
    r, k, log_w: (batch, heads, seq, dk); v: (batch, heads, seq, dv); u: (heads, dk)."""
    shift = lambda z: F.pad(z, (0, 0, 1, -1))  # z_{t-1}, zero at t = 0
    past = chunked_linear_attention(r, shift(k), shift(v), shift(log_w), chunk_size=chunk_size)
    return past + (r * u[:, None] * k).sum(-1, keepdim=True) * v


def recurrent_rwkv6(r: Tensor, k: Tensor, v: Tensor, log_w: Tensor, u: Tensor) -> Tensor:
    """The same one token at a time, as fla's naive_recurrent_rwkv6: the reference for `chunked_rwkv6`."""
    b, h, t, dk = k.shape
    state, out = torch.zeros(b, h, dk, v.shape[-1], dtype=v.dtype, device=v.device), []
    for i in range(t):
        kv = k[:, :, i, :, None] * v[:, :, i, None, :]
        out.append(r[:, :, i, None, :] @ (state + u[:, :, None] * kv))
        state = log_w[:, :, i, :, None].exp() * state + kv
    return torch.cat(out, dim=2)


def _xavier(linear: nn.Linear) -> nn.Linear:
    nn.init.xavier_uniform_(linear.weight, gain=2**-2.5)  # fla's RWKV6Attention._initialize_weights
    return linear


class LoRA(nn.Module):
    """fla's LoRA: Linear(d, rank, no bias) -> activation -> Linear(rank, out, bias); first factor zero, second
    orthogonal x0.1 (gain sqrt(out / rank) when out > rank), bias zero."""

    def __init__(self, d_in: int, d_out: int, rank: int, activation: bool = True):
        super().__init__()
        self.down, self.up = nn.Linear(d_in, rank, bias=False), nn.Linear(rank, d_out)
        self.activation = torch.tanh if activation else (lambda z: z)
        nn.init.zeros_(self.down.weight)
        gain = math.sqrt(rank / d_out) if rank > d_out else 1.0  # shape (d_out, rank): sqrt(shape[1] / shape[0])
        nn.init.orthogonal_(self.up.weight, gain=gain * 0.1)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.activation(self.down(x)))


class RWKV6TimeMix(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 4,
        expand_k: Annotated[float, Gt(0)] = 0.5,
        expand_v: Annotated[float, Gt(0)] = 1.0,
        proj_low_rank_dim: Annotated[int, Ge(1)] = 32,
        gate_low_rank_dim: Annotated[int, Ge(1)] = 64,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
        chunk_size: Annotated[int, Ge(1)] = 16,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        key_dim, value_dim = round(d_model * expand_k), round(d_model * expand_v)
        for name, dim in (("expand_k", key_dim), ("expand_v", value_dim)):
            if dim < n_heads or dim % n_heads:
                raise ValueError(f"mixer.{name} must make d_model*{name} (d_model={d_model}) a multiple of n_heads")
        self.n_heads, self.chunk_size, self.rank = n_heads, chunk_size, proj_low_rank_dim
        self.dk, self.dv = key_dim // n_heads, value_dim // n_heads
        self.shift_mu = nn.Parameter(torch.zeros(d_model))  # fla's x_proj[0].mu
        self.shift_down = _xavier(nn.Linear(d_model, 5 * proj_low_rank_dim, bias=False))
        self.shift_up = _xavier(nn.Linear(5 * proj_low_rank_dim, d_model, bias=False))
        self.shift_bias = nn.Parameter(torch.zeros(5, d_model))
        self.r_proj = _xavier(nn.Linear(d_model, key_dim, bias=False))
        self.w_proj = LoRA(d_model, key_dim, gate_low_rank_dim)
        self.k_proj = _xavier(nn.Linear(d_model, key_dim, bias=False))
        self.v_proj = _xavier(nn.Linear(d_model, value_dim, bias=False))
        self.g_proj = _xavier(nn.Linear(d_model, value_dim, bias=False))
        self.bonus = nn.Parameter(torch.zeros(n_heads, self.dk))
        self.g_norm = nn.GroupNorm(n_heads, value_dim, eps=norm_eps)
        self.o_proj = _xavier(nn.Linear(value_dim, d_model, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x, lambda *args: chunked_rwkv6(*args, chunk_size=self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time (the RNN view)."""
        return self._mix(x, recurrent_rwkv6)

    def _mix(self, x: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        b, t, d = x.shape
        delta = F.pad(x, (0, 0, 1, -1)) - x  # x_{t-1} - x_t, x_{-1} = 0
        lora = torch.tanh(self.shift_down(x + delta * self.shift_mu)).view(b, t, 5, self.rank)
        mus = torch.einsum("btnr,hnr->btnh", lora, self.shift_up.weight.view(d, 5, self.rank)) + self.shift_bias
        xr, xw, xk, xv, xg = (x + delta * mu for mu in mus.unbind(-2))
        heads = lambda z, dh: full_precision(z.view(b, t, self.n_heads, dh).transpose(1, 2))
        r, k, v = heads(self.r_proj(xr), self.dk), heads(self.k_proj(xk), self.dk), heads(self.v_proj(xv), self.dv)
        log_w = -heads(self.w_proj(xw), self.dk).exp()  # log of the decay w_t, in float32
        with torch.autocast(x.device.type, enabled=False):
            o = scan(r, k, v, log_w, full_precision(self.bonus))
        o = self.g_norm(o.transpose(1, 2).reshape(b * t, -1)).view(b, t, -1)
        return self.o_proj((o * F.silu(full_precision(self.g_proj(xg)))).to(x.dtype))

    def flops_per_token(self, seq_len: int) -> int:
        # GLA's chunked form per head, forward (C = min(chunk, T)): intra-chunk scores with a decay per key channel
        # 4 C dk, their product with v 2 C dv, reading and updating the state 4 dk dv, the bonus 2 dk + dv; x3.
        c, dk, dv = min(self.chunk_size, seq_len), self.dk, self.dv
        return 3 * self.n_heads * (4 * c * dk + 2 * c * dv + 4 * dk * dv + 2 * dk + dv)
