"""Mamba-2 (Dao & Gu 2024, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured
State Space Duality"): the SSD layer, a selective SSM whose decay is one scalar per head and step,

    z, x, B, C, dt = in_proj(u);  x, B, C = silu(causal_conv(x, B, C));  dt = softplus(dt + dt_bias)
    h_t = a_t h_{t-1} + dt_t x_t B_t^T   (per head: a (head_dim x d_state) state),   a_t = exp(dt_t A), A = -exp(A_log)
    y_t = h_t C_t + D x_t;   out = out_proj(rmsnorm(y * silu(z)))

following state-spaces/mamba `mamba_ssm/modules/mamba2_simple.py` (parametrisation and init: A = U(1, 16), dt
log-uniform in [1e-3, 0.1], D = 1, A_log, D and dt_bias without weight decay, conv with bias, the gated RMSNorm with
the gate before the norm, `norm_before_gate=False`) and its `ssd_minimal.py` (the chunked form: exact attention-like
products within a chunk, the state passed from chunk to chunk). B and C are shared by the heads of each of `ngroups`
groups. Scaled to archbench's widths: head_dim 32 (theirs 64-128) and chunk 64 (theirs 256); d_state 64 as theirs.

`allow_neg_eigval` (Grazzi et al. 2025, "Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues")
uses their modification, a_t = 2 exp(dt_t A) - 1 in (-1, 1) instead of (0, 1): the chunked form then carries the
decays' signs apart from their log magnitudes. On CUDA with flash-linear-attention installed, `kernel=auto` runs the
positive-decay scan on fla's `chunk_simple_gla` (q = C, k = B, v = dt x, log decay dt A); its kernels keep decays in
log space, so with negative eigenvalues `auto` stays on the PyTorch form and `kernel=fla` is refused.
"""

import math
from collections.abc import Callable, Iterable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.mixers._conv import ShortConv
from models.mixers.base import Mixer, autocast_bf16
from models.mixers.delta_net import check_kernel, heads_last, resolve_fla
from models.mixers.linear_attention import full_precision

TINY = 1e-30  # |a| floor for a decay of exactly 0 (2 e^{dt A} = 1), so log|a| stays finite: 1e-30 is 0 at any precision


def dt_bias_init(n: int, dt_min: float, dt_max: float, dt_floor: float) -> Tensor:
    """softplus^-1(dt) for n steps dt log-uniform in [dt_min, dt_max], floored at dt_floor: the Mamba family's init."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))


def chunked_ssd(
    q: Tensor, k: Tensor, v: Tensor, log_abs: Tensor, negative: Tensor | None = None, *, chunk_size: int
) -> Tensor:
    """y_t = S_t^T q_t with S_t = a_t S_{t-1} + k_t v_t^T, S_0 = 0, chunk by chunk (SSD; q = C, k = B, v = dt x).

    q, k: (batch, heads, seq, d_state); v: (batch, heads, seq, head_dim); log_abs = log|a_t| <= 0 and `negative`
    (a_t < 0; None: all a_t > 0): (batch, heads, seq). Within a chunk the decay between i <= t is
    prod_{i<j<=t} a_j = (-1)^(N_t - N_i) e^{b_t - b_i}, b the cumulative log|a| and N the cumulative count of
    negative a; every exponent taken is <= 0. Padding past the end is future: it changes nothing before it.
    """
    b, h, t, n_state = k.shape
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = lambda z: F.pad(z, (0, 0, 0, n * c - t)).unflatten(2, (n, c))  # (b, h, n, c, d)
    q, k, v = pad(q), pad(k), pad(v)
    cum = pad(log_abs[..., None]).cumsum(3)  # (b, h, n, c, 1)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    within = (cum - cum.transpose(-1, -2)).masked_fill(~causal, float("-inf")).exp()  # (b, h, n, c, c)
    last = cum[:, :, :, -1:]
    q_in, k_out, chunk_decay = q * cum.exp(), k * (last - cum).exp(), last.exp()  # chunk_decay: (b, h, n, 1, 1)
    if negative is not None:  # the signs: (-1)^(N_t - N_i), from the chunk start (q_in) and to its end (k_out)
        count = pad(negative.to(q.dtype)[..., None]).cumsum(3)
        parity = lambda m: 1 - 2 * torch.remainder(m, 2)
        within = within * parity(count - count.transpose(-1, -2))
        q_in, k_out = q_in * parity(count), k_out * parity(count[:, :, :, -1:] - count)
        chunk_decay = chunk_decay * parity(count[:, :, :, -1:])
    y_intra = ((q @ k.transpose(-1, -2)) * within) @ v
    updates = k_out.transpose(-1, -2) @ v  # (b, h, n, d_state, head_dim): each chunk's own contribution
    state, states = torch.zeros_like(updates[:, :, 0]), []
    for i in range(n):
        states.append(state)
        state = chunk_decay[:, :, i] * state + updates[:, :, i]
    y = y_intra + q_in @ torch.stack(states, dim=2)
    return y.flatten(2, 3)[:, :, :t]


def recurrent_ssd(q: Tensor, k: Tensor, v: Tensor, log_abs: Tensor, negative: Tensor | None = None) -> Tensor:
    """The same recurrence one token at a time: the reference for `chunked_ssd`."""
    a = log_abs.exp() if negative is None else torch.where(negative, -1.0, 1.0).to(log_abs) * log_abs.exp()
    state, ys = torch.zeros(*k.shape[:2], k.shape[-1], v.shape[-1], dtype=v.dtype, device=v.device), []
    for i in range(k.shape[2]):
        state = a[:, :, i, None, None] * state + k[:, :, i, :, None] * v[:, :, i, None, :]
        ys.append(q[:, :, i, None, :] @ state)
    return torch.cat(ys, dim=2)


def ssd_heads(d_model: int, expand: float, head_dim: int, ngroups: int) -> tuple[int, int]:
    """(d_inner, n_heads) of the Mamba-2 family's head split (mamba2, mamba3, log_linear_mamba2): d_inner = expand *
    d_model in heads of head_dim, the heads in ngroups groups of B and C; ValueError naming the field otherwise."""
    d_inner = expand * d_model
    if d_inner != int(d_inner) or int(d_inner) % head_dim:
        raise ValueError(f"mixer.head_dim={head_dim} must divide d_inner = expand * d_model = {d_inner}")
    n_heads = int(d_inner) // head_dim
    if n_heads % ngroups:
        raise ValueError(f"mixer.ngroups={ngroups} must divide the number of heads d_inner/head_dim = {n_heads}")
    return int(d_inner), n_heads


class Mamba2(Mixer):
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
        A_init_min: Annotated[float, Gt(0)] = 1.0,
        A_init_max: Annotated[float, Gt(0)] = 16.0,
        dt_min: Annotated[float, Gt(0)] = 1e-3,
        dt_max: Annotated[float, Gt(0)] = 1e-1,
        dt_floor: Annotated[float, Gt(0)] = 1e-4,
        allow_neg_eigval: bool = False,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
        chunk_size: Annotated[int, Ge(1)] = 64,
        kernel: Literal["auto", "torch", "fla"] = "auto",
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        check_kernel(kernel)
        if kernel == "fla" and allow_neg_eigval:
            raise ValueError(
                "mixer.kernel=fla cannot run mixer.allow_neg_eigval=true (fla keeps decays in log "
                "space): use kernel=auto or torch"
            )
        self.d_inner, self.n_heads = ssd_heads(d_model, expand, head_dim, ngroups)
        self.d_state, self.head_dim = d_state, head_dim
        if not 0 < A_init_min <= A_init_max:
            raise ValueError(
                f"mixer.A_init_min={A_init_min} and A_init_max={A_init_max} must satisfy 0 < A_init_min <= A_init_max"
            )
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"mixer.dt_min={dt_min} and dt_max={dt_max} must satisfy 0 < dt_min <= dt_max")
        self.ngroups, self.chunk_size, self.kernel, self.neg = ngroups, chunk_size, kernel, allow_neg_eigval
        self.norm_eps = norm_eps
        conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + conv_dim + self.n_heads, bias=False)  # [z, x, B, C, dt]
        self.conv = ShortConv(conv_dim, d_conv, bias=True)
        self.dt_bias = nn.Parameter(dt_bias_init(self.n_heads, dt_min, dt_max, dt_floor))
        self.A_log = nn.Parameter(torch.empty(self.n_heads).uniform_(A_init_min, A_init_max).log())
        self.D = nn.Parameter(torch.ones(self.n_heads))
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return (self.A_log, self.D, self.dt_bias)  # as in the reference (their _no_weight_decay flags)

    def transition_range(self) -> tuple[float, float]:
        """The range of the state transition a_t (one scalar per head)."""
        return (-1.0 if self.neg else 0.0), 1.0

    def kernel_for(self, device_type: str, bf16: bool) -> str:
        return "torch" if self.neg else resolve_fla(self.kernel, device_type, bf16, needs_bf16=False)

    def forward(self, u: Tensor) -> Tensor:
        if self.kernel_for(u.device.type, autocast_bf16(u)) == "fla":
            return self._block(u, fla_ssd)
        return self._block(u, lambda *args: chunked_ssd(*args, chunk_size=self.chunk_size))

    def recurrent(self, u: Tensor) -> Tensor:
        """The same layer with the scan run token by token."""
        return self._block(u, recurrent_ssd)

    def _block(self, u: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        b, t, _ = u.shape
        z, xbc, dt = self.in_proj(u).split(
            [self.d_inner, self.d_inner + 2 * self.ngroups * self.d_state, self.n_heads], dim=-1
        )
        xbc = F.silu(self.conv(xbc))
        x, B, C = xbc.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        dt = F.softplus(full_precision(dt) + self.dt_bias.float()).transpose(1, 2)  # (b, h, t)
        log_a = -torch.exp(self.A_log.float())[:, None] * dt  # log exp(dt A) <= 0
        negative = None
        if self.neg:  # a = 2 e^{dt A} - 1: |a| and its sign
            a = 2 * log_a.exp() - 1
            negative, log_a = a < 0, a.abs().clamp(min=TINY).log()
        per_head = self.n_heads // self.ngroups
        groups = lambda m: full_precision(m.view(b, t, self.ngroups, self.d_state).transpose(1, 2)).repeat_interleave(
            per_head, dim=1
        )  # (b, h, t, d_state): head i reads group i // per_head, as in the reference
        x = full_precision(x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2))
        with torch.autocast(u.device.type, enabled=False):
            y = scan(groups(C), groups(B), x * dt[..., None], log_a, *([negative] if self.neg else []))
            y = y + self.D.float()[:, None, None] * x
        y = y.transpose(1, 2).reshape(b, t, self.d_inner) * F.silu(full_precision(z))  # the gate before the norm
        y = y.view(b, t, self.ngroups, -1)  # the norm per group, as Mamba2 with group_size = d_inner / ngroups
        y = (y * torch.rsqrt(y.square().mean(-1, keepdim=True) + self.norm_eps)).view(b, t, self.d_inner)
        return self.out_proj((y * self.norm_weight).to(u.dtype))

    def flops_per_token(self, seq_len: int) -> int:  # the same recurrence whichever kernel runs it
        # Chunked SSD per head, forward: intra-chunk scores C.B and their product with dt x, 2C(N + P), plus reading
        # and updating the N x P state, 4NP (N = d_state, P = head_dim, C = min(chunk, T)); x3 for fwd + bwd.
        c, n, p = min(self.chunk_size, seq_len), self.d_state, self.head_dim
        return 3 * self.n_heads * (2 * c * (n + p) + 4 * n * p)


def fla_ssd(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor) -> Tensor:
    """fla's chunked simple-GLA kernel (a scalar decay per head) on (batch, heads, seq, dim) tensors, unscaled."""
    from fla.ops.simple_gla import chunk_simple_gla

    out = chunk_simple_gla(heads_last(q), heads_last(k), heads_last(v), heads_last(log_a), scale=1.0)
    return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)
