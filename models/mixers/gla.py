"""Gated linear attention (Yang et al. 2023, GLA): S_t = diag(alpha_t) S_{t-1} + k_t v_t^T, y_t = q_t S_t, with
data-dependent gates alpha_t = sigmoid(x_t W_a1 W_a2 + b)^(1/tau) per key dimension (low rank 16, tau = 16),
key dim d/2, value dim d, a norm per head and a swish output gate: out = W_o (swish(x W_r) * RMSNorm(y)).
Trained in the chunk-wise form with the gates' log decays cumulated in log space. On CUDA with flash-linear-attention
installed (`pip install 'archbench[gpu]'`), `kernel=auto` runs the same recurrence on its Triton kernel (`chunk_gla`);
the pure-PyTorch form stays the reference (`kernel=torch`), and tests/test_gpu.py compares the two."""

import importlib.util
from collections.abc import Callable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.init import normal_init_
from models.mixers.base import Mixer
from models.mixers.delta_net import resolve_fla
from models.mixers.linear_attention import (
    ChunkSize,
    chunked_linear_attention,
    full_precision,
    recurrent_linear_attention,
)

HAVE_FLA = importlib.util.find_spec("fla") is not None


class GatedLinearAttention(Mixer):
    """Weights: N(0, 0.02), biases zero, as flash-linear-attention's GLA model initialises its layers
    (fla/models/gla/modeling_gla.py `_init_weights`, initializer_range 0.02)."""

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 4,
        expand_k: Annotated[float, Gt(0)] = 0.5,
        gate_rank: Annotated[int, Ge(1)] = 16,
        gate_temperature: Annotated[float, Gt(0)] = 16.0,
        chunk_size: ChunkSize = 8,
        kernel: Literal["auto", "torch", "fla"] = "auto",
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        if kernel == "fla" and not HAVE_FLA:
            raise ValueError("mixer.kernel=fla needs flash-linear-attention: pip install 'archbench[gpu]'")
        self.kernel = kernel
        key_dim = int(d_model * expand_k)
        if d_model % n_heads:
            raise ValueError(f"mixer.n_heads={n_heads} must divide d_model={d_model}")
        if key_dim < n_heads or key_dim % n_heads:
            raise ValueError(f"mixer.n_heads={n_heads} must divide the key dim d_model*expand_k={key_dim}")
        self.n_heads, self.key_dim, self.chunk_size = n_heads, key_dim, chunk_size
        self.dk, self.dv = key_dim // n_heads, d_model // n_heads
        self.tau = gate_temperature
        self.q = nn.Linear(d_model, key_dim, bias=False)
        self.k = nn.Linear(d_model, key_dim, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.r = nn.Linear(d_model, d_model, bias=False)  # the output gate
        self.gate = nn.Sequential(nn.Linear(d_model, gate_rank, bias=False), nn.Linear(gate_rank, key_dim))
        self.norm = nn.RMSNorm(self.dv, eps=1e-6)
        self.out = nn.Linear(d_model, d_model, bias=False)
        normal_init_(self)

    def kernel_for(self, device_type: str, bf16: bool) -> str:
        return resolve_fla(self.kernel, device_type, bf16, needs_bf16=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel_for(x.device.type, False) == "fla":
            return self._mix(x, fla_gla)
        return self._mix(x, lambda q, k, v, g: chunked_linear_attention(q, k, v, g, chunk_size=self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time (the RNN view)."""
        return self._mix(x, recurrent_linear_attention)

    def _mix(self, x: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        b, t, d = x.shape
        heads = lambda z, dh: full_precision(z.view(b, t, self.n_heads, dh).transpose(1, 2))
        q, k, v = heads(self.q(x), self.dk) * self.dk**-0.5, heads(self.k(x), self.dk), heads(self.v(x), self.dv)
        log_alpha = F.logsigmoid(heads(self.gate(x), self.dk)) / self.tau  # log of sigmoid(.)^(1/tau), <= 0
        with torch.autocast(x.device.type, enabled=False):
            y = scan(q, k, v, log_alpha)
        y = self.norm(y).transpose(1, 2).reshape(b, t, d)
        return self.out(F.silu(self.r(x)) * y.to(x.dtype))

    def flops_per_token(self, seq_len: int) -> int:  # the same recurrence whichever kernel runs it
        # Chunked form per head, forward: intra-chunk scores with a decay per key dim, 4CK (q*k, * exp(b_t - b_i),
        # sum), their product with v, 2CV, plus reading and updating the K x V state, 4KV (K, V = key and value
        # head dims, C = min(chunk, T)); x3 for forward + backward.
        c, kd, vd = min(self.chunk_size, seq_len), self.dk, self.dv
        return 3 * self.n_heads * (4 * c * kd + 2 * c * vd + 4 * kd * vd)


def fla_gla(q: Tensor, k: Tensor, v: Tensor, log_alpha: Tensor) -> Tensor:
    """flash-linear-attention's chunked GLA kernel on (batch, heads, seq, dim) tensors, q already scaled."""
    from fla.ops.gla import chunk_gla

    heads_last = lambda z: z.transpose(1, 2).contiguous()  # fla's layout: (batch, seq, heads, dim)
    out = chunk_gla(heads_last(q), heads_last(k), heads_last(v), heads_last(log_alpha), scale=1.0)
    return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)
