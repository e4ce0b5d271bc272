"""RWKV-7 "Goose" time mixing (Peng et al. 2025, "RWKV-7 "Goose" with Expressive Dynamic State Evolution"): the
generalised delta rule with a vector-valued decay w_t and a vector-valued in-context learning rate a_t, per head on a
(key x value) state,

    S_t = (diag(w_t) - kk_t (a_t * kk_t)^T) S_{t-1} + k_t v_t^T,    o_t = S_t^T r_t,

with kk_t = L2-normalise(k_t * k_k) per head, the written key k_t * (1 + (a_t - 1) k_a), and the soft-clamped decay
w_t = exp(-e^{-0.5} sigmoid(w_0 + tanh(x_w W_1) W_2)) in (0.545, 1) per key channel. Around it, as in BlinkDL/RWKV-LM
`RWKV-v7/train_temp/src/model.py` (`RWKV_Tmix_x070`) and flash-linear-attention's `fla/layers/rwkv7.py`: token
shift with a learned mix per branch (r, w, k, v, a, g), r, k, v projections, low-rank a = sigmoid(a_0 + x_a A_1 A_2)
and output gate g = sigmoid(x_g G_1) G_2, GroupNorm per head (eps = head_dim * 1e-5), the bonus
(r . (k * r_k)) v per head, then W_o(o * g); their initialisations (zigzag and linear channel profiles, zero first
low-rank factors, orthogonal second ones scaled 0.1, r and v ~ U(+-0.5/sqrt C), k ~ U(+-0.05/sqrt C)).

The value residual as the reference: every layer but the first mixes its v with the first layer's,
v <- v + (v_first - v) sigmoid(v_0 + x_v V_1 V_2) (v_0 = 0.73 - 0.4 linear, V_1 zero, V_2 orthogonal 0.1); the
backbone hands each RWKV-7 layer the model's first one (`use_first_layer`, models/backbone.py), whose v of the
current forward pass it reads. A layer built alone (no first layer given) takes its own v as v_first, where the
mix is the identity. The depth-dependent initialisation takes `n_layers` (the YAML passes ${model.n_layers}):
ratio_0_to_1 = layer_idx / (n_layers - 1), ratio_1_to_almost0 = 1 - layer_idx / n_layers, GroupNorm weights
((layer_idx + 1) / n_layers) ** 0.7, as RWKV_Tmix_x070 and fla's RWKV7Attention.
Deviations:
- W_o keeps PyTorch's default initialisation, not zeros (a zero output would make the layer's output independent of
  its input at init, which the contract tests reject; the backbone's own init applies as to every mixer);
- head_dim 16 by default (RWKV-7: 64), for archbench's widths.
Trained in a chunked form (`chunked_rwkv7`, the WY-style form of fla's `fla/ops/generalized_delta_rule/dplr/naive.py`
with one triangular solve per chunk); `recurrent` runs it token by token. On CUDA with flash-linear-attention,
`kernel=auto` runs fla's `chunk_rwkv7` on the same r, log w, k, v, -kk, kk * a.
"""

import math
from collections.abc import Callable, Iterable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Le
from torch import Tensor, nn

from models.mixers.base import Mixer
from models.mixers.delta_net import check_kernel, heads_last, resolve_fla, use_fla
from models.mixers.linear_attention import full_precision

LOG_W_MIN = -math.exp(-0.5)  # the soft clamp: log w_t in (-e^-0.5, 0), so w_t > 0.545
MAX_CHUNK = 64  # the chunked form's factored decays: e^{-cumulative log w} <= e^{0.61 * 64} ~ 1e17, inside float32


def chunked_rwkv7(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, *, chunk_size: int) -> Tensor:
    """o_t = S_t^T r_t with S_t = diag(w_t) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T, S_0 = 0, chunk by chunk.

    r, log_w, k, a, b: (batch, heads, seq, dk), log_w in [-e^-0.5, 0]; v: (batch, heads, seq, dv). Within a chunk,
    with c_t the cumulative log decay from the chunk start, the read-outs s_t = a_t^T S_{t-1} solve the unit
    lower-triangular system s_t - sum_{i<t} (a_t e^{c_{t-1} - c_i} . b_i) s_i = sum_{i<t} (a_t e^{c_{t-1} - c_i} . k_i)
    v_i + (a_t e^{c_{t-1}})^T S_0; then o_t = (r_t e^{c_t})^T S_0 + sum_{i<=t} (r_t e^{c_t - c_i} . b_i) s_i +
    (r_t e^{c_t - c_i} . k_i) v_i. The products e^{c_t - c_i} are factored as e^{c_t} e^{-c_i}, which the clamp
    bounds by e^{0.61 C}: chunk_size <= 64.
    """
    bsz, h, t, dk = k.shape
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = lambda z: F.pad(z, (0, 0, 0, n * c - t)).unflatten(2, (n, c))  # (b, h, n, c, d); padding is future
    r, log_w, k, v, a, b = map(pad, (r, log_w, k, v, a, b))
    cum = log_w.cumsum(3)
    last = cum[:, :, :, -1:]
    inv = (-cum).exp()
    r_in, a_in = r * cum.exp(), a * (cum - log_w).exp()  # seen from the chunk start: e^{c_t}, e^{c_{t-1}}
    k_g, b_g = k * inv, b * inv
    causal = torch.ones(c, c, dtype=torch.bool, device=r.device).tril()
    strict = causal.tril(-1)
    tri = lambda x, y, mask: (x @ y.transpose(-1, -2)).masked_fill(~mask, 0.0)
    A_ab, A_ak = tri(a_in, b_g, strict), tri(a_in, k_g, strict)
    A_rb, A_rk = tri(r_in, b_g, causal), tri(r_in, k_g, causal)
    eye = torch.eye(c, dtype=r.dtype, device=r.device)
    dv = v.shape[-1]
    u, w = torch.linalg.solve_triangular(
        eye - A_ab, torch.cat([A_ak @ v, a_in], dim=-1), upper=False, unitriangular=True
    ).split([dv, dk], dim=-1)
    o_v = A_rk @ v
    to_end = (last - cum).exp()  # e^{c_C - c_i} <= 1
    k_out, b_out, chunk_decay = k * to_end, b * to_end, last.exp().transpose(-1, -2)  # decay: (b, h, n, dk, 1)
    state, out = torch.zeros(bsz, h, dk, dv, dtype=v.dtype, device=v.device), []
    for i in range(n):
        s = u[:, :, i] + w[:, :, i] @ state  # (b, h, c, dv): a_t^T S_{t-1} for every t of the chunk
        out.append(o_v[:, :, i] + A_rb[:, :, i] @ s + r_in[:, :, i] @ state)
        state = (
            chunk_decay[:, :, i] * state
            + k_out[:, :, i].transpose(-1, -2) @ v[:, :, i]
            + b_out[:, :, i].transpose(-1, -2) @ s
        )
    return torch.stack(out, dim=2).flatten(2, 3)[:, :, :t]


def recurrent_rwkv7(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """The same recurrence one token at a time, as RWKV-7's own kernel computes it: the reference for the chunks."""
    bsz, h, t, dk = k.shape
    state, out = torch.zeros(bsz, h, dk, v.shape[-1], dtype=v.dtype, device=v.device), []
    for i in range(t):
        read = a[:, :, i, None, :] @ state  # (b, h, 1, dv): a^T S_{t-1}
        state = (
            log_w[:, :, i, :, None].exp() * state
            + b[:, :, i, :, None] @ read
            + k[:, :, i, :, None] * v[:, :, i, None, :]
        )
        out.append(r[:, :, i, None, :] @ state)
    return torch.cat(out, dim=2)


def _orthogonal(rows: int, cols: int, scale: float) -> Tensor:
    """The reference's ortho_init: orthogonal with gain sqrt(rows / cols) if rows > cols else 1, times scale."""
    gain = math.sqrt(rows / cols) if rows > cols else 1.0
    return nn.init.orthogonal_(torch.empty(rows, cols), gain=gain * scale)


def _lora_dim(factor: float, channels: int) -> int:
    return max(32, int(round(factor * channels**0.5 / 32) * 32))  # the reference's "suggestion"


class RWKV7TimeMix(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        head_dim: Annotated[int, Ge(1)] = 16,
        n_layers: Annotated[int, Ge(1)] = 2,
        chunk_size: Annotated[int, Ge(1), Le(MAX_CHUNK)] = 32,
        kernel: Literal["auto", "torch", "fla"] = "auto",
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        check_kernel(kernel)
        if layer_idx >= n_layers:
            raise ValueError(
                f"mixer.n_layers={n_layers} must exceed the layer index {layer_idx} (set it to model.n_layers)"
            )
        if d_model % head_dim:
            raise ValueError(f"mixer.head_dim={head_dim} must divide d_model={d_model}")
        C, N = d_model, head_dim
        self.n_heads, self.head_dim, self.chunk_size, self.kernel = C // N, N, chunk_size, kernel
        ratio_0_to_1 = layer_idx / (n_layers - 1) if n_layers > 1 else 0.0  # 0 to 1 over depth
        ratio_1_to_almost0 = 1.0 - layer_idx / n_layers  # 1 to ~0
        n = torch.arange(C, dtype=torch.float32)
        ddd = n / C
        linear = n / max(C - 1, 1) - 0.5
        zigzag = ((n % N) - (N - 1) / 2) / max((N - 1) / 2, 1e-9)
        zigzag = zigzag * zigzag.abs()
        www = -6 + 6 * (n / max(C - 1, 1)) ** (1 + ratio_0_to_1**0.3)
        mix = lambda p: nn.Parameter(1.0 - ddd ** (p * ratio_1_to_almost0))
        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (mix(p) for p in (0.2, 0.9, 0.7, 0.7, 0.9, 0.2))
        d_w, d_a, d_g = _lora_dim(2.5, C), _lora_dim(2.5, C), _lora_dim(5, C)
        self.w0 = nn.Parameter(www + 0.5 + zigzag * 2.5)
        self.w1, self.w2 = nn.Parameter(torch.zeros(C, d_w)), nn.Parameter(_orthogonal(d_w, C, 0.1))
        self.a0 = nn.Parameter(-0.19 + zigzag * 0.3 + linear * 0.4)
        self.a1, self.a2 = nn.Parameter(torch.zeros(C, d_a)), nn.Parameter(_orthogonal(d_a, C, 0.1))
        self.g1, self.g2 = nn.Parameter(torch.zeros(C, d_g)), nn.Parameter(_orthogonal(d_g, C, 0.1))
        self.v0 = self.v1 = self.v2 = None
        if layer_idx > 0:  # the value residual's gate (the reference's layer 0 has none)
            d_v = _lora_dim(1.7, C)
            self.v0 = nn.Parameter(0.73 - linear * 0.4)
            self.v1, self.v2 = nn.Parameter(torch.zeros(C, d_v)), nn.Parameter(_orthogonal(d_v, C, 0.1))
        self.__dict__["_first"] = None  # the model's first RWKV-7 layer (not a submodule: its weights are its own)
        self.__dict__["_v_first"] = None
        self.k_k = nn.Parameter(0.71 - linear * 0.1)
        self.k_a = nn.Parameter(torch.full((C,), 1.02))
        self.r_k = nn.Parameter(torch.full((self.n_heads, N), -0.04))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        with torch.no_grad():
            self.receptance.weight.uniform_(-0.5 / C**0.5, 0.5 / C**0.5)
            self.key.weight.uniform_(-0.05 / C**0.5, 0.05 / C**0.5)
            self.value.weight.uniform_(-0.5 / C**0.5, 0.5 / C**0.5)
        self.ln_x = nn.GroupNorm(self.n_heads, C, eps=N * 1e-5)
        with torch.no_grad():
            self.ln_x.weight.fill_(((layer_idx + 1) / n_layers) ** 0.7)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        """The reference decays only the linear layers' weights (2-D and named `.weight`): every other parameter,
        the low-rank factors and r_k included, is left undecayed."""
        linear = {id(m.weight) for m in (self.receptance, self.key, self.value, self.output)}
        return [p for p in self.parameters() if id(p) not in linear]

    def kernel_for(self, device_type: str, bf16: bool) -> str:
        return resolve_fla(self.kernel, device_type, bf16, needs_bf16=False)

    def use_first_layer(self, first: "RWKV7TimeMix") -> None:
        """Read v_first from `first` (the model's first RWKV-7 layer, possibly self) in every forward pass."""
        self.__dict__["_first"] = first

    def forward(self, x: Tensor) -> Tensor:
        if use_fla(self.kernel, x, needs_bf16=False):
            return self._mix(x, fla_rwkv7)
        return self._mix(x, lambda *args: chunked_rwkv7(*args, chunk_size=self.chunk_size))

    def recurrent(self, x: Tensor) -> Tensor:
        """The same map one token at a time (the RNN view)."""
        return self._mix(x, recurrent_rwkv7)

    def _mix(self, x: Tensor, scan: Callable[..., Tensor]) -> Tensor:
        bsz, t, C = x.shape
        xx = F.pad(x, (0, 0, 1, -1)) - x  # token shift: x_{t-1} - x_t, x_{-1} = 0
        xr, xw, xk, xv, xa, xg = (x + xx * mu for mu in (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g))
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        if self._first is self or self._first is None:
            self.__dict__["_v_first"] = v
        if self.v0 is not None:  # v <- lerp(v, v_first, gate)
            v_first = v if self._first is None else self._first._v_first
            if v_first is None or v_first.shape != v.shape:
                raise RuntimeError("RWKV-7's value residual: the first layer has not run on this input")
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        log_w = LOG_W_MIN * torch.sigmoid(full_precision(self.w0 + torch.tanh(xw @ self.w1) @ self.w2))
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)  # the in-context learning rate
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        heads = lambda z: full_precision(z.view(bsz, t, self.n_heads, self.head_dim).transpose(1, 2))
        kk = F.normalize(heads(k * self.k_k), dim=-1)
        k = k * (1 + (a - 1) * self.k_a)
        r_h, k_h, v_h, a_h = heads(r), heads(k), heads(v), heads(a)
        with torch.autocast(x.device.type, enabled=False):
            o = scan(r_h, heads(log_w), k_h, v_h, -kk, kk * a_h)  # (b, h, t, N)
        o = self.ln_x(o.transpose(1, 2).reshape(bsz * t, C)).view(bsz, t, self.n_heads, self.head_dim)
        o = o + (r_h * k_h * self.r_k[:, None]).sum(-1, keepdim=True).transpose(1, 2) * v_h.transpose(1, 2)
        return self.output((o.reshape(bsz, t, C) * g).to(x.dtype))

    def flops_per_token(self, seq_len: int) -> int:  # the same recurrence whichever kernel runs it
        # Chunked form per head, forward (K = V = head_dim, C = min(chunk, T)): four C x C score matrices 8CK, the
        # triangular solve with V + K right-hand sides C(V + K), their products with v and s 4CV, reading the state
        # for s and o and updating it with k and b 8KV; x3 for forward + backward.
        c, d = min(self.chunk_size, seq_len), self.head_dim
        return 3 * self.n_heads * (8 * c * d + c * 2 * d + 4 * c * d + 8 * d * d)


def fla_rwkv7(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """fla's chunked RWKV-7 kernel on (batch, heads, seq, dim) tensors (log decays, scale 1)."""
    from fla.ops.rwkv7 import chunk_rwkv7

    out = chunk_rwkv7(
        *(heads_last(z) for z in (r, log_w, k, v, a, b)), scale=1.0, safe_gate=True, lower_bound=LOG_W_MIN
    )
    return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)
