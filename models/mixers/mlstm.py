"""mLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory"): the matrix-memory cell with exponential input
gating, a sigmoid forget gate and the max-stabiliser, in xLSTM's pre-up-projection mLSTM layer:

    x_m, z = split(W_up x);  c = SiLU(CausalConv1d(x_m));  q, k = headwise(c), v = headwise(x_m)
    i~_t, f~_t = W_i [q, k, v] + b_i, W_f [q, k, v] + b_f        (one scalar gate pair per head)
    C_t = f_t C_{t-1} + i_t v_t k_t^T / sqrt(d_h),  n_t = f_t n_{t-1} + i_t k_t / sqrt(d_h),   f_t = sigmoid(f~_t)
    h~_t = C_t q_t / max(|n_t^T q_t|, 1)  (computed stabilised by m_t = max(log f_t + m_{t-1}, i~_t), i_t = exp(i~_t))
    out = W_down ((GroupNorm_heads(h~) + skip * c) * SiLU(z))

Follows NX-AI/xlstm: xlstm/blocks/mlstm/backends.py (parallel_stabilized_simple for training, the quadratic
parallel form with the row-wise maximum; recurrent_step_stabilized_simple for `recurrent`), cell.py (gates from
[q, k, v]; forget-gate bias linspace(3, 6) over heads, input-gate bias N(0, 0.1), zero gate weights; a per-head
LayerNorm with weight 1 + w, no bias) and layer.py (inner width proj_factor * d_model rounded up to a multiple of 64;
small init N(0, 2 / (5 d_model)) for W_up and the headwise q, k, v; Wang init, std 2 / (n_blocks sqrt(d_model)), for
W_down; learnable skip at 1; no biases). Parameter names mirror the reference, so its state dict loads unchanged.
Trained chunkwise by default (`chunk_size`: the quadratic form inside chunks, stabilised states across them, equal to
the parallel form to rounding with memory linear in T); `chunk_size=null` runs parallel_stabilized_simple's form.
The no-decay set is the reference's: everything without "weight" in its name (the learnable skip; biases anyway).
`recurrent(x)` starts the stabiliser at m = -inf, which makes it the parallel form's row maximum exactly; the
reference's step starts at m = 0, which differs only through eps = 1e-6 in the normaliser.
"""

import math
from collections.abc import Callable, Iterable
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.mixers._conv import ShortConv
from models.mixers.base import Mixer
from models.mixers.linear_attention import full_precision

EPS = 1e-6


class HeadwiseLinear(nn.Module):
    """A block-diagonal projection without bias: the features split into heads, each mapped by its own square
    matrix, weight (heads, out per head, in per head) as xLSTM's LinearHeadwiseExpand."""

    def __init__(self, width: int, n_heads: int, std: float):
        super().__init__()
        self.n_heads = n_heads
        self.weight = nn.Parameter(torch.randn(n_heads, width // n_heads, width // n_heads) * std)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("...hd,hod->...ho", x.unflatten(-1, (self.n_heads, -1)), self.weight).flatten(-2)


class _Cell(nn.Module):
    def __init__(self, width: int, n_heads: int):
        super().__init__()
        self.igate, self.fgate = nn.Linear(3 * width, n_heads), nn.Linear(3 * width, n_heads)
        self.outnorm = nn.Module()
        self.outnorm.weight = nn.Parameter(torch.zeros(width))  # the norm's scale is 1 + weight
        with torch.no_grad():
            self.fgate.weight.zero_()
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, n_heads))
            self.igate.weight.zero_()
            self.igate.bias.normal_(0.0, 0.1)


def mlstm_parallel(q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor, f_pre: Tensor) -> Tensor:
    """(batch, heads, seq, d_h) q, k, v and (batch, heads, seq, 1) gate pre-activations -> h~ (batch, heads, seq,
    d_h): the stabilised quadratic form. log D_tj = sum_{j<s<=t} log f_s + i~_j for j <= t, stabilised per row."""
    t = q.shape[-2]
    cum = F.logsigmoid(f_pre).cumsum(-2)  # (b, h, t, 1)
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    log_d = (cum - cum.transpose(-1, -2) + i_pre.transpose(-1, -2)).masked_fill(~causal, float("-inf"))
    m = log_d.amax(-1, keepdim=True)  # the diagonal is finite, so m is
    c = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])) * (log_d - m).exp()
    normaliser = torch.maximum(c.sum(-1, keepdim=True).abs(), torch.exp(-m))
    return (c / (normaliser + EPS)) @ v


def mlstm_chunkwise(q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor, f_pre: Tensor, chunk_size: int) -> Tensor:
    """`mlstm_parallel`'s map chunk by chunk: the quadratic form within each chunk, the stabilised states (C, n)
    carried across chunks with their exact running maximum M, so that every row's stabiliser is the parallel form's
    row maximum m_t = max(intra-chunk max, c_t + M) and the outputs equal it to rounding (eps included). Memory
    (batch, heads, T, chunk) instead of (batch, heads, T, T)."""
    b, h, t, dh = q.shape
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = lambda z: F.pad(z, (0, 0, 0, n * c - t)).unflatten(2, (n, c))  # zero padding is future: no effect on t < T
    q, k, v = pad(q), pad(k / math.sqrt(dh)), pad(v)
    i_pre, log_f = pad(i_pre).squeeze(-1), pad(F.logsigmoid(f_pre)).squeeze(-1)  # (b, h, n, c)
    cum = log_f.cumsum(-1)  # log f summed from the chunk's start to t, inclusive
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    log_d = (cum[..., :, None] - cum[..., None, :] + i_pre[..., None, :]).masked_fill(~causal, float("-inf"))
    m_intra = log_d.amax(-1)  # (b, h, n, c)
    log_w = cum[..., -1:] - cum + i_pre  # each key's log weight in the state at its chunk's end
    a = log_w.amax(-1)  # (b, h, n)
    qk = q @ k.transpose(-1, -2)  # (b, h, n, c, c)
    C, N = q.new_zeros(b, h, dh, dh), q.new_zeros(b, h, dh, 1)
    M, ys = torch.full((b, h), float("-inf"), dtype=q.dtype, device=q.device), []
    for j in range(n):
        m_inter = cum[:, :, j] + M[..., None]  # (b, h, c): the carried states' log scale at each row
        m = torch.maximum(m_intra[:, :, j], m_inter)
        scores = qk[:, :, j] * (log_d[:, :, j] - m[..., None]).exp()
        inter = (m_inter - m).exp()[..., None]  # (b, h, c, 1)
        qj = q[:, :, j]
        numerator = scores @ v[:, :, j] + inter * (qj @ C)
        denominator = scores.sum(-1, keepdim=True) + inter * (qj @ N)
        ys.append(numerator / (torch.maximum(denominator.abs(), torch.exp(-m)[..., None]) + EPS))
        M_new = torch.maximum(cum[:, :, j, -1] + M, a[:, :, j])
        decay, w = (cum[:, :, j, -1] + M - M_new).exp()[..., None, None], (log_w[:, :, j] - M_new[..., None]).exp()
        C = decay * C + (k[:, :, j] * w[..., None]).transpose(-1, -2) @ v[:, :, j]
        N = decay * N + (k[:, :, j] * w[..., None]).sum(-2)[..., None]
        M = M_new
    return torch.stack(ys, dim=2).flatten(2, 3)[:, :, :t]


def mlstm_recurrent(q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor, f_pre: Tensor, m0: float = float("-inf")) -> Tensor:
    """The same cell one step at a time with states C (d_h x d_h), n (d_h) and the stabiliser m, from m0."""
    b, h, t, dh = q.shape
    C, n = q.new_zeros(b, h, dh, dh), q.new_zeros(b, h, dh, 1)
    m, ys = torch.full((b, h, 1, 1), m0, dtype=q.dtype, device=q.device), []
    for s in range(t):
        qs, ks, vs = q[:, :, s, :, None], k[:, :, s, :, None] / math.sqrt(dh), v[:, :, s, :, None]
        log_f, i_s = F.logsigmoid(f_pre[:, :, s, :, None]), i_pre[:, :, s, :, None]
        m_new = torch.maximum(log_f + m, i_s)
        f_act, i_act = torch.exp(log_f + m - m_new), torch.exp(i_s - m_new)
        C = f_act * C + i_act * (ks @ vs.transpose(-1, -2))
        n = f_act * n + i_act * ks
        denominator = torch.maximum((qs.transpose(-1, -2) @ n).abs(), torch.exp(-m_new)) + EPS
        ys.append((qs.transpose(-1, -2) @ C) / denominator)
        m = m_new
    return torch.cat(ys, dim=2)


class MLSTM(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 4,
        proj_factor: Annotated[float, Gt(0)] = 2.0,
        round_to: Annotated[int, Ge(1)] = 64,
        conv_size: Annotated[int, Ge(1)] = 4,
        qkv_blocksize: Annotated[int, Ge(1)] = 4,
        init_num_blocks: Annotated[int, Ge(1)] = 1,
        chunk_size: Annotated[int, Ge(1)] | None = 64,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        inner = round_to * math.ceil(proj_factor * d_model / round_to)
        if inner % n_heads:
            raise ValueError(
                f"mixer.n_heads={n_heads} must divide the inner width {inner} "
                f"(proj_factor * d_model rounded up to a multiple of mixer.round_to)"
            )
        if inner % qkv_blocksize:
            raise ValueError(f"mixer.qkv_blocksize={qkv_blocksize} must divide the inner width {inner}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"mixer.chunk_size={chunk_size} must be positive (or null for the quadratic form)")
        self.inner, self.n_heads, self.chunk_size = inner, n_heads, chunk_size
        small = math.sqrt(2 / (5 * d_model))
        self.proj_up = nn.Linear(d_model, 2 * inner, bias=False)
        self.q_proj, self.k_proj, self.v_proj = (HeadwiseLinear(inner, inner // qkv_blocksize, small) for _ in "qkv")
        self.conv1d = ShortConv(inner, conv_size)  # PyTorch's Conv1d init, as the reference's CausalConv1d
        self.mlstm_cell = _Cell(inner, n_heads)
        self.learnable_skip = nn.Parameter(torch.ones(inner))
        self.proj_down = nn.Linear(inner, d_model, bias=False)
        with torch.no_grad():
            self.proj_up.weight.normal_(0.0, small)
            self.proj_down.weight.normal_(0.0, 2 / init_num_blocks / math.sqrt(d_model))

    def forward(self, x: Tensor) -> Tensor:
        if self.chunk_size is None:
            return self._block(x, mlstm_parallel)
        return self._block(x, lambda *args: mlstm_chunkwise(*args, chunk_size=self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time (the RNN view)."""
        return self._block(x, mlstm_recurrent)

    def _block(self, x: Tensor, cell: Callable[..., Tensor]) -> Tensor:
        b, t, _ = x.shape
        x_m, z = self.proj_up(x).chunk(2, dim=-1)
        c = F.silu(self.conv1d(x_m))
        q, k, v = self.q_proj(c), self.k_proj(c), self.v_proj(x_m)
        gates_in = torch.cat([q, k, v], dim=-1)
        heads = lambda u: u.view(b, t, self.n_heads, -1).transpose(1, 2)
        i_pre = self.mlstm_cell.igate(gates_in).transpose(1, 2)[..., None]  # (b, heads, t, 1)
        f_pre = self.mlstm_cell.fgate(gates_in).transpose(1, 2)[..., None]
        with torch.autocast(x.device.type, enabled=False):  # exp-gated sums over the sequence: float32 at least
            h = cell(*(full_precision(z) for z in (heads(q), heads(k), heads(v), i_pre, f_pre)))  # (b, heads, t, d_h)
        h = F.layer_norm(h, h.shape[-1:], eps=1e-5)  # per head: GroupNorm with one group per head
        h = h.transpose(1, 2).reshape(b, t, -1) * (1 + self.mlstm_cell.outnorm.weight)
        return self.proj_down(((h + self.learnable_skip * c) * F.silu(z)).to(x.dtype))

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return [self.learnable_skip]

    def flops_per_token(self, seq_len: int) -> int:
        # 6 * parameters counts the projections, gates and conv. Per token, forward, with L = T (quadratic form) or
        # the chunk C = min(chunk, T): q k^T and the weighted sum of v over L keys, 4 L inner (the masked half is
        # computed), the decay matrix D per head, ~8 L (difference of cumulated log gates, max, exp, product, sum);
        # chunkwise also reading and updating the (d_h x d_h) state per head, 4 inner d_h + 4 inner; x3 for training.
        if self.chunk_size is None:
            return 3 * seq_len * (4 * self.inner + 8 * self.n_heads)
        c, dh = min(self.chunk_size, seq_len), self.inner // self.n_heads
        return 3 * (c * (4 * self.inner + 8 * self.n_heads) + 4 * self.inner * dh + 4 * self.inner)
