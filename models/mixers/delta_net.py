"""DeltaNet (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence Length").

The delta rule on a (key dim x value dim) fast-weight state per head, with q and k L2-normalised:

    S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,    o_t = S_t^T q_t / sqrt(d_k)

i.e. v_t is written over what S_{t-1} already stores under k_t, at the rate beta_t = sigmoid(x_t W_b) per head; the
transition's eigenvalues lie in [1 - beta_t, 1] = [0, 1]. With `allow_neg_eigval` (Grazzi et al. 2025, "Unlocking
State-Tracking in Linear RNNs Through Negative Eigenvalues") beta_t = 2 sigmoid(.) in [0, 2], so they lie in
[-1, 1], which lets the layer track parity.

The layer follows flash-linear-attention's `fla/layers/delta_net.py` with its defaults: q, k, v projections, each
through a causal depthwise convolution (size 4, no bias) and SiLU, q and k L2-normalised per head (fla's
`use_qk_l2norm_in_kernel`: x / sqrt(sum x^2 + 1e-6)), an RMSNorm per head on the output (or, with `use_gate`, the
gated RMSNorm rmsnorm(o) * swish(x W_g)), then W_o. Trained in the chunked WY/UT form of the paper
(`chunked_delta_rule`: within a chunk the written values come from one unit-lower-triangular solve; only the state
crosses chunks); `recurrent` runs it token by token. On CUDA with flash-linear-attention installed, `kernel=auto`
runs the same recurrence on its Triton kernel (`fla.ops.delta_rule.chunk_delta_rule`); `kernel=torch` forces the
PyTorch form, the reference (tests/test_frontier_forms.py compares the two on a GPU, and the PyTorch forms with
fla's naive ones).
This file also holds the gated kernels Gated DeltaNet shares (`log_decay`: a scalar decay per head and step).
"""

import importlib.util
import math
from collections.abc import Callable, Iterable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.mixers._conv import ShortConv
from models.mixers.base import Mixer, autocast_bf16
from models.mixers.linear_attention import full_precision

HAVE_FLA = importlib.util.find_spec("fla") is not None


def chunked_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_decay: Tensor | None = None,
    *,
    chunk_size: int,
    read_key: Tensor | None = None,
    read_decayed: bool = True,
) -> Tensor:
    """o_t = S_t^T q_t with S_t = D_t S_{t-1} + k_t u_t^T, u_t = beta_t (v_t - p_t^T R_t), S_0 = 0, chunk by chunk.

    q, k: (batch, heads, seq, dk), q already scaled; v: (batch, heads, seq, dv); beta: (batch, heads, seq);
    log_decay g = log diag(D_t): None (DeltaNet, D = I), (batch, heads, seq) for a scalar decay per head (Gated
    DeltaNet) or (batch, heads, seq, dk) for one per key channel (KDA), <= 0. The read key p is k (the delta rule)
    or `read_key` (Comba's p); the state read is R_t = D_t S_{t-1} (`read_decayed`, the delta rule: S_t =
    (I - beta_t k_t p_t^T) D_t S_{t-1} + beta_t k_t v_t^T) or S_{t-1} (Comba: S_t = (D_t - beta_t k_t p_t^T)
    S_{t-1} + beta_t k_t v_t^T).
    Within a chunk, with b_t the cumulative log decay from the chunk start and r_t = b_t (read decayed) or b_{t-1},
    the written values u_t solve the unit lower-triangular system
        u_t + sum_{i<t} beta_t sum_d p_td k_id e^{r_td - b_id} u_i = beta_t v_t - beta_t (p_t e^{r_t})^T S_0,
    so u = T (beta v) - T (beta p e^r) S_0 with T = (I + A)^-1 (the UT transform, one triangular solve for all
    chunks at once); then o_t = (q_t e^{b_t})^T S_0 + sum_{i<=t} sum_d q_td k_id e^{b_td - b_id} u_i and the state
    leaving the chunk is e^{b_C} S_0 + sum_i (k_i e^{b_C - b_i}) u_i^T. Every exponent taken is <= 0. Padding past
    the end is future: it changes nothing before it.
    """
    b, h, t, dk = k.shape
    dv = v.shape[-1]
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = lambda z: F.pad(z, (0, 0, 0, n * c - t)).unflatten(2, (n, c))  # (b, h, n, c, d)
    q, k, v, beta = pad(q), pad(k), pad(v), pad(beta[..., None])
    p = k if read_key is None else pad(read_key)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    strict = causal.tril(-1)
    if log_decay is None:
        cum = read = None
    else:
        g = pad(log_decay if log_decay.dim() == 4 else log_decay[..., None])  # (b, h, n, c, dk | 1)
        cum = g.cumsum(3)  # b_t
        read = cum if read_decayed else F.pad(cum[..., :-1, :], (0, 0, 1, 0))  # r_t: b_t or b_{t-1} (not b_t - g_t,
        # whose rounding can exceed b_{t-1} when the decays are large)
    A = beta * decayed_products(p, k, read, cum, strict)
    eye = torch.eye(c, dtype=q.dtype, device=q.device)
    rhs = torch.cat([beta * v, beta * (p if read is None else p * read.exp())], dim=-1)
    u, w = torch.linalg.solve_triangular(eye + A, rhs, upper=False, unitriangular=True).split([dv, dk], dim=-1)
    scores = decayed_products(q, k, cum, cum, causal)
    q_in = q if cum is None else q * cum.exp()
    last = None if cum is None else cum[:, :, :, -1:]
    k_out = k if last is None else k * (last - cum).exp()
    chunk_decay = None if last is None else last.exp().transpose(-1, -2)  # (b, h, n, dk | 1, 1)
    state, out = torch.zeros(b, h, dk, dv, dtype=v.dtype, device=v.device), []
    for i in range(n):  # only the (dk, dv) state is carried from chunk to chunk
        u_i = u[:, :, i] - w[:, :, i] @ state
        out.append(q_in[:, :, i] @ state + scores[:, :, i] @ u_i)
        if chunk_decay is not None:
            state = chunk_decay[:, :, i] * state
        state = state + k_out[:, :, i].transpose(-1, -2) @ u_i
    return torch.stack(out, dim=2).flatten(2, 3)[:, :, :t]


def decayed_products(x: Tensor, y: Tensor, cum_x: Tensor | None, cum_y: Tensor | None, mask: Tensor) -> Tensor:
    """P[t, i] = sum_d x_td y_id e^{cum_x td - cum_y id} where mask[t, i], else 0, per chunk: x, y (..., c, dk);
    cum_x, cum_y None (no decay) or (..., c, dk | 1). Masked exponents become -inf before exp, so none overflows."""
    if cum_x is None:
        return (x @ y.transpose(-1, -2)).masked_fill(~mask, 0.0)
    diff = (cum_x[..., :, None, :] - cum_y[..., None, :, :]).masked_fill(~mask[..., None], float("-inf"))
    if cum_x.shape[-1] == 1:  # one decay per head: decay the x.y products
        return (x @ y.transpose(-1, -2)) * diff.squeeze(-1).exp()
    return (x[..., :, None, :] * y[..., None, :, :] * diff.exp()).sum(-1)  # one per key channel


def recurrent_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_decay: Tensor | None = None,
    *,
    read_key: Tensor | None = None,
    read_decayed: bool = True,
) -> Tensor:
    """The same recurrence one token at a time (the RNN view): the reference for `chunked_delta_rule`."""
    b, h, t, dk = k.shape
    p = k if read_key is None else read_key
    state, out = torch.zeros(b, h, dk, v.shape[-1], dtype=v.dtype, device=v.device), []
    for i in range(t):
        decay = None
        if log_decay is not None:
            decay = (log_decay[:, :, i, :, None] if log_decay.dim() == 4 else log_decay[:, :, i, None, None]).exp()
        if decay is not None and read_decayed:
            state = decay * state
        read = p[:, :, i, None, :] @ state  # (b, h, 1, dv)
        if decay is not None and not read_decayed:
            state = decay * state
        written = beta[:, :, i, None, None] * (v[:, :, i, None, :] - read)
        state = state + k[:, :, i, :, None] @ written
        out.append(q[:, :, i, None, :] @ state)
    return torch.cat(out, dim=2)


def delta_rule_flops(n_heads: int, dk: int, dv: int, chunk: int) -> int:
    """Training FLOPs per token of `chunked_delta_rule` (x3 for forward + backward). Forward per head and token, C
    the chunk: k k^T and q k^T 4 C dk; the triangular solve with dv + dk right-hand sides C (dk + dv); the
    intra-chunk product with u 2 C dv; reading the state for u and o and writing it 6 dk dv."""
    return 3 * n_heads * (chunk * (5 * dk + 3 * dv) + 6 * dk * dv)


def l2_normalise(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(sum x^2 + eps) over the last axis: the formula of fla's l2norm kernel."""
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True) + eps)


def check_kernel(kernel: str) -> None:
    """kernel=fla only where flash-linear-attention is installed (the choices themselves are the signature's Literal,
    checked when the mixer is built: models/mixers/base.py)."""
    if kernel == "fla" and not HAVE_FLA:
        raise ValueError("mixer.kernel=fla needs flash-linear-attention: pip install 'archbench[gpu]'")


def resolve_fla(kernel: str, device_type: str, bf16: bool, needs_bf16: bool = True) -> str:
    """What `kernel` runs: `auto` is fla's kernel on CUDA where it is installed (and, for kernels that take only
    bf16 inputs, under bf16 autocast: at precision=fp32 the scan stays in float32, on the PyTorch form), else torch."""
    if kernel != "auto":
        return kernel
    return "fla" if HAVE_FLA and device_type == "cuda" and (bf16 or not needs_bf16) else "torch"


def use_fla(kernel: str, x: Tensor, needs_bf16: bool = True) -> bool:
    return resolve_fla(kernel, x.device.type, autocast_bf16(x), needs_bf16) == "fla"


def heads_last(z: Tensor) -> Tensor:
    """(batch, heads, seq, ...) <-> (batch, seq, heads, ...): fla's layout."""
    return z.transpose(1, 2).contiguous()


def qkv_projections(d_model: int, key_dim: int, value_dim: int) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    """The query, key and value projections of fla's delta-rule layers (no bias), made in that order."""
    return (
        nn.Linear(d_model, key_dim, bias=False),
        nn.Linear(d_model, key_dim, bias=False),
        nn.Linear(d_model, value_dim, bias=False),
    )


def short_convs(dims: Iterable[int], conv_size: int, use: bool) -> nn.ModuleList | None:
    """fla's ShortConvolution (no bias) on each of q, k and v of widths `dims`, or None without `use`."""
    return nn.ModuleList(ShortConv(dim, conv_size, bias=False) for dim in dims) if use else None


def output_layers(
    d_model: int, value_dim: int, head_v_dim: int, use_gate: bool, norm_eps: float
) -> tuple[nn.Linear | None, nn.RMSNorm, nn.Linear]:
    """The output gate's projection (None without `use_gate`), the per-head output RMSNorm and the output
    projection of fla's delta-rule layers, made in that order."""
    return (
        nn.Linear(d_model, value_dim, bias=False) if use_gate else None,
        nn.RMSNorm(head_v_dim, eps=norm_eps),
        nn.Linear(value_dim, d_model, bias=False),
    )


def inverse_softplus_dt(n: int, dt_min: float = 1e-3, dt_max: float = 1e-1, dt_floor: float = 1e-4) -> Tensor:
    """Mamba's dt_bias init, as fla's delta-rule layers use it: softplus^-1(dt), dt log-uniform in [dt_min, dt_max]."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))


class DeltaNet(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 4,
        expand_k: Annotated[float, Gt(0)] = 1.0,
        expand_v: Annotated[float, Gt(0)] = 1.0,
        use_gate: bool = False,
        use_short_conv: bool = True,
        conv_size: Annotated[int, Ge(1)] = 4,
        allow_neg_eigval: bool = False,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
        chunk_size: Annotated[int, Ge(1)] = 64,
        kernel: Literal["auto", "torch", "fla"] = "auto",
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        check_kernel(kernel)
        key_dim, value_dim = check_dims(d_model, n_heads, expand_k, expand_v)
        self.n_heads, self.chunk_size, self.kernel = n_heads, chunk_size, kernel
        self.dk, self.dv = key_dim // n_heads, value_dim // n_heads
        self.beta_scale = 2.0 if allow_neg_eigval else 1.0
        self.q_proj, self.k_proj, self.v_proj = qkv_projections(d_model, key_dim, value_dim)
        self.b_proj = nn.Linear(d_model, n_heads, bias=False)
        self.convs = short_convs((key_dim, key_dim, value_dim), conv_size, use_short_conv)
        self.g_proj, self.o_norm, self.o_proj = output_layers(d_model, value_dim, self.dv, use_gate, norm_eps)

    def kernel_for(self, device_type: str, bf16: bool) -> str:
        return resolve_fla(self.kernel, device_type, bf16)

    def forward(self, x: Tensor) -> Tensor:
        if use_fla(self.kernel, x):
            return self._mix(x, fla_delta_rule)
        return self._mix(x, lambda q, k, v, beta: chunked_delta_rule(q, k, v, beta, chunk_size=self.chunk_size))

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
        with torch.autocast(x.device.type, enabled=False):
            o = scan(q, k, v, beta)
        return self.o_proj(output_norm(self, o, x).to(x.dtype))

    def flops_per_token(self, seq_len: int) -> int:  # the same recurrence whichever kernel runs it
        # the scan's: delta_rule_flops = 3 * H * (C (5 dk + 3 dv) + 6 dk dv), C = min(chunk, T)
        return delta_rule_flops(self.n_heads, self.dk, self.dv, min(self.chunk_size, seq_len))


def check_dims(d_model: int, n_heads: int, expand_k: float, expand_v: float | None) -> tuple[int, int | None]:
    """The key and value dims d_model * expand_k and d_model * expand_v (None: not checked), multiples of n_heads."""
    if n_heads < 1:
        raise ValueError(f"mixer.n_heads={n_heads} must be positive")
    dims = []
    for name, expand in (("expand_k", expand_k), ("expand_v", expand_v)):
        if expand is None:
            dims.append(None)
            continue
        dim = round(d_model * expand)
        if expand <= 0 or abs(dim - d_model * expand) > 1e-6 or dim % n_heads or dim < n_heads:
            raise ValueError(
                f"mixer.{name}={expand} must make d_model*{name} (d_model={d_model}) an integer "
                f"multiple of n_heads={n_heads}"
            )
        dims.append(dim)
    return dims[0], dims[1]


def value_head_dim(dk: int, expand_v: float) -> int:
    """fla's value head dim, key head dim * expand_v, which must be a positive integer."""
    dv = round(dk * expand_v)
    if expand_v <= 0 or abs(dv - dk * expand_v) > 1e-6 or dv < 1:
        raise ValueError(
            f"mixer.expand_v={expand_v} must make the value head dim (key head dim {dk} * expand_v) an integer"
        )
    return dv


def qkv_heads(mixer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k and v of fla's delta-rule layers: projected, through the short convolutions (where the mixer has them),
    SiLU, and split into heads, (batch, heads, seq, dk or dv) in full precision."""
    b, t, _ = x.shape
    q, k, v = mixer.q_proj(x), mixer.k_proj(x), mixer.v_proj(x)
    if mixer.convs is not None:
        q, k, v = (conv(z) for conv, z in zip(mixer.convs, (q, k, v), strict=True))
    heads = lambda z, dh: full_precision(F.silu(z).view(b, t, mixer.n_heads, dh).transpose(1, 2))
    return heads(q, mixer.dk), heads(k, mixer.dk), heads(v, mixer.dv)


def output_norm(mixer: nn.Module, o: Tensor, x: Tensor) -> Tensor:
    """fla's output norm of the delta-rule layers: RMSNorm per head, or with an output gate rmsnorm(o) * swish(g)
    (fla's FusedRMSNormGated); o: (batch, heads, seq, dv) -> (batch, seq, heads * dv)."""
    b, h, t, dv = o.shape
    o = mixer.o_norm(o.transpose(1, 2))  # (b, t, h, dv)
    if mixer.g_proj is not None:
        o = o * F.silu(full_precision(mixer.g_proj(x))).view(b, t, h, dv)
    return o.reshape(b, t, h * dv)


def fla_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor) -> Tensor:
    """fla's chunked delta-rule kernel on (batch, heads, seq, dim) tensors, q already normalised and scaled. It
    refuses float32 (fla 0.6 asserts it), so float32 q, k, v go to it in bfloat16 and its output comes back in v's
    dtype; the PyTorch form (kernel=torch) stays in float32."""
    from fla.ops.delta_rule import chunk_delta_rule

    dtype = v.dtype
    low = (lambda z: z.to(torch.bfloat16)) if dtype == torch.float32 else (lambda z: z)
    out = chunk_delta_rule(*(heads_last(low(z)) for z in (q, k, v)), heads_last(beta), scale=1.0)
    return (out[0] if isinstance(out, tuple) else out).transpose(1, 2).to(dtype)
