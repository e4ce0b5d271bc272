"""Causal convolutions shared by the long-convolution and state-space mixers: FFT convolution (zero-padded to 2L, so
it is linear, not circular, and output t sees inputs <= t only), a short depthwise convolution, and the implicit
long filter of Hyena (Poli et al. 2023), an MLP over positional features with exponential-decay modulation.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def fft_conv(u: Tensor, k: Tensor) -> Tensor:
    """Causal convolution y[..., t] = sum_{s<=t} k[..., t-s] u[..., s] along the last axis.

    u: (..., channels, L); k: (channels, L_k), or any shape that broadcasts against u, with L_k >= L (only the first
    L taps matter).
    Both are zero-padded to n = 2L, so the circular convolution of the FFT equals the linear one on [0, L).
    Computed in at least fp32 (bf16 FFTs lose too much precision), returned in u's dtype.
    """
    L, dtype = u.shape[-1], torch.promote_types(u.dtype, torch.float32)
    n = 2 * L
    u_f = torch.fft.rfft(u.to(dtype), n=n)
    k_f = torch.fft.rfft(k[..., :L].to(dtype), n=n)
    return torch.fft.irfft(u_f * k_f, n=n)[..., :L].to(u.dtype)


def fft_conv_flops(seq_len: int) -> int:
    """Training FLOPs per token per channel of `fft_conv`: a real FFT of size n costs ~2.5 n log2 n (half of the
    complex 5 n log2 n); forward = rfft(u) + irfft at n = 2L plus a complex product on L+1 bins (6 each), i.e.
    per token 2 * 2.5 * 2L * log2(2L) / L + 6 = 10 log2(2L) + 6; backward costs two more such convolutions, so
    training is 3x. The filter's own FFT is shared by the batch and left out."""
    return round(3 * (10 * math.log2(2 * seq_len) + 6))


class ShortConv(nn.Module):
    """Causal depthwise convolution over (batch, L, channels): y[t] = sum_{j<k} w[j] x[t-k+1+j] (left padding)."""

    def __init__(self, channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size={kernel_size} must be positive")
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0))
        return self.conv(x).transpose(1, 2)


class ImplicitFilter(nn.Module):
    """Hyena's implicit long filter (Poli et al. 2023, Sec. 3.3): h(t) = MLP(z(t)) * (exp(-alpha_c t) + shift).

    z(t) = [t, cos(2 pi f_j l / L), -sin(2 pi f_j l / L)] for bands f_j = linspace(1e-4, B - 1, B), B = (emb_dim-1)/2,
    t = l / (L - 1) in [0, 1]; the MLP has sine activations sin(w * x) with a learned frequency w. The decay rates
    alpha_c are fixed, spread over channels from |log target| / slow_decay to |log target| / fast_decay, so channel
    c's filter has fallen to `target` after a fraction slow..fast of the maximum length.

    The MLP weights are plain Parameters, not nn.Linear, so that the backbone's small GPT-2 init (std 0.02) does
    not flatten the filter: it keeps PyTorch's default uniform(+-1/sqrt(fan_in)) init, as the reference modules
    declare it (safari's HyenaFilter, Zoology's Filter). Their language models then re-initialise every nn.Linear,
    these included, N(0, 0.02): a known deviation (docs/fidelity.md).
    """

    def __init__(
        self,
        channels: int,
        max_seq_len: int,
        *,
        emb_dim: int = 5,
        width: int = 64,
        depth: int = 2,
        frequency: float = 1.0,
        fast_decay: float = 0.3,
        slow_decay: float = 1.5,
        target: float = 1e-2,
        shift: float = 0.0,
    ):
        super().__init__()
        if emb_dim < 3 or emb_dim % 2 == 0:
            raise ValueError(f"filter emb_dim={emb_dim} must be odd and >= 3 (time plus sine and cosine bands)")
        if width < 1 or depth < 0:
            raise ValueError(f"filter width={width} and depth={depth} must be positive and non-negative")
        z, t = filter_features(max_seq_len, emb_dim)
        self.register_buffer("z", z, persistent=False)  # (L, emb_dim)
        self.register_buffer("t", t, persistent=False)  # (L, 1)
        max_rate, min_rate = -math.log(target) / fast_decay, -math.log(target) / slow_decay
        self.register_buffer("rates", torch.linspace(min_rate, max_rate, channels), persistent=False)
        self.shift = shift
        layers = list(zip([emb_dim] + [width] * depth, [width] * (depth + 1), strict=True))  # (in, out)
        self.weights = nn.ParameterList(_uniform(d_out, d_in) for d_in, d_out in layers)
        self.biases = nn.ParameterList(_uniform(d_out, fan_in=d_in) for d_in, d_out in layers)
        self.out = _uniform(channels, width)  # no bias, as in Hyena
        self.freq = nn.Parameter(torch.full((width,), float(frequency)))

    def forward(self, seq_len: int) -> Tensor:
        """The filters for the first seq_len positions: (channels, seq_len)."""
        h = self.z[:seq_len]
        for w, b in zip(self.weights, self.biases, strict=True):
            h = torch.sin(self.freq * F.linear(h, w, b))
        h = F.linear(h, self.out)  # (L, channels)
        decay = torch.exp(-self.t[:seq_len] * self.rates)
        return (h * (decay + self.shift)).T


def filter_features(max_seq_len: int, emb_dim: int) -> tuple[Tensor, Tensor]:
    """Hyena's positional features z(t) = [t, cos(2 pi f_j l / L), -sin(2 pi f_j l / L)], (L, emb_dim), bands
    f_j = linspace(1e-4, B - 1, B), B = (emb_dim - 1) / 2, and t = l / (L - 1), (L, 1)."""
    bands = (emb_dim - 1) // 2
    pos = torch.arange(max_seq_len, dtype=torch.float32)[:, None]
    angle = 2 * math.pi * pos / max_seq_len * torch.linspace(1e-4, bands - 1, bands)[None]
    t = pos / max(max_seq_len - 1, 1)
    return torch.cat([t, angle.cos(), -angle.sin()], -1), t


def _uniform(*shape: int, fan_in: int | None = None) -> nn.Parameter:
    bound = 1 / math.sqrt(fan_in if fan_in is not None else shape[-1])
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
