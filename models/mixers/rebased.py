"""ReBased (Aksenov et al. 2024, "Linear Transformers with Learnable Kernel Functions are Better In-Context Models"):
Based's linear attention with a learnable quadratic kernel in place of the Taylor map, and no sliding window,

    q~ = gamma * layernorm(q) + beta  (likewise k~; gamma, beta of width feature_dim, shared by q, k and the heads)
    phi(q~) . phi(k~) = (q~ . k~)^2 / feature_dim,   y_t = sum_{s<=t} phi_t.phi_s v_s / (sum_{s<=t} phi_t.phi_s + eps)

following fla-org/flash-linear-attention `fla/layers/rebased.py` (ReBasedLinearAttention, from corl-team/rebased:
q, k projected to n_heads x feature_dim, v and o at full width, no biases, the feature map's layer norm with eps
1e-5 and gamma 1, beta 0 at init, the normaliser's eps 1e-5) and `fla/ops/rebased/naive.py` (the parallel form the
test runs). phi is the full outer product q~ q~^T / sqrt(feature_dim) (fla flattens its upper triangle with the
off-diagonal entries scaled by sqrt(2): the same kernel); archbench's chunked linear attention runs it
(models/mixers/linear_attention.py), and its token-by-token form is `recurrent`. Weights N(0, 0.02).
"""

from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.mixers.linear_attention import ChunkSize, LinearAttention


class ReBased(LinearAttention):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 1,
        feature_dim: Annotated[int, Ge(1)] = 16,
        chunk_size: ChunkSize = 64,
        eps: Annotated[float, Gt(0)] = 1e-5,
        norm_eps: Annotated[float, Gt(0)] = 1e-5,
    ):
        super().__init__(
            d_model,
            max_seq_len=max_seq_len,
            layer_idx=layer_idx,
            n_heads=n_heads,
            feature_dim=feature_dim,
            chunk_size=chunk_size,
            eps=eps,
        )
        self.norm_eps = norm_eps
        self.gamma = nn.Parameter(torch.ones(feature_dim))
        self.beta = nn.Parameter(torch.zeros(feature_dim))

    @property
    def state_dim(self) -> int:
        return self.qk_dim**2

    def _phi(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x, (self.qk_dim,), self.gamma.to(x.dtype), self.beta.to(x.dtype), self.norm_eps)
        return (x[..., :, None] * x[..., None, :]).flatten(-2) / self.qk_dim**0.5
