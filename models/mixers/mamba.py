"""Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"): the selective SSM block.

    x, z = in_proj(u);  x = silu(causal_conv(x));  dt, B, C = input-dependent (through x_proj and dt_proj)
    h_t = exp(dt_t A) h_t-1 + dt_t B_t x_t      (per channel d: N states; A = -exp(A_log), diagonal, S4D-real init)
    y_t = C_t h_t + D x_t;   out = out_proj(y * silu(z))
`forward` runs the scan chunked (`selective_scan`): exact, stable, and practical at length 1024 on a CPU;
`recurrent` is the token-by-token reference it is tested against.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.mixers._conv import ShortConv


def selective_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int | None = None) -> Tensor:
    """y_t = C_t . h_t with h_t = exp(dt_t A) h_t-1 + dt_t x_t B_t, h_-1 = 0; x, dt: (b, L, d); A: (d, N);
    B, C: (b, L, N) -> y: (b, L, d).

    Chunked, with c = chunk_size (default ~sqrt(L), a power of two) and L = K c after padding:
      1. all K chunks at once, from a zero state, c steps: each chunk's own end state g_k;
      2. each chunk's total decay in log space, P_k = exp(A sum_{t in k} dt_t), and K steps of
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
    steps = list(zip(dt.unbind(2), (dt * x.view(b, K, c, d)).unbind(2), B.view(b, K, c, 1, -1).unbind(2),
                     C.view(b, K, c, 1, -1).unbind(2), strict=True))
    g = x.new_zeros(b, K, d, A.shape[1])
    for dt_t, dx_t, B_t, _ in steps:  # 1.
        g = torch.exp(dt_t[..., None] * A) * g + dx_t[..., None] * B_t
    P = torch.exp(dt.sum(2)[..., None] * A)  # 2.
    H, starts = torch.zeros_like(g[:, 0]), []
    for P_k, g_k in zip(P.unbind(1), g.unbind(1), strict=True):
        starts.append(H)
        H = P_k * H + g_k
    h, ys = torch.stack(starts, 1), []
    for dt_t, dx_t, B_t, C_t in steps:  # 3.
        h = torch.exp(dt_t[..., None] * A) * h + dx_t[..., None] * B_t
        ys.append((h * C_t).sum(-1))
    return torch.stack(ys, 2).reshape(b, K * c, d)[:, :L]


def selective_scan_recurrent(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """The same scan one token at a time: the reference for `selective_scan`."""
    h, ys = x.new_zeros(x.shape[0], x.shape[2], A.shape[1]), []
    for x_t, dt_t, B_t, C_t in zip(x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1), strict=True):
        h = torch.exp(dt_t[..., None] * A) * h + (dt_t * x_t)[..., None] * B_t[:, None, :]
        ys.append((h * C_t[:, None, :]).sum(-1))
    return torch.stack(ys, 1)


class Mamba(nn.Module):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_floor: float = 1e-4,
        chunk_size: int | None = None,
    ):
        super().__init__()
        for name, value in [("d_state", d_state), ("d_conv", d_conv), ("expand", expand)]:
            if value <= 0:
                raise ValueError(f"mixer.{name}={value} must be positive")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"mixer.chunk_size={chunk_size} must be positive or null (about sqrt(seq_len))")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"mixer.dt_min={dt_min} and dt_max={dt_max} must satisfy 0 < dt_min <= dt_max")
        self.d_inner, self.d_state, self.chunk_size = int(expand * d_model), d_state, chunk_size
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv = ShortConv(self.d_inner, d_conv)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        # dt_proj as bare Parameters: the backbone's init (std 0.02, zero bias) would undo Mamba's dt init, which
        # puts softplus(bias) log-uniform in [dt_min, dt_max].
        bound = self.dt_rank**-0.5
        self.dt_weight = nn.Parameter(torch.empty(self.d_inner, self.dt_rank).uniform_(-bound, bound))
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.A_log._no_weight_decay = self.D._no_weight_decay = True  # as in the reference code
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: Tensor) -> Tensor:
        return self._block(u, lambda *args: selective_scan(*args, chunk_size=self.chunk_size))

    def recurrent(self, u: Tensor) -> Tensor:
        """The same block with the scan run token by token."""
        return self._block(u, selective_scan_recurrent)

    def _block(self, u: Tensor, scan) -> Tensor:
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(self.conv(x))
        delta, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(F.linear(delta, self.dt_weight, self.dt_bias))
        A = -torch.exp(self.A_log.float())
        y = scan(x.float(), dt.float(), A, B.float(), C.float()).to(x.dtype) + self.D * x
        return self.out_proj(y * F.silu(z))

    def flops_per_token(self, seq_len: int) -> int:
        # The scan, per state element (d_inner * d_state of them): discretize exp(dt A) 2, input dt x B 1,
        # update a h + u 2, readout C h 2 -> 7 forward; training 3x. Independent of seq_len. (The chunked form
        # runs the first four twice, so it does ~11 forward; the count is the algorithm's, as for attention.)
        return 3 * 7 * self.d_inner * self.d_state
