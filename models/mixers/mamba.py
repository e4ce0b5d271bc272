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
      1. every chunk at once, from a zero state: c sequential steps on (b, K, d, N) tensors -> local states g_t;
      2. decay since the chunk's start, in log space: P_t = exp(cumsum_{s<=t in chunk} dt_s A) (<= 1, so stable);
      3. the state entering each chunk: K sequential steps H_k = P_end(k-1) H_k-1 + g_end(k-1);
      4. h_t = g_t + P_t H_k(t).
    Python steps: c + K (64 at L = 1024) instead of L; only decays <= 1 are multiplied, so nothing overflows.
    """
    b, L, d = x.shape
    c = chunk_size or 2 ** round(math.log2(math.sqrt(L)))
    c = max(1, min(c, L))
    pad = -L % c
    if pad:  # dt = 0 in the padding: decay 1, input 0, so outputs before it are untouched
        x, dt, B, C = (F.pad(z, (0, 0, 0, pad)) for z in (x, dt, B, C))
    K = (L + pad) // c
    log_a = (dt[..., None] * A).view(b, K, c, d, -1)  # (b, K, c, d, N), <= 0
    u = ((dt * x)[..., None] * B[:, :, None, :]).view(b, K, c, d, -1)
    g, local = torch.zeros_like(u[:, :, 0]), []
    for a_t, u_t in zip(log_a.exp().unbind(2), u.unbind(2), strict=True):  # 1.
        g = a_t * g + u_t
        local.append(g)
    g = torch.stack(local, 2)
    P = log_a.cumsum(2).exp()  # 2.
    H, starts = torch.zeros_like(g[:, 0, 0]), []
    for P_end, g_end in zip(P[:, :, -1].unbind(1), g[:, :, -1].unbind(1), strict=True):  # 3.
        starts.append(H)
        H = P_end * H + g_end
    h = g + P * torch.stack(starts, 1)[:, :, None]  # 4.
    y = (h * C.view(b, K, c, 1, -1)).sum(-1)
    return y.reshape(b, K * c, d)[:, :L]


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
        # update a h + u 2, readout C h 2 -> 7 forward; training 3x. Independent of seq_len.
        return 3 * 7 * self.d_inner * self.d_state
