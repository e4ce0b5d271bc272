"""Forgetting Transformer (Lin et al. 2025, "Forgetting Transformer: Softmax Attention with a Forget Gate", FoX):
causal softmax attention whose scores are down-weighted by a data-dependent scalar forget gate per head,

    f_t = sigmoid(w_f^T x_t + b_f),  o_i = sum_{j<=i} softmax_j(q_i^T k_j / sqrt(d_h) + D_ij) v_j,
    D_ij = sum_{j<l<=i} log f_l = c_i - c_j with c the cumulative sum of log f.

Follows zhixuan-lin/forgetting-transformer, src/forgetting_transformer/model/forgetting_transformer/
modeling_forgetting_transformer.py (ForgettingAttentionLayer with fgate_type="full": q, k, v, o projections without
bias, the gate a Linear(d_model, n_heads) with bias, every Linear ~ N(0, 0.02) with zero bias; no RoPE by default,
rope when the backbone hands one; FoX (Pro)'s options qk_norm (per-head RMS norm with one weight per channel,
before rope) and output_gate (a sigmoid output gate after a per-head RMS output norm, eps 1e-6)). Pro's key and value
shifts and the pruning of ACP are not implemented. On CUDA, `kernel=auto` runs FlexAttention with the decay as a
score modification (compiled; no (seq, seq) bias in memory, as models/mixers/_flex.py); elsewhere SDPA with the decay
as an explicit additive mask. tests/test_rnn_forms.py checks both against flash-linear-attention's
fla/ops/forgetting_attn/naive.py. Not a recurrence: `recurrent(x)` computes each position from its prefix alone.
"""

import warnings
from collections.abc import Callable, Iterable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor, nn

from models.mixers import _flex
from models.mixers.base import Mixer


class GroupRMSNorm(nn.Module):
    """RMS norm over each head's channels of (..., heads * head_dim), one weight per channel (init 1)."""

    def __init__(self, n_groups: int, width: int, eps: float):
        super().__init__()
        self.n_groups, self.eps = n_groups, eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        xg = x.unflatten(-1, (self.n_groups, -1))
        xg = xg * torch.rsqrt(xg.square().mean(-1, keepdim=True) + self.eps)
        return xg.flatten(-2) * self.weight


class ForgettingAttention(Mixer):
    accepts_position = True

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 1,
        qk_norm: bool = False,
        output_gate: bool = False,
        kernel: Literal["auto", "sdpa", "flex"] = "auto",
        position: nn.Module | None = None,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        if d_model % n_heads:
            raise ValueError(f"mixer.n_heads={n_heads} must divide d_model={d_model}")
        self.kernel, self.n_heads, self.head_dim = kernel, n_heads, d_model // n_heads
        self.score_bias = position if hasattr(position, "bias") else None  # ALiBi-like: added to the scores
        self.rotation = None if position is None or self.score_bias is not None else position
        if self.rotation is not None and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head dim, got d_model/n_heads={self.head_dim}")
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d_model, d_model, bias=False) for _ in "qkvo")
        self.fgate_proj = nn.Linear(d_model, n_heads, bias=True)
        self.q_norm = GroupRMSNorm(n_heads, d_model, 1e-5) if qk_norm else None
        self.k_norm = GroupRMSNorm(n_heads, d_model, 1e-5) if qk_norm else None
        self.ogate_proj = nn.Linear(d_model, d_model, bias=False) if output_gate else None
        self.output_norm = GroupRMSNorm(n_heads, d_model, 1e-6) if output_gate else None
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x, self.attend)

    def recurrent(self, x: Tensor) -> Tensor:
        """Token by token as in decoding: query t against the cached keys and values of positions <= t, its scores
        decayed by c_t - c_j, with no mask (a check of the mask and of causality)."""
        return self._mix(x, self.attend_step_by_step)

    def _mix(self, x: Tensor, attend: Callable[..., Tensor]) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        heads = lambda z: z.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)
        if self.rotation is not None:
            q, k = self.rotation(q, k)
        gate = self.fgate_proj(x)
        log_f = F.logsigmoid(gate.to(torch.promote_types(gate.dtype, torch.float32))).transpose(1, 2)  # >= float32
        o = attend(q, k, v, log_f).transpose(1, 2).reshape(b, t, d)
        if self.ogate_proj is not None:
            o = self.output_norm(o) * torch.sigmoid(self.ogate_proj(x))
        return self.o_proj(o)

    def kernel_for(self, device_type: str, bf16: bool) -> str:
        return ("flex" if device_type == "cuda" else "sdpa") if self.kernel == "auto" else self.kernel

    def attend(self, q: Tensor, k: Tensor, v: Tensor, log_f: Tensor) -> Tensor:
        """Forgetting attention on (batch, heads, seq, head_dim) q, k, v and (batch, heads, seq) log forget gates."""
        cum = log_f.cumsum(-1)  # c_i; D_ij = c_i - c_j
        slopes = None if self.score_bias is None else self.score_bias.slopes(self.n_heads, q.device)
        if self.kernel_for(q.device.type, False) == "flex":
            return flex_forgetting_attention(q, k, v, cum, slopes)
        pos = torch.arange(q.shape[-2], device=q.device)
        bias = cum[..., :, None] - cum[..., None, :]  # (b, heads, t, t), float32
        if slopes is not None:
            bias = bias - slopes[:, None, None] * (pos[:, None] - pos[None, :])
        mask = bias.masked_fill(pos[None, :] > pos[:, None], float("-inf"))
        # SDPA takes a mask of q's dtype only: the decayed scores are formed in float32 (never a bf16 decay)
        work = torch.promote_types(q.dtype, cum.dtype)  # at least float32; float64 where the inputs are
        with torch.autocast(q.device.type, enabled=False):
            y = F.scaled_dot_product_attention(q.to(work), k.to(work), v.to(work), attn_mask=mask.to(work))
        return y.to(v.dtype)

    def attend_step_by_step(self, q: Tensor, k: Tensor, v: Tensor, log_f: Tensor) -> Tensor:
        cum, ys = log_f.cumsum(-1), []
        slopes = None if self.score_bias is None else self.score_bias.slopes(self.n_heads, q.device)
        for t in range(q.shape[-2]):
            scores = (q[:, :, t, None] @ k[:, :, : t + 1].transpose(-1, -2)).squeeze(-2) * self.head_dim**-0.5
            scores = scores + cum[..., t, None] - cum[..., : t + 1]
            if slopes is not None:
                scores = scores - slopes[:, None] * torch.arange(t, -1, -1, device=q.device)
            ys.append(scores.softmax(-1).to(v.dtype)[..., None, :] @ v[:, :, : t + 1])
        return torch.cat(ys, dim=-2)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return []  # as the reference: the gate's bias is a bias; its weight decays with the other matrices

    def flops_per_token(self, seq_len: int) -> int:
        # PaLM (Chowdhery et al. 2022, App. B): 12 * H * Q * T per layer for QK^T and AV, forward + backward; the
        # decay adds ~3 per score (difference of cumulated gates, add, its backward), 3 * H * T.
        return 12 * self.n_heads * self.head_dim * seq_len + 3 * self.n_heads * seq_len


def flex_forgetting_attention(q: Tensor, k: Tensor, v: Tensor, cum: Tensor, slopes: Tensor | None = None) -> Tensor:
    """FlexAttention with the decay c_i - c_j (and ALiBi's -m_h (i - j)) as a score modification on the causal block
    mask: compiled on CUDA, eager elsewhere (materialising the scores: for tests)."""
    cum = cum.float()  # the cumulative log forget gates stay float32: in bf16, c_i - c_j loses the decay at length

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        score = score + cum[b, h, q_idx] - cum[b, h, kv_idx]
        return score if slopes is None else score - slopes[h] * (q_idx - kv_idx)

    mask = _flex.block_mask(q.shape[-2], None, str(q.device))
    if q.is_cuda:
        return _flex._compiled()(q, k, v, score_mod=score_mod, block_mask=mask)
    with warnings.catch_warnings():  # "called without torch.compile()": eager is the intent off CUDA
        warnings.simplefilter("ignore", UserWarning)
        return _flex.flex_attention(q, k, v, score_mod=score_mod, block_mask=mask)
