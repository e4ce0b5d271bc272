"""HGRN (Qin et al. 2023, "Hierarchically Gated Recurrent Neural Network for Sequence Modeling"): a gated linear RNN
with one state per channel, its forget gate bounded below by a learned, depth-dependent lower bound,

    f_t = lb + (1 - lb) sigmoid(W_f x_t)   (lb: the layer's lower bound, none in the first layer),
    h_t = f_t * h_{t-1} + (1 - f_t) * swish(W_i x_t),    out = W_o (rmsnorm(h_t) * swish(W_g x_t)).

The layer follows flash-linear-attention's `fla/layers/hgrn.py` (HGRNAttention: i, f, g projections without bias,
optional short convolutions on i and f without activation, logsigmoid forget gate, fla's swiglu(i, 1 - f) input, the
gated RMSNorm rmsnorm(h) * swish(g) with eps 1e-5, then W_o) and fla/models/hgrn/modeling_hgrn.py for the lower
bounds and the N(0, 0.02) init of every Linear. As in archbench's HGRN2 (models/mixers/hgrn2.py), each layer holds
its own bound lb = sigmoid(beta) per channel starting at fla's value layer_idx / n_layers, where fla learns them
jointly (cumsum of a softmax over layers): the same parametrisation with two layers, not tied to rise with depth
deeper. The recurrence is diagonal: trained with the chunked log-space scan of models/mixers/_scan.py; `recurrent`
runs it step by step. Not carried over: fla's Triton kernel (not wired in: it could not be checked without a GPU).
"""

from collections.abc import Callable, Iterable
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.init import fla_init_
from models.mixers._conv import ShortConv
from models.mixers._scan import diagonal_scan, diagonal_scan_recurrent
from models.mixers.base import Mixer
from models.mixers.hgrn2 import lower_bound_parameter, lower_bounded
from models.mixers.linear_attention import full_precision


class HGRN(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        expand_ratio: Annotated[int, Ge(1)] = 1,
        lower_bound: bool = True,
        n_layers: Annotated[int, Ge(1)] = 2,
        use_short_conv: bool = False,
        conv_size: Annotated[int, Ge(1)] = 4,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
        chunk_size: Annotated[int, Ge(1)] = 16,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        if layer_idx >= n_layers:
            raise ValueError(
                f"mixer.n_layers={n_layers} must exceed the layer index {layer_idx} (set it to model.n_layers)"
            )
        width = d_model * expand_ratio
        self.width, self.chunk_size = width, chunk_size
        self.i_proj, self.f_proj, self.g_proj = (nn.Linear(d_model, width, bias=False) for _ in "ifg")
        self.convs = nn.ModuleList(ShortConv(width, conv_size, bias=False) for _ in "if") if use_short_conv else None
        self.g_norm = nn.RMSNorm(width, eps=norm_eps)
        self.o_proj = nn.Linear(width, d_model, bias=False)
        fla_init_(self)
        self.lower_bound = lower_bound_parameter(width, layer_idx, n_layers) if lower_bound else None

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return [] if self.lower_bound is None else [self.lower_bound]  # fla's lower_bounds: 1-D, never decayed

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x, lambda u, log_f: diagonal_scan(u, log_f, self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one step at a time (the RNN view)."""
        return self._mix(x, diagonal_scan_recurrent)

    def _mix(self, x: Tensor, scan: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        i, f = self.i_proj(x), self.f_proj(x)
        if self.convs is not None:
            i, f = (conv(z) for conv, z in zip(self.convs, (i, f), strict=True))
        log_f = F.logsigmoid(full_precision(f))
        if self.lower_bound is not None:  # f = lb + (1 - lb) sigmoid(.), in log space
            log_f = lower_bounded(log_f, self.lower_bound)
        u = F.silu(full_precision(i)) * -torch.expm1(log_f)  # fla's swiglu(i, 1 - f)
        with torch.autocast(x.device.type, enabled=False):
            h = scan(u, log_f)
        o = self.g_norm(h) * F.silu(full_precision(self.g_proj(x)))
        return self.o_proj(o.to(x.dtype))

    def flops_per_token(self, seq_len: int) -> int:
        # 6 * parameters counts the projections. The chunked diagonal scan per channel, forward: the intra-chunk
        # decay weights (C exps), their products with the inputs and the sum (2C), plus the gates and norm (~10);
        # x3 for forward + backward. C = min(chunk, T).
        return 3 * self.width * (3 * min(self.chunk_size, seq_len) + 10)
