"""S4D (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space Models"): a diagonal
SSM per channel, computed as a convolution kernel through a Vandermonde product and applied by FFT.

Per channel, N/2 complex modes with A_n = -exp(log_a_n) + i a_im_n (S4D-Lin init: -1/2 + i pi n), step
dt = exp(log_dt) (log-uniform in [dt_min, dt_max]), B = 1, and zero-order hold (H3 uses the bilinear transform):
    h_t = exp(dt A) h_{t-1} + (exp(dt A) - 1) / A * u_t,     y_t = 2 Re(C h_t) + D u_t
unrolled, the kernel is K_l = 2 Re(sum_n C_n (exp(dt A_n) - 1) / A_n * exp(dt A_n l)), so y = K * u + D u. The
block follows the paper's standalone layer: y -> GELU -> linear to 2d -> GLU.
"""

import math
from collections.abc import Iterable
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, MultipleOf
from torch import Tensor, nn

from models.mixers._conv import fft_conv, fft_conv_flops
from models.mixers.base import Mixer

StateSize = Annotated[int, Ge(2), MultipleOf(2)]  # N: complex modes come in conjugate pairs
Step = Annotated[float, Gt(0)]


class S4DKernel(nn.Module):
    """Diagonal SSM kernels for `channels` channels with d_state/2 complex modes each (conjugate pairs give N).

    Init as the S4 repository's S4DKernel (state-spaces/s4 models/s4/s4d.py): log dt uniform in
    [log dt_min, log dt_max], C complex standard normal, A = -1/2 + i pi n (S4D-Lin). log_dt, log_a and a_im are
    registered there with weight_decay 0 (`register`): `no_weight_decay` returns them."""

    def __init__(
        self, channels: int, d_state: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1, discretization: str = "zoh"
    ):
        super().__init__()
        if discretization not in ("zoh", "bilinear"):
            raise ValueError(f"discretization={discretization!r} must be zoh or bilinear")
        self.discretization = discretization
        if d_state < 2 or d_state % 2:
            raise ValueError(f"mixer.d_state={d_state} must be even and >= 2 (complex modes come in conjugate pairs)")
        if not dt_min <= dt_max:
            raise ValueError(f"mixer.dt_min={dt_min} and dt_max={dt_max} must satisfy dt_min <= dt_max")
        modes = d_state // 2
        log_dt = torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.C = nn.Parameter(torch.randn(channels, modes, 2) * math.sqrt(0.5))  # complex normal, as real pairs
        self.log_a = nn.Parameter(torch.full((channels, modes), math.log(0.5)))
        self.a_im = nn.Parameter(math.pi * torch.arange(modes, dtype=torch.float32).repeat(channels, 1))

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return (self.log_dt, self.log_a, self.a_im)

    def _discrete(self) -> tuple[Tensor, Tensor, Tensor]:
        """(log A-bar, B-bar, C), complex, each (channels, modes). Zero-order hold (S4D): A-bar = exp(dt A),
        B-bar = (exp(dt A) - 1) / A. Bilinear (H3's SSKernelDiag default): A-bar = (1 + dt A/2) / (1 - dt A/2),
        B-bar = dt / (1 - dt A/2)."""
        A = torch.complex(-torch.exp(self.log_a), self.a_im)
        dt = torch.exp(self.log_dt)[:, None]
        dtA = A * dt
        if self.discretization == "bilinear":
            return torch.log((1 + dtA / 2) / (1 - dtA / 2)), dt / (1 - dtA / 2), torch.view_as_complex(self.C)
        return dtA, (torch.exp(dtA) - 1) / A, torch.view_as_complex(self.C)

    def forward(self, seq_len: int) -> Tensor:
        """The kernel K: (channels, seq_len)."""
        log_a_bar, B, C = self._discrete()
        vandermonde = torch.exp(log_a_bar[..., None] * torch.arange(seq_len, device=B.device))  # (channels, modes, L)
        return 2 * torch.einsum("hn,hnl->hl", C * B, vandermonde).real

    def recurrent(self, u: Tensor) -> Tensor:
        """The same map as fft_conv(u, forward(L)), one step at a time: u (..., channels, L) -> (..., channels, L)."""
        log_a_bar, B, C = self._discrete()
        a = torch.exp(log_a_bar)
        h = torch.zeros(*u.shape[:-1], a.shape[-1], dtype=a.dtype, device=u.device)
        ys = []
        for u_t in u.unbind(-1):
            h = a * h + B * u_t[..., None]
            ys.append(2 * (C * h).sum(-1).real)
        return torch.stack(ys, -1).to(u.dtype)


class S4D(Mixer):
    """Init as the S4 repository's standalone S4D (state-spaces/s4 models/s4/s4d.py): the kernel's (S4DKernel),
    D standard normal, and the output map PyTorch's default (there a Conv1d of kernel 1, here the same nn.Linear).
    No weight decay on the kernel's A and dt, as there; C, D and the output map follow archbench's recipe."""

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        d_state: StateSize = 64,
        dt_min: Step = 1e-3,
        dt_max: Step = 1e-1,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        self.kernel = S4DKernel(d_model, d_state, dt_min, dt_max)
        self.D = nn.Parameter(torch.randn(d_model))
        self.out = nn.Linear(d_model, 2 * d_model)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return self.kernel.no_weight_decay()

    def forward(self, x: Tensor) -> Tensor:
        u = x.transpose(1, 2)  # (b, d, L)
        return self._output(fft_conv(u, self.kernel(u.shape[-1])), u)

    def recurrent(self, x: Tensor) -> Tensor:
        """The SSM as a recurrence, token by token: the reference for `forward`."""
        u = x.transpose(1, 2)
        return self._output(self.kernel.recurrent(u), u)

    def _output(self, y: Tensor, u: Tensor) -> Tensor:
        y = F.gelu(y + self.D[:, None] * u).transpose(1, 2)
        return F.glu(self.out(y), dim=-1)

    def flops_per_token(self, seq_len: int) -> int:
        # One FFT convolution per channel; the kernel (d * N/2 * L complex terms) is shared by the batch, left out.
        return self.d_model * fft_conv_flops(seq_len)
