"""HGRN2 (Qin et al. 2024, "HGRN2: Gated Linear RNNs with State Expansion"): HGRN's forget-gated linear recurrence with
its state expanded by an outer product, per head of `expand_ratio` forget channels,

    f_t = lb + (1 - lb) sigmoid(W_f x_t)   (lb: the layer's lower bound, 0 in the first layer)
    S_t = diag(f_t) S_{t-1} + (1 - f_t) i_t^T,   o_t = S_t^T q_t,   q_t = swish(W_q x_t), i_t = W_i x_t
    out = W_o RMSNorm(o),

i.e. gated linear attention with the input gate 1 - f as the key (tied to the forget gate) and no scores softmax.
Follows flash-linear-attention, fla/layers/hgrn2.py (HGRN2Attention: q, f, i projections without bias, swish on q,
log f = logsigmoid, k = 1 - f, the query scaled by expand_ratio^-0.5 as fla's GLA kernels do by default, RMSNorm over
the whole width with eps 1e-5 (the default of fla's fused rms_norm_linear, which ignores norm_eps), no short
convolution by default) and fla/models/hgrn2/modeling_hgrn2.py for the lower bounds and the N(0, 0.02) init of every
Linear. Deviation: fla learns the layers' lower bounds jointly, one
(n_layers, d_model) parameter turned into cumsum(softmax over layers) - its first row (so bounds rise with depth);
a mixer here holds its own bound lb = sigmoid(beta) per channel, beta initialised so that lb starts at fla's initial
value layer_idx / n_layers. With two layers this is fla's parametrisation exactly; deeper, the bounds are not tied to
rise with depth. Trained in GLA's chunk-wise form (models/mixers/linear_attention.py); with flash-linear-attention
installed, `kernel=auto` runs fla's `chunk_gla` on CUDA, which tests/test_rnn_forms.py compares on a GPU.
"""

import math
from collections.abc import Callable, Iterable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor, nn

from models.mixers._conv import ShortConv
from models.mixers.base import Mixer
from models.mixers.delta_net import check_kernel, resolve_fla
from models.mixers.gla import fla_gla
from models.mixers.linear_attention import (
    chunked_linear_attention,
    full_precision,
    recurrent_linear_attention,
)


class HGRN2(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        expand_ratio: Annotated[int, Ge(1)] = 16,
        lower_bound: bool = True,
        n_layers: Annotated[int, Ge(1)] = 2,
        use_short_conv: bool = False,
        conv_size: Annotated[int, Ge(1)] = 4,
        chunk_size: Annotated[int, Ge(1)] = 8,
        kernel: Literal["auto", "torch", "fla"] = "auto",
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        check_kernel(kernel)
        if d_model % expand_ratio:
            raise ValueError(f"mixer.expand_ratio={expand_ratio} must divide d_model={d_model}")
        if layer_idx >= n_layers:
            raise ValueError(
                f"mixer.n_layers={n_layers} must exceed the layer index {layer_idx} (set it to model.n_layers)"
            )
        self.kernel, self.chunk_size, self.expand_ratio = kernel, chunk_size, expand_ratio
        self.n_heads = d_model // expand_ratio
        self.q_proj, self.f_proj, self.i_proj, self.o_proj = (nn.Linear(d_model, d_model, bias=False) for _ in "qfio")
        self.convs = nn.ModuleList(ShortConv(d_model, conv_size, bias=False) for _ in "qfi") if use_short_conv else None
        self.g_norm = nn.RMSNorm(d_model, eps=1e-5)  # fla: rms_norm_linear's default eps, whatever norm_eps
        for m in (self.q_proj, self.f_proj, self.i_proj, self.o_proj):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        self.lower_bound = lower_bound_parameter(d_model, layer_idx, n_layers) if lower_bound else None

    def kernel_for(self, device_type: str, bf16: bool) -> str:
        return resolve_fla(self.kernel, device_type, bf16, needs_bf16=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel_for(x.device.type, False) == "fla":
            return self._mix(x, fla_gla)
        return self._mix(x, lambda q, k, v, g: chunked_linear_attention(q, k, v, g, chunk_size=self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time (the RNN view)."""
        return self._mix(x, recurrent_linear_attention)

    def _mix(self, x: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        b, t, d = x.shape
        q, f, i = self.q_proj(x), self.f_proj(x), self.i_proj(x)
        if self.convs is not None:
            q, f, i = (conv(z) for conv, z in zip(self.convs, (q, f, i), strict=True))
        heads = lambda z: full_precision(z.view(b, t, self.n_heads, self.expand_ratio).transpose(1, 2))
        log_f = F.logsigmoid(heads(f))
        if self.lower_bound is not None:  # f = lb + (1 - lb) sigmoid(.), in log space
            log_f = lower_bounded(log_f, heads(self.lower_bound.expand(b, t, d)))
        k = -torch.expm1(log_f)  # 1 - f
        q = heads(F.silu(q)) * self.expand_ratio**-0.5
        with torch.autocast(x.device.type, enabled=False):
            o = scan(q, k, heads(i), log_f)
        o = o.transpose(1, 2).reshape(b, t, d)
        return self.o_proj(self.g_norm(o).to(x.dtype))

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return [] if self.lower_bound is None else [self.lower_bound]

    def flops_per_token(self, seq_len: int) -> int:  # the same recurrence whichever kernel runs it
        # GLA's chunked form per head (key and value head dims both expand_ratio, C = min(chunk, T)), forward:
        # intra-chunk scores with a decay per key dim 4CK, their product with v 2CV, the K x V state 4KV; x3.
        c, e = min(self.chunk_size, seq_len), self.expand_ratio
        return 3 * self.n_heads * (4 * c * e + 2 * c * e + 4 * e * e)


def lower_bound_parameter(channels: int, layer_idx: int, n_layers: int) -> nn.Parameter | None:
    """The logit beta of a layer's forget-gate lower bound lb = sigmoid(beta) per channel, starting at fla's initial
    value layer_idx / n_layers (its bounds: softmax of zeros over layers, cumulated, minus the first row); None in
    the first layer, which fla leaves unbounded (HGRN and HGRN2 alike)."""
    if layer_idx == 0:
        return None
    start = layer_idx / n_layers
    return nn.Parameter(torch.full((channels,), math.log(start / (1 - start))))


def lower_bounded(log_f: Tensor, beta: Tensor) -> Tensor:
    """log(lb + (1 - lb) f) from log f, lb = sigmoid(beta): fla's logaddexp(log lb, log(1 - lb) + log f)."""
    return torch.logaddexp(F.logsigmoid(beta), F.logsigmoid(-beta) + log_f)
