"""Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"): the selective SSM block.

    x, z = in_proj(u);  x = silu(causal_conv(x));  dt, B, C = input-dependent (through x_proj and dt_proj)
    h_t = exp(dt_t A) h_t-1 + dt_t B_t x_t      (per channel d: N states; A = -exp(A_log), diagonal, S4D-real init)
    y_t = C_t h_t + D x_t;   out = out_proj(y * silu(z))
`forward` runs the scan chunked (`selective_scan`): exact, stable, and practical at length 1024 on a CPU;
`recurrent` is the token-by-token reference it is tested against.

`allow_neg_eigval` (Grazzi et al. 2025, "Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues")
is their modification of this block, the one their parity experiment trains: the transition 2 exp(dt_t A) - 1 in
(-1, 1) instead of exp(dt_t A) in (0, 1) (automl/unlocking_state_tracking, mamba_dev/mamba_ssm/ops/
selective_scan_interface.py, `selective_scan_ref`: deltaA = 2 * exp(delta A) - 1); nothing else changes.
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


def decay(dt_t: Tensor, A: Tensor, negative: bool = False) -> Tensor:
    """The state transition a_t = exp(dt_t A) in (0, 1], or 2 exp(dt_t A) - 1 in (-1, 1] with `negative`."""
    a = torch.exp(dt_t[..., None] * A)
    return 2 * a - 1 if negative else a


def selective_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int | None = None, negative: bool = False
) -> Tensor:
    """y_t = C_t . h_t with h_t = a_t h_t-1 + dt_t x_t B_t, h_-1 = 0, a_t = `decay`(dt_t, A, negative);
    x, dt: (b, L, d); A: (d, N); B, C: (b, L, N) -> y: (b, L, d).

    Chunked, with c = chunk_size (default ~sqrt(L), a power of two) and L = K c after padding:
      1. all K chunks at once, from a zero state, c steps: each chunk's own end state g_k;
      2. each chunk's total decay P_k = prod_{t in k} a_t (in log space, exp(A sum_{t in k} dt_t), when every a_t
         is positive; as the product, kept during step 1, when they may be negative), and K steps of
         H_k = P_k-1 H_k-1 + g_k-1: the true state entering each chunk;
      3. all chunks at once again from H_k, c steps, reading y_t = C_t . h_t out as they go.
    Python steps: 2c + K (96 at L = 1024, not 1024), on (b, K, d, N) tensors that stay in cache: measured on a
    CPU thread at L = 1024 it is 3x faster than materialising (b, L, d, N) states and cumulative decays. Only
    decays <= 1 are multiplied, so no exp overflows whatever dt is.
    """
    b, L, d = x.shape
    c = chunk_size or 2 ** round(math.log2(math.sqrt(L)))
    c = max(1, min(c, L))
    pad = -L % c
    if pad:  # dt = 0 in the padding: decay 1, input 0, so outputs before it are untouched
        x, dt, B, C = (F.pad(z, (0, 0, 0, pad)) for z in (x, dt, B, C))
    K = (L + pad) // c
    dt = dt.view(b, K, c, d)
    steps = list(
        zip(
            dt.unbind(2),
            (dt * x.view(b, K, c, d)).unbind(2),
            B.view(b, K, c, 1, -1).unbind(2),
            C.view(b, K, c, 1, -1).unbind(2),
            strict=True,
        )
    )
    g = x.new_zeros(b, K, d, A.shape[1])
    P = torch.ones_like(g) if negative else torch.exp(dt.sum(2)[..., None] * A)  # 2. (negative: the product, below)
    for dt_t, dx_t, B_t, _ in steps:  # 1.
        a_t = decay(dt_t, A, negative)
        g = a_t * g + dx_t[..., None] * B_t
        if negative:
            P = P * a_t
    H, starts = torch.zeros_like(g[:, 0]), []
    for P_k, g_k in zip(P.unbind(1), g.unbind(1), strict=True):
        starts.append(H)
        H = P_k * H + g_k
    h, ys = torch.stack(starts, 1), []
    for dt_t, dx_t, B_t, C_t in steps:  # 3.
        h = decay(dt_t, A, negative) * h + dx_t[..., None] * B_t
        ys.append((h * C_t).sum(-1))
    return torch.stack(ys, 2).reshape(b, K * c, d)[:, :L]


def selective_scan_recurrent(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, negative: bool = False) -> Tensor:
    """The same scan one token at a time: the reference for `selective_scan`."""
    h, ys = x.new_zeros(x.shape[0], x.shape[2], A.shape[1]), []
    for x_t, dt_t, B_t, C_t in zip(x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1), strict=True):
        h = decay(dt_t, A, negative) * h + (dt_t * x_t)[..., None] * B_t[:, None, :]
        ys.append((h * C_t[:, None, :]).sum(-1))
    return torch.stack(ys, 1)


class Mamba(Mixer):
    """Init as mamba_ssm (state-spaces/mamba mamba_ssm/modules/mamba_simple.py, Mamba.__init__): in_proj, x_proj,
    out_proj and the conv keep PyTorch's defaults; dt_proj's weight uniform(+-dt_rank^-0.5), its bias
    softplus^-1(dt) with dt log-uniform in [dt_min, dt_max], floored at dt_floor; A_log = log(1..N) (S4D-real);
    D = 1. A_log and D take no weight decay (`_no_weight_decay` there; `no_weight_decay` here). Not done: the
    LM's rescale of out_proj by 1/sqrt(n_layer) (mixer_seq_simple.py `_init_weights`), which needs the depth."""

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        d_state: Annotated[int, Ge(1)] = 16,
        d_conv: Annotated[int, Ge(1)] = 4,
        expand: Annotated[float, Gt(0)] = 2,
        dt_rank: Annotated[int, Ge(1)] | None = None,  # None: ceil(d_model / 16)
        dt_min: Annotated[float, Gt(0)] = 1e-3,
        dt_max: Annotated[float, Gt(0)] = 1e-1,
        dt_floor: Annotated[float, Ge(0)] = 1e-4,
        chunk_size: Annotated[int, Ge(1)] | None = None,  # None: about sqrt(seq_len)
        allow_neg_eigval: bool = False,  # transitions 2 exp(dt A) - 1 in (-1, 1) (Grazzi et al. 2025)
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        if not dt_min <= dt_max:
            raise ValueError(f"mixer.dt_min={dt_min} and dt_max={dt_max} must satisfy dt_min <= dt_max")
        self.d_inner, self.d_state, self.chunk_size = int(expand * d_model), d_state, chunk_size
        self.neg = allow_neg_eigval
        if self.d_inner < 1:
            raise ValueError(f"mixer.expand={expand} must make d_inner = int(expand * d_model={d_model}) at least 1")
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv = ShortConv(self.d_inner, d_conv)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        with torch.no_grad():  # in the reference's order, so that a seed draws the same numbers
            self.dt_proj.weight.uniform_(-(self.dt_rank**-0.5), self.dt_rank**-0.5)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return (self.A_log, self.D)

    def transition_range(self) -> tuple[float, float]:
        """The range of the (diagonal) state transition a_t."""
        return (-1.0 if self.neg else 0.0), 1.0

    def forward(self, u: Tensor) -> Tensor:
        return self._block(u, lambda *args: selective_scan(*args, chunk_size=self.chunk_size, negative=self.neg))

    def recurrent(self, u: Tensor) -> Tensor:
        """The same block with the scan run token by token."""
        return self._block(u, lambda *args: selective_scan_recurrent(*args, negative=self.neg))

    def _block(self, u: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(self.conv(x))
        delta, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(delta))
        A = -torch.exp(self.A_log.float())
        y = scan(x.float(), dt.float(), A, B.float(), C.float()).to(x.dtype) + self.D * x
        return self.out_proj(y * F.silu(z))

    def flops_per_token(self, seq_len: int) -> int:
        # The scan, per state element (d_inner * d_state of them): discretize exp(dt A) 2, input dt x B 1,
        # update a h + u 2, readout C h 2 -> 7 forward; training 3x. Independent of seq_len. (The chunked form
        # runs the first four twice, so it does ~11 forward; the count is the algorithm's, as for attention.)
        return 3 * 7 * self.d_inner * self.d_state
