"""Hyena operator (Poli et al. 2023, "Hyena Hierarchy: Towards Larger Convolutional Language Models"), order N.

Projections to N + 1 streams (x_0..x_{N-1} and v), each through a short causal depthwise conv, then
    z_0 = v,  z_n = h_n * (x_{N-n} z_{n-1}) + b_n (x_{N-n} z_{n-1})  for n = 1..N-1,  y = out_proj(x_0 z_{N-1})
where h_n * . is a causal long convolution (FFT, padded to 2L) with an implicit filter (models/mixers/_conv.py) and
b_n a learned per-channel skip. This is the reference code's (safari, Zoology) counting: order 2, the default, has
three projections and one long convolution between two gates, y = x_0 (h * (x_1 v) + b x_1 v).
"""

from collections.abc import Iterable
from typing import Annotated

import torch
from annotated_types import Ge
from torch import Tensor, nn

from models.init import normal_init_
from models.mixers._conv import ImplicitFilter, ShortConv, fft_conv, fft_conv_flops
from models.mixers.base import Mixer


class Hyena(Mixer):
    """Init: in_proj and out_proj N(0, 0.02) with zero biases (safari src/models/sequence/long_conv_lm.py
    `_init_weights`), the short conv nn.Conv1d's default, the skips standard normal (safari hyena.py HyenaFilter
    `bias`). The filter MLP keeps PyTorch's default uniform init (see docs/init_and_decay.md: safari's LM init
    would also give it N(0, 0.02)). safari trains the filter MLP with weight_decay `wd=0` (HyenaFilter's `_optim`):
    `no_weight_decay` returns the filter's parameters."""

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        order: Annotated[int, Ge(2)] = 2,  # at least one long convolution between two gates
        short_kernel: Annotated[int, Ge(1)] = 3,
        filter_emb_dim: Annotated[int, Ge(3)] = 5,  # odd: time plus sine and cosine bands
        filter_width: Annotated[int, Ge(1)] = 64,
        filter_depth: Annotated[int, Ge(0)] = 2,
        filter_frequency: float = 1.0,
        bias: bool = True,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        self.order = order
        self.in_proj = nn.Linear(d_model, (order + 1) * d_model, bias=bias)
        self.short = ShortConv((order + 1) * d_model, short_kernel)
        self.filter = ImplicitFilter(
            (order - 1) * d_model,
            max_seq_len,
            emb_dim=filter_emb_dim,
            width=filter_width,
            depth=filter_depth,
            frequency=filter_frequency,
        )
        self.skip = nn.Parameter(torch.randn((order - 1) * d_model))
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        normal_init_(self.in_proj)
        normal_init_(self.out_proj)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return self.filter.parameters()

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        streams = self.short(self.in_proj(x)).transpose(1, 2).split(d, dim=1)  # each (b, d, t)
        gates, v = streams[:-1], streams[-1]
        filters = self.filter(t).view(self.order - 1, d, t)
        skips = self.skip.view(self.order - 1, d, 1)
        for n in range(self.order - 1):  # gates[-1] first, as in the reference code; gates[0] closes
            v = v * gates[-1 - n]
            v = fft_conv(v, filters[n]) + skips[n] * v
        return self.out_proj((v * gates[0]).transpose(1, 2))

    def flops_per_token(self, seq_len: int) -> int:
        # (order - 1) FFT long convolutions over d_model channels; gates and skips are O(d) and left out.
        return (self.order - 1) * self.d_model * fft_conv_flops(seq_len)
