"""BaseConv (Arora et al. 2023, "Zoology: Measuring and Improving Recall in Efficient Language Models"), with the
semantics of zoology/mixers/base_conv.py: a gated convolution

    y = linear(x) * conv(x) + x

where conv is a short causal depthwise convolution (kernel_size > 0) or a long one over the whole sequence
(kernel_size = -1; Zoology's implicit filter by default, a small ReLU MLP over Hyena's positional features, or an
explicit learned filter of max_seq_len taps).
A list of kernel sizes is striped over layers by layer index, so the default [3, -1] alternates a short-conv layer
with a long-conv layer, the combination Zoology found to recall best. The `+ x` is Zoology's own residual, kept so
that published numbers compare (the backbone adds its residual on top).
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.init import normal_init_
from models.mixers._conv import ShortConv, fft_conv, fft_conv_flops, filter_features
from models.mixers.base import Mixer


class BaseConv(Mixer):
    """Init: the projection N(0, 0.02) with zero bias, as Zoology's model init gives every linear layer
    (zoology/model.py `_init_weights`); the short conv nn.Conv1d's default; the implicit filter PyTorch's default
    uniform (Zoology's model init would give its MLP N(0, 0.02) too: docs/init_and_decay.md). Zoology decays every
    parameter (zoology/train.py AdamW over model.parameters()): no exclusions here."""

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        kernel_size: int | Sequence[int] = (3, -1),
        implicit_long_conv: bool = True,
        residual: bool = True,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        sizes = [kernel_size] if isinstance(kernel_size, int) else list(kernel_size)
        if not sizes or any(k == 0 or k < -1 for k in sizes):
            raise ValueError(f"mixer.kernel_size={kernel_size} must be a positive size or -1 (long), or a list of them")
        self.kernel_size = sizes[layer_idx % len(sizes)]
        self.residual = residual
        self.projection = normal_init_(nn.Linear(d_model, d_model))
        if self.kernel_size > 0:
            self.conv = ShortConv(d_model, self.kernel_size)
        elif implicit_long_conv:
            self.filter = ImplicitLongFilter(d_model, max_seq_len)
        else:
            # explicit taps; Zoology draws them from N(0, 1), scaled here by 1/sqrt(L) so the output's variance
            # does not grow with the length
            self.filter = nn.Parameter(torch.randn(d_model, max_seq_len) / math.sqrt(max_seq_len))

    def forward(self, x: Tensor) -> Tensor:
        y = self.projection(x) * self._conv(x)
        return y + x if self.residual else y

    def _conv(self, x: Tensor) -> Tensor:
        if self.kernel_size > 0:
            return self.conv(x)
        t = x.shape[1]
        k = self.filter(t) if isinstance(self.filter, ImplicitLongFilter) else self.filter[:, :t]
        u = x.transpose(1, 2)
        return (fft_conv(u, k) + u).transpose(1, 2)  # Zoology's fft_conv adds u to the convolution

    def flops_per_token(self, seq_len: int) -> int:
        # A long layer does one FFT convolution per channel; a short one only uses its taps (counted by 6 * params).
        return self.d_model * fft_conv_flops(seq_len) if self.kernel_size < 0 else 0


class ImplicitLongFilter(nn.Module):
    """Zoology's implicit long filter (zoology/mixers/convolution.py, ImplicitLongConvolution): k(t) = MLP(z(t)),
    Linear(emb_dim, hidden) -> ReLU -> Linear(hidden, channels), over Hyena's positional features z(t) (emb_dim 3:
    t, cos, -sin), with neither Hyena's sine activations nor its decay modulation. Weights N(0, 0.02) and zero
    biases: Zoology's LanguageModel re-initialises every nn.Linear so (zoology/model.py, _init_weights)."""

    def __init__(self, channels: int, max_seq_len: int, emb_dim: int = 3, hidden: int = 16):
        super().__init__()
        z, _ = filter_features(max_seq_len, emb_dim)
        self.register_buffer("z", z, persistent=False)  # (L, emb_dim)
        self.mlp = nn.Sequential(nn.Linear(emb_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, seq_len: int) -> Tensor:
        """The filters for the first seq_len positions: (channels, seq_len)."""
        return self.mlp(self.z[:seq_len]).T
