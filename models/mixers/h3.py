"""H3 (Fu et al. 2023, "Hungry Hungry Hippos: Towards Language Modeling with State Space Models").

    q, k, v = W_q x, W_k x, W_v x
    k  <- shift SSM(k) + D_k k             A is the shift matrix, so the kernel is C_0..C_{N-1}: a causal FIR filter
    kv <- diag SSM(k (x) v) + D kv         per head, k v^T (head_dim x head_dim), an S4D kernel per head over time
    y  = W_o (q^T kv)                      per head, q^T kv; with head_dim 1 all products are elementwise gates
Both SSMs are computed as FFT convolutions: the shift SSM's kernel is its d_state learned taps, the diagonal one's
the S4D kernel of models/mixers/s4d.py, discretised bilinearly as H3's code does (SSKernelDiag's default, in
HazyResearch/H3 and Zoology alike). Together they let H3 remember a key and compare it with a later
query, which is what lets it recall.
"""

from collections.abc import Iterable
from typing import Annotated

import torch
from annotated_types import Ge
from torch import Tensor, nn

from models.init import normal_init_
from models.mixers._conv import fft_conv, fft_conv_flops
from models.mixers.base import Mixer
from models.mixers.s4d import S4DKernel, StateSize, Step


class H3(Mixer):
    """Init as HazyResearch/H3: projections N(0, 0.02) with zero biases (src/models/ssm_seq.py `_init_weights`),
    the shift SSM's taps as nn.Conv1d's default (src/models/ssm/ss_kernel.py, mode 'shift'), the diagonal SSM as
    S4D (S4DKernel), the skips D standard normal. The diagonal kernel's dt and A are registered with weight_decay 0
    there (ssm_utils.OptimModule.register): `no_weight_decay` returns them."""

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        d_state: StateSize = 64,
        head_dim: Annotated[int, Ge(1)] = 1,
        dt_min: Step = 1e-3,
        dt_max: Step = 1e-1,
        bias: bool = True,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        if d_model % head_dim:
            raise ValueError(f"mixer.head_dim={head_dim} must divide d_model={d_model}")
        self.d_model, self.head_dim, self.n_heads = d_model, head_dim, d_model // head_dim
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        bound = d_state**-0.5  # nn.Conv1d's default init for d_state taps
        self.shift = nn.Parameter(torch.empty(d_model, d_state).uniform_(-bound, bound))
        self.shift_skip = nn.Parameter(torch.randn(d_model))
        self.diag = S4DKernel(self.n_heads, d_state, dt_min, dt_max, discretization="bilinear")  # as H3's code
        self.diag_skip = nn.Parameter(torch.randn(self.n_heads))
        self.out = nn.Linear(d_model, d_model, bias=bias)
        normal_init_(self)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return self.diag.no_weight_decay()

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        H, p = self.n_heads, self.head_dim
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        k = k.transpose(1, 2)  # (b, d, t)
        k = (fft_conv(k, self.shift) + self.shift_skip[:, None] * k).transpose(1, 2)
        q, k, v = (z.reshape(b, t, H, p).permute(0, 2, 3, 1) for z in (q, k, v))  # (b, H, p, t)
        kv = k[:, :, :, None] * v[:, :, None, :]  # (b, H, p_k, p_v, t)
        kernel = self.diag(t)[:, None, None]  # (H, 1, 1, t): one kernel per head, shared by its p x p channels
        kv = fft_conv(kv, kernel) + self.diag_skip[:, None, None, None] * kv
        y = (q[:, :, :, None] * kv).sum(2)  # q^T kv: (b, H, p_v, t)
        return self.out(y.permute(0, 3, 1, 2).reshape(b, t, self.d_model))

    def flops_per_token(self, seq_len: int) -> int:
        # FFT convolutions on d_model channels (shift SSM) and H * p^2 = d_model * head_dim channels (diagonal SSM).
        return self.d_model * (1 + self.head_dim) * fft_conv_flops(seq_len)
