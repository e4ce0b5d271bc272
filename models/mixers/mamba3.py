"""Mamba-3 (Lahoti et al. 2026, "Mamba-3: Improved Sequence Modeling using State Space Principles"), the SISO layer:
Mamba-2's SSD with a trapezoidal discretisation, data-dependent rotations of B and C (a complex-valued state written
as rotary embeddings), normalised and biased B and C, and no short convolution,

    z, x, B, C, dt, a, trap, theta = in_proj(u);  dt = softplus(dt + dt_bias);  A = -max(f(a), A_floor)
    lambda = sigmoid(trap);  alpha_t = exp(dt_t A_t);  phi_t = sum_{s<=t} dt_s pi tanh(theta_s)   (per head, fp32)
    q_t = R(phi_t)(rmsnorm(C_t) + C_bias),  k_t = R(phi_t)(rmsnorm(B_t) + B_bias)   (R: rotations of pairs (2i, 2i+1))
    h_t = alpha_t h_{t-1} + (1 - lambda_t) dt_t alpha_t k_{t-1} x_{t-1}^T + lambda_t dt_t k_t x_t^T
    y_t = h_t^T q_t + D x_t;   out = out_proj(y * silu(z))          (outproj_norm: out_proj(rmsnorm(y) * silu(z)))

following state-spaces/mamba `mamba_ssm/modules/mamba3.py` (Mamba3, is_mimo=False: projection layout, init, f the
heavy-tail activation, B/C biases initialised to 1, rope_fraction, only dt_bias and D without weight decay) and the
pure-PyTorch references in its `tests/ops/triton/test_mamba3_siso.py` (`mamba3_siso_step_ref`, the recurrence above;
`mamba3_siso_fwd_ref`, its quadratic form). fla's `fla/layers/mamba3.py` is the same layer with f = softplus
(`a_activation=softplus` here).

The chunked form splits the trapezoid into two SSD scans (models/mixers/mamba2.py's `chunked_ssd`) with the same
queries and decays: one over lambda_t dt_t k_t x_t^T, one over the previous token's (1 - lambda_t) dt_t alpha_t
k_{t-1} x_{t-1}^T. The authors' kernel instead scales k_s by lambda_s dt_s + (1 - lambda_{s+1}) dt_{s+1} and
subtracts the diagonal term it over-counts; the two are equal, and this one never reads token t+1 for output t, so
it is causal to the last bit. Scaled to archbench's widths: d_state 64 (theirs 128), head_dim 32 (theirs 64).
"""

import math
from collections.abc import Callable, Iterable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.mixers.base import Mixer
from models.mixers.linear_attention import full_precision
from models.mixers.mamba2 import chunked_ssd, dt_bias_init, ssd_heads


def heavy_tail(x: Tensor) -> Tensor:
    """1 + x for x >= 0, 1 / (1 - x) below: positive, continuous, with a heavy tail towards 0 (the authors' A)."""
    return x.clamp(min=0) + torch.reciprocal(1 - x.clamp(max=0))


def rotate_pairs(x: Tensor, phi: Tensor) -> Tensor:
    """Rotate the pairs (x_2i, x_2i+1) of the last dim by phi_i for i < phi.shape[-1]; the remaining pairs stay."""
    n = phi.shape[-1]
    pairs = x.unflatten(-1, (-1, 2))
    x0, x1, rest = pairs[..., :n, 0], pairs[..., :n, 1], pairs[..., n:, :]
    cos, sin = phi.cos(), phi.sin()
    rotated = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return torch.cat([rotated, rest], dim=-2).flatten(-2)


def recurrent_trapezoid(
    q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, dt: Tensor, lam: Tensor, *, chunk_size: int = 0
) -> Tensor:
    """The authors' step recurrence one token at a time (their `mamba3_siso_step_ref`): the reference for the
    chunked form. q, k: (b, h, t, N); v: (b, h, t, P); log_a, dt, lam: (b, h, t). Returns (b, h, t, P)."""
    state = torch.zeros(*k.shape[:2], k.shape[-1], v.shape[-1], dtype=v.dtype, device=v.device)
    k_prev, v_prev, ys = torch.zeros_like(k[:, :, 0]), torch.zeros_like(v[:, :, 0]), []
    for i in range(k.shape[2]):
        alpha = log_a[:, :, i].exp()
        beta, gamma = (1 - lam[:, :, i]) * dt[:, :, i] * alpha, lam[:, :, i] * dt[:, :, i]
        state = alpha[..., None, None] * state + beta[..., None, None] * k_prev[..., :, None] * v_prev[..., None, :]
        state = state + gamma[..., None, None] * k[:, :, i, :, None] * v[:, :, i, None, :]
        ys.append(q[:, :, i, None, :] @ state)
        k_prev, v_prev = k[:, :, i], v[:, :, i]
    return torch.cat(ys, dim=2)


def chunked_trapezoid(
    q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, dt: Tensor, lam: Tensor, *, chunk_size: int
) -> Tensor:
    """The same recurrence as two chunked SSD scans: the current token's term and the previous token's."""
    shift = lambda z: F.pad(z, (0, 0, 1, 0))[:, :, :-1]  # z_{t-1}, zero at t = 0
    current = chunked_ssd(q, k * (lam * dt)[..., None], v, log_a, chunk_size=chunk_size)
    previous_weight = (1 - lam) * dt * log_a.exp()
    previous = chunked_ssd(q, shift(k) * previous_weight[..., None], shift(v), log_a, chunk_size=chunk_size)
    return current + previous


class Mamba3(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        d_state: Annotated[int, Ge(2)] = 64,
        expand: Annotated[float, Gt(0)] = 2,
        head_dim: Annotated[int, Ge(1)] = 32,
        ngroups: Annotated[int, Ge(1)] = 1,
        rope_fraction: Literal[0.5, 1.0] = 0.5,
        dt_min: Annotated[float, Gt(0)] = 1e-3,
        dt_max: Annotated[float, Gt(0)] = 1e-1,
        dt_floor: Annotated[float, Gt(0)] = 1e-4,
        A_floor: Annotated[float, Gt(0)] = 1e-4,
        a_activation: Literal["heavy_tail", "softplus"] = "heavy_tail",
        outproj_norm: bool = False,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
        chunk_size: Annotated[int, Ge(1)] = 64,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        self.d_inner, self.n_heads = ssd_heads(d_model, expand, head_dim, ngroups)
        self.d_state, self.head_dim = d_state, head_dim
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"mixer.dt_min={dt_min} and dt_max={dt_max} must satisfy 0 < dt_min <= dt_max")
        rotated = int(d_state * rope_fraction) // 2 * 2  # the authors' split_tensor_size, rounded down to even
        self.n_angles = rotated // 2
        if self.n_angles < 1:
            raise ValueError(f"mixer.d_state={d_state} times rope_fraction={rope_fraction} leaves no pair to rotate")
        self.ngroups, self.chunk_size, self.A_floor, self.norm_eps = ngroups, chunk_size, A_floor, norm_eps
        self.a_activation, self.outproj_norm = a_activation, outproj_norm
        self.split = [self.d_inner, self.d_inner, ngroups * d_state, ngroups * d_state, *[self.n_heads] * 3]
        self.in_proj = nn.Linear(d_model, sum(self.split) + self.n_angles, bias=False)  # [z x B C dt a trap theta]
        self.dt_bias = nn.Parameter(dt_bias_init(self.n_heads, dt_min, dt_max, dt_floor))
        self.B_bias = nn.Parameter(torch.ones(self.n_heads, d_state))
        self.C_bias = nn.Parameter(torch.ones(self.n_heads, d_state))
        self.B_norm_weight = nn.Parameter(torch.ones(d_state))
        self.C_norm_weight = nn.Parameter(torch.ones(d_state))
        self.D = nn.Parameter(torch.ones(self.n_heads))
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner)) if outproj_norm else None
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return (self.dt_bias, self.D)  # the two the reference flags _no_weight_decay

    def forward(self, u: Tensor) -> Tensor:
        return self._block(u, chunked_trapezoid)

    def recurrent(self, u: Tensor) -> Tensor:
        """The same layer with the authors' step recurrence run token by token."""
        return self._block(u, recurrent_trapezoid)

    def _rms(self, z: Tensor, weight: Tensor) -> Tensor:
        return z * torch.rsqrt(z.square().mean(-1, keepdim=True) + self.norm_eps) * weight.float()

    def _block(self, u: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        b, t, _ = u.shape
        z, x, B, C, dt, a, trap, theta = self.in_proj(u).split([*self.split, self.n_angles], dim=-1)
        act = heavy_tail if self.a_activation == "heavy_tail" else F.softplus
        A = (-act(full_precision(a))).clamp(max=-self.A_floor)
        dt = F.softplus(full_precision(dt) + self.dt_bias.float())  # (b, t, h)
        log_a, lam = (A * dt).transpose(1, 2), torch.sigmoid(full_precision(trap)).transpose(1, 2)  # (b, h, t)
        step = torch.tanh(full_precision(theta))[:, :, None, :] * math.pi * dt[..., None]  # (b, t, h, n_angles)
        phi = step.cumsum(1)
        phi = (phi - 2 * math.pi * torch.floor(phi / (2 * math.pi))).transpose(1, 2)  # mod 2 pi, as the authors
        per_head = self.n_heads // self.ngroups
        heads = lambda m, w, bias: rotate_pairs(
            self._rms(full_precision(m).view(b, t, self.ngroups, self.d_state), w)
            .transpose(1, 2)
            .repeat_interleave(per_head, dim=1)  # head i reads group i // per_head, as the reference
            + bias.float()[:, None],
            phi,
        )  # (b, h, t, d_state)
        x = full_precision(x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2))
        with torch.autocast(u.device.type, enabled=False):
            q, k = heads(C, self.C_norm_weight, self.C_bias), heads(B, self.B_norm_weight, self.B_bias)
            y = scan(q, k, x, log_a, dt.transpose(1, 2), lam, chunk_size=self.chunk_size)
            y = y + self.D.float()[:, None, None] * x
        y = y.transpose(1, 2).reshape(b, t, self.d_inner)
        if self.norm_weight is not None:  # the gated RMSNorm, norm before gate, per head
            y = self._rms(y.view(b, t, self.n_heads, self.head_dim), self.norm_weight.view(self.n_heads, -1))
            y = y.reshape(b, t, self.d_inner)
        y = y * F.silu(full_precision(z))
        return self.out_proj(y.to(u.dtype))

    def flops_per_token(self, seq_len: int) -> int:
        # Two chunked SSD scans per head (the current and the previous token's term), each forward 2C(N + P) for the
        # intra-chunk scores and their product, 4NP to read and update the state; x3 for forward + backward.
        c, n, p = min(self.chunk_size, seq_len), self.d_state, self.head_dim
        return 2 * 3 * self.n_heads * (2 * c * (n + p) + 4 * n * p)
