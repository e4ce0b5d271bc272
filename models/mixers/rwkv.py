"""RWKV-4 time mixing (Peng et al. 2023, "RWKV: Reinventing RNNs for the Transformer Era"): token shift, then per
channel the WKV recurrence with time decay w > 0 and bonus u,

    wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) / (sum_{i<t} e^{-(t-1-i) w + k_i} + e^{u + k_t}),

gated by the receptance: out = W_o (sigmoid(r_t) * wkv_t). Trained in a chunked form that keeps, like the
RWKV-4 kernel, every exponent relative to a running maximum, so e^{k} never overflows.
"""

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.init import normal_init_
from models.mixers.base import Mixer
from models.mixers.linear_attention import ChunkSize, full_precision


class RWKVTimeMix(Mixer):
    """Init: time_decay, time_first and the time_mix ratios as RWKV-4 (RWKV-LM RWKV-v4/src/model.py,
    RWKV_TimeMix.__init__); the four linear layers N(0, 0.02). RWKV-4 zero-initialises key, receptance and output
    (`scale_init = 0` in RWKV_Init), which makes the mixer's output identically zero at init; archbench keeps the
    small normal init so that every mixer passes the same causality check from its first step. RWKV-4 trains
    without weight decay at all (its configure_optimizers puts every parameter in a weight_decay 0 group): the
    decay and bonus are excluded here (`no_weight_decay`); the linear layers follow archbench's recipe."""

    def __init__(self, d_model: int, *, max_seq_len: int, layer_idx: int, chunk_size: ChunkSize = 8):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        self.chunk_size = chunk_size
        # RWKV-4's initialisation with its depth ratios fixed at mid-depth (the mixer does not know n_layers).
        ratio_0_to_1, ratio_1_to_almost0 = 0.5, 0.5
        h = torch.arange(d_model, dtype=torch.float32)
        self.time_decay = nn.Parameter(-5 + 8 * (h / max(d_model - 1, 1)) ** (0.7 + 1.3 * ratio_0_to_1))  # log w
        zigzag = ((h + 1) % 3 - 1) * 0.5
        self.time_first = nn.Parameter(torch.full((d_model,), math.log(0.3)) + zigzag)  # u
        share = h / d_model
        self.time_mix_k = nn.Parameter(share**ratio_1_to_almost0)
        self.time_mix_v = nn.Parameter(share**ratio_1_to_almost0 + 0.3 * ratio_0_to_1)
        self.time_mix_r = nn.Parameter(share ** (0.5 * ratio_1_to_almost0))
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.receptance = nn.Linear(d_model, d_model, bias=False)
        self.output = nn.Linear(d_model, d_model, bias=False)
        normal_init_(self)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        return (self.time_decay, self.time_first)

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x, lambda w, u, k, v: wkv_chunked(w, u, k, v, chunk_size=self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time, as RWKV-4's own kernel computes it."""
        return self._mix(x, wkv_recurrent)

    def _mix(self, x: Tensor, wkv: Callable[..., Tensor]) -> Tensor:
        shifted = F.pad(x, (0, 0, 1, -1))  # token shift: x_{t-1}, zeros at t = 0
        mix = lambda mu: x * mu + shifted * (1 - mu)
        k, v = full_precision(self.key(mix(self.time_mix_k))), full_precision(self.value(mix(self.time_mix_v)))
        r = torch.sigmoid(self.receptance(mix(self.time_mix_r)))
        with torch.autocast(x.device.type, enabled=False):
            y = wkv(self.time_decay.exp().to(k.dtype), self.time_first.to(k.dtype), k, v)
        return self.output(r * y.to(r.dtype))

    def flops_per_token(self, seq_len: int) -> int:
        # Chunked WKV per channel, forward: C intra-chunk terms of ~8 ops each (decayed log weight, max, exp,
        # weight * v and two sums), C = min(chunk, T), plus ~12 for the carried state; x3 for forward + backward.
        return 3 * self.time_decay.numel() * (8 * min(self.chunk_size, seq_len) + 12)


def wkv_chunked(w: Tensor, u: Tensor, k: Tensor, v: Tensor, *, chunk_size: int) -> Tensor:
    """WKV for k, v (batch, seq, channels), decay w > 0 and bonus u (channels,), chunk by chunk.

    Within a chunk the log weight of key i for query t is -(t-1-i) w + k_i (i < t) or u + k_t (i = t); the sum
    over earlier chunks is carried as (A, B, p) with numerator A e^p and denominator B e^p (p the running
    maximum exponent, as in RWKV-4's kernel). Each row is exponentiated relative to its own maximum.
    """
    b, t, d = k.shape
    c = min(chunk_size, t)
    n = -(-t // c)
    k, v = (F.pad(z, (0, 0, 0, n * c - t)).view(b, n, c, d) for z in (k, v))  # padding is future: harmless
    pos = torch.arange(c, device=k.device)
    lag = (pos[:, None] - 1 - pos[None, :]).to(k.dtype)  # t - 1 - i
    # decay[t, i] = (t-1-i) w for earlier keys i < t; +inf (weight 0) for i >= t, the diagonal being added apart
    decay = (lag[..., None] * w).masked_fill((pos[None, :] >= pos[:, None])[..., None], float("inf"))
    logits = k[:, :, None] - decay  # (b, n, c_t, c_i, d)
    diagonal = u + k  # (b, n, c, d): the bonus term of key t for query t

    # The state entering each chunk, from each chunk's own contribution -(c-1-i) w + k_i (relative to its max q).
    contrib = -(c - 1 - pos).to(k.dtype)[:, None] * w + k  # (b, n, c, d)
    q = contrib.max(dim=2).values
    e = (contrib - q[:, :, None]).exp()
    a_chunk, b_chunk = (e * v).sum(2), e.sum(2)
    a = torch.zeros(b, d, dtype=k.dtype, device=k.device)
    bb, p = torch.zeros_like(a), torch.full_like(a, float("-inf"))
    states = []
    for q_i, a_i, b_i in zip(q.unbind(1), a_chunk.unbind(1), b_chunk.unbind(1), strict=True):
        states.append((a, bb, p))
        decayed = p - c * w
        p_new = torch.maximum(decayed, q_i)
        e_old, e_new = (decayed - p_new).exp(), (q_i - p_new).exp()
        a, bb, p = e_old * a + e_new * a_i, e_old * bb + e_new * b_i, p_new
    a, bb, p = (torch.stack(s, dim=1)[:, :, None] for s in zip(*states, strict=True))  # (b, n, 1, d)

    carried = p - pos.to(k.dtype)[:, None] * w  # the carried sum as seen by query t: decayed t more steps
    top = torch.maximum(torch.maximum(logits.max(dim=3).values, diagonal), carried)  # (b, n, c, d), finite
    weights = (logits - top[:, :, :, None]).exp()
    e_diagonal, e_carried = (diagonal - top).exp(), (carried - top).exp()
    num = (weights * v[:, :, None]).sum(3) + e_diagonal * v + e_carried * a
    den = weights.sum(3) + e_diagonal + e_carried * bb
    return (num / den).view(b, n * c, d)[:, :t]


def wkv_recurrent(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """RWKV-4's WKV kernel one token at a time: the reference for `wkv_chunked`."""
    b, t, d = k.shape
    a = torch.zeros(b, d, dtype=k.dtype, device=k.device)
    bb, p = torch.zeros_like(a), torch.full_like(a, -1e38)
    ys = []
    for i in range(t):
        kt, vt = k[:, i], v[:, i]
        top = torch.maximum(p, u + kt)
        e1, e2 = (p - top).exp(), (u + kt - top).exp()
        ys.append((e1 * a + e2 * vt) / (e1 * bb + e2))
        decayed = p - w
        top = torch.maximum(decayed, kt)
        e1, e2 = (decayed - top).exp(), (kt - top).exp()
        a, bb, p = e1 * a + e2 * vt, e1 * bb + e2, top
    return torch.stack(ys, dim=1)
