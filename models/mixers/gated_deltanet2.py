"""Gated DeltaNet-2 (GDN-2; "Gated DeltaNet-2: Decoupling Erase and Write in Linear Attention", as fla cites it):
KDA with its scalar rate beta split into two channel-wise gates, an erase gate b on the key axis and a write gate w
on the value axis,

    S_t = (I - k_t (b_t * k_t)^T) Diag(a_t) S_{t-1} + k_t (w_t * v_t)^T,    o_t = S_t^T q_t / sqrt(d_k),
    b_t = sigmoid(x_t W_b) in [0, 1]^dk (x2 with `allow_neg_eigval`),   w_t = sigmoid(x_t W_w) in [0, 1]^dv,

and KDA's decay per key channel, log a_t = -exp(A_log) softplus(x_t W_f1 W_f2 + dt_bias). With b = w = beta it is
KDA; with a scalar decay too, Gated DeltaNet. The layer follows fla's `fla/layers/gdn2.py` (GatedDeltaNet2) with its
defaults, which are KDA's (models/mixers/kda.py: short convolutions + SiLU, q and k L2-normalised, the low-rank decay
input, A_log = log U(1, 16), the sigmoid-gated RMSNorm output) but for W_b (d_model -> key dim) and W_w (d_model ->
value dim), both without bias. The erase reads the state at the key b * k (k normalised first, as fla's kernel does).
Trained in the chunked WY/UT form of `models/mixers/delta_net.py` with the read key b * k, the values w * v and rate 1;
`recurrent` runs it token by token. Not carried over: grouped value heads; fla's Triton kernel (not wired in).
"""

from typing import Annotated

import torch
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.init import fla_init_
from models.mixers.kda import KimiDeltaAttention
from models.mixers.linear_attention import full_precision


class GatedDeltaNet2(KimiDeltaAttention):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 4,
        expand_k: Annotated[float, Gt(0)] = 1.0,
        expand_v: Annotated[float, Gt(0)] = 1.0,
        use_short_conv: bool = True,
        conv_size: Annotated[int, Ge(1)] = 4,
        allow_neg_eigval: bool = False,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
        chunk_size: Annotated[int, Ge(1)] = 8,
    ):
        super().__init__(
            d_model,
            max_seq_len=max_seq_len,
            layer_idx=layer_idx,
            n_heads=n_heads,
            expand_k=expand_k,
            expand_v=expand_v,
            use_short_conv=use_short_conv,
            conv_size=conv_size,
            allow_neg_eigval=allow_neg_eigval,
            norm_eps=norm_eps,
            chunk_size=chunk_size,
        )
        self.b_proj = nn.Linear(d_model, n_heads * self.dk, bias=False)  # the erase gate, per key channel
        self.w_proj = nn.Linear(d_model, n_heads * self.dv, bias=False)  # the write gate, per value channel
        fla_init_(self.b_proj)
        fla_init_(self.w_proj)

    def _write(self, x: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Rate 1, the values w * v and the read key b * k."""
        b, t, _ = x.shape
        heads = lambda z, dh: torch.sigmoid(full_precision(z).view(b, t, self.n_heads, dh).transpose(1, 2))
        erase = self.beta_scale * heads(self.b_proj(x), self.dk)
        write = heads(self.w_proj(x), self.dv)
        return torch.ones_like(k[..., 0]), write * v, erase * k
