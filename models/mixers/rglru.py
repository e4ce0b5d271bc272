"""Griffin's recurrent block with the RG-LRU (De et al. 2024, "Griffin"; the temporal mixer of Hawk): two branches
from x, y = GeLU(W_y x) and u = RG-LRU(Conv1D(W_x x)), output W_out (u * y). The RG-LRU per channel:

    r_t = sigmoid(G_a u_t + b_a),  i_t = sigmoid(G_i u_t + b_i)          (block-diagonal G: one block per head)
    log a_t = -c * r_t * softplus(Lambda),  c = 8                         (a_t = sigma(-Lambda)^(c r_t))
    h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t * u_t)                       (h_0 = i_0 * u_0: no normalisation at t=0)

Follows google-deepmind/recurrentgemma, recurrentgemma/torch/{modules.py RecurrentBlock, layers.py RGLRU, Conv1D,
BlockDiagonalLinear}: its init, as N(0, variance): W_x, W_y ~ N(0, 1/d); W_out ~ N(0, final_w_init_variance_scale /
lru_width), which Griffin sets to 2 / n_layers; G_a, G_i ~ N(0, 1 / block width); Conv1D ~ N(0, 0.01 / conv_size);
zero biases; Lambda such that sigma(-Lambda) is uniform on the ring of radii [0.9, 0.999] (its square is uniform).
Also its tanh-approximated GeLU, the sqrt whose gradient is clipped at 1000, and its no-decay set (every RG-LRU
parameter, as its fine-tuning colab's mask). Note: the paper says a^c is uniform in [0.9, 0.999]; the code makes
sigma(-Lambda) itself so (the code is followed). Trained with a chunked scan in log space (models/mixers/_scan.py);
`recurrent(x)` is the loop.
"""

import math
from collections.abc import Callable, Iterable
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.mixers._conv import ShortConv
from models.mixers._scan import diagonal_scan, diagonal_scan_recurrent
from models.mixers.base import Mixer
from models.mixers.linear_attention import full_precision

C = 8.0  # the paper's fixed constant c
MAX_SQRT_GRADIENT = 1000.0


class _SqrtBoundDerivative(torch.autograd.Function):
    """sqrt(x) whose gradient 1 / (2 sqrt(x)) is capped at MAX_SQRT_GRADIENT (as recurrentgemma, for bf16)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.sqrt()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad / (4 * x).clamp(min=1 / MAX_SQRT_GRADIENT**2).sqrt()


class BlockDiagonalLinear(nn.Module):
    """y = x W + b with W block-diagonal: the channels split into `n_blocks` heads, each mixed within itself."""

    def __init__(self, width: int, n_blocks: int):
        super().__init__()
        self.n_blocks, block = n_blocks, width // n_blocks
        self.w = nn.Parameter(torch.randn(n_blocks, block, block) * math.sqrt(1.0 / block))
        self.b = nn.Parameter(torch.zeros(n_blocks, block))

    def forward(self, x: Tensor) -> Tensor:
        xh = x.unflatten(-1, (self.n_blocks, -1))
        return (torch.einsum("...hi,hij->...hj", xh, self.w) + self.b).flatten(-2)


class RGLRU(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 4,
        lru_width: Annotated[int, Ge(1)] | None = None,
        conv_size: Annotated[int, Ge(1)] = 4,
        final_w_init_variance_scale: Annotated[float, Gt(0)] = 1.0,
        chunk_size: Annotated[int, Ge(1)] = 4,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        width = d_model if lru_width is None else lru_width
        if width % n_heads:
            raise ValueError(f"mixer.n_heads={n_heads} must divide the RG-LRU width {width} (mixer.lru_width)")
        self.width, self.chunk_size = width, chunk_size
        self.linear_x, self.linear_y = nn.Linear(d_model, width), nn.Linear(d_model, width)
        self.linear_out = nn.Linear(width, d_model)
        self.conv = ShortConv(width, conv_size)
        self.input_gate, self.a_gate = BlockDiagonalLinear(width, n_heads), BlockDiagonalLinear(width, n_heads)
        self.a_param = nn.Parameter(torch.empty(width))
        with torch.no_grad():
            for w in (self.linear_x.weight, self.linear_y.weight):
                w.normal_(0.0, math.sqrt(1.0 / d_model))
            self.linear_out.weight.normal_(0.0, math.sqrt(final_w_init_variance_scale / width))
            for bias in (self.linear_x.bias, self.linear_y.bias, self.linear_out.bias, self.conv.conv.bias):
                bias.zero_()
            self.conv.conv.weight.normal_(0.0, math.sqrt(0.01 / conv_size))
            radius = (torch.empty(width).uniform_(0.9**2 + 1e-8, 0.999**2 + 1e-8)).log() * 0.5  # log r, r^2 uniform
            self.a_param.copy_(torch.log(torch.exp(-radius) - 1.0))  # softplus(Lambda) = -log r

    def forward(self, x: Tensor) -> Tensor:
        return self._block(x, lambda u, log_a: diagonal_scan(u, log_a, self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time (the RNN view)."""
        return self._block(x, diagonal_scan_recurrent)

    def _block(self, x: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        y = F.gelu(self.linear_y(x), approximate="tanh")
        u = self.conv(self.linear_x(x))
        gate_x, gate_a = torch.sigmoid(self.input_gate(u)), torch.sigmoid(self.a_gate(u))
        log_a = -C * gate_a * F.softplus(self.a_param)
        multiplier = _SqrtBoundDerivative.apply(1 - torch.exp(2 * log_a))
        first = torch.zeros_like(multiplier[:, :1])  # t = 0 starts the sequence: no normalisation, no decay
        multiplier = torch.cat([first + 1, multiplier[:, 1:]], dim=1)
        log_a = torch.cat([first, log_a[:, 1:]], dim=1)
        with torch.autocast(x.device.type, enabled=False):  # the scan accumulates in float32, as recurrentgemma's
            h = scan(full_precision(u * gate_x * multiplier), full_precision(log_a))
        return self.linear_out(h.to(y.dtype) * y)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return [self.a_param, *self.input_gate.parameters(), *self.a_gate.parameters()]

    def flops_per_token(self, seq_len: int) -> int:
        # 6 * parameters counts the projections, gates and conv. The chunked scan per channel, forward: the
        # intra-chunk decay weights (c exps), their products with the inputs and the sum (2c), plus the gate math
        # (~12: sigmoids, softplus, exps, sqrt, products); x3 for forward + backward. C = min(chunk, T).
        c = min(self.chunk_size, seq_len)
        return 3 * self.width * (3 * c + 12)
