"""Positional schemes.

Two kinds. Embedding positions (`learned`, `sinusoidal`) are added to the token embeddings by the backbone.
Attention positions are handed to every mixer that declares `accepts_position = True` and come in two shapes:
a rotation `position(q, k) -> (q, k)` (`rope`), or an additive score bias `position.bias(n_heads, q_pos, k_pos)`
(`alibi`), told apart by whether the module has a `bias` method.
Each factory takes `d_model` and `max_seq_len` and returns a module, or None for no positional information.
"""

import math
from typing import Annotated

import torch
from annotated_types import Gt
from torch import Tensor, nn


class LearnedPosition(nn.Module):
    """A learned absolute position embedding (GPT-2): N(0, 0.02), as GPT-2's wpe (nanoGPT `_init_weights`)."""

    kind = "embedding"

    def __init__(self, d_model: int, *, max_seq_len: int):
        super().__init__()
        self.embedding = nn.Embedding(max_seq_len, d_model)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.embedding.weight[: x.shape[1]]


class SinusoidalPosition(nn.Module):
    """Fixed sinusoidal position encoding added to the embeddings (Vaswani et al. 2017, section 3.5):
    PE[t, 2i] = sin(t / base^(2i/d)), PE[t, 2i+1] = cos(t / base^(2i/d))."""

    kind = "embedding"

    def __init__(self, d_model: int, *, max_seq_len: int, base: Annotated[float, Gt(1)] = 10000.0):
        super().__init__()
        if d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got d_model={d_model}")
        inv_freq = base ** (-torch.arange(0, d_model, 2).float() / d_model)
        angles = torch.outer(torch.arange(max_seq_len).float(), inv_freq)
        table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # interleaved sin, cos
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.shape[1]].to(x.dtype)


class RotaryPosition(nn.Module):
    """Rotary position embedding on queries and keys (Su et al. 2021, RoFormer), half-split layout."""

    kind = "attention"

    def __init__(self, d_model: int, *, max_seq_len: int, base: Annotated[float, Gt(1)] = 10000.0):
        super().__init__()
        self.base, self.max_seq_len = base, max_seq_len
        self._cache: dict = {}

    def _cos_sin(self, seq_len: int, head_dim: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (seq_len, head_dim, device, dtype)
        if key not in self._cache:
            inv_freq = 1.0 / self.base ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
            angles = torch.outer(torch.arange(seq_len, device=device).float(), inv_freq)
            self._cache = {key: (angles.cos().to(dtype), angles.sin().to(dtype))}
        return self._cache[key]

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """q, k: (batch, heads, seq, head_dim) -> rotated q, k."""
        cos, sin = self._cos_sin(q.shape[-2], q.shape[-1], q.device, q.dtype)
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class AlibiPosition(nn.Module):
    """Attention with linear biases (Press et al. 2022, ALiBi): head h adds -m_h * (i - j) to the score of query i
    on key j, with slopes m_h a geometric sequence (2^(-8/H), 2^(-16/H), ...). No parameters, nothing on q or k."""

    kind = "attention"

    def __init__(self, d_model: int, *, max_seq_len: int):
        super().__init__()
        self._slopes: dict = {}

    def slopes(self, n_heads: int, device: torch.device | str) -> Tensor:
        """(n_heads,) float32 slopes on `device`, made once per (n_heads, device): no copy to the device per step."""
        key = (n_heads, str(device))
        if key not in self._slopes:
            self._slopes[key] = torch.tensor(alibi_slopes(n_heads), device=device)
        return self._slopes[key]

    def bias(self, n_heads: int, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """Integer positions q_pos (..., Tq, 1) and k_pos (..., 1, Tk) -> float bias (n_heads, ..., Tq, Tk).
        Only j <= i matters: masking the future is the caller's job."""
        distance = (q_pos - k_pos).float()
        return -self.slopes(n_heads, q_pos.device).view(-1, *[1] * distance.dim()) * distance


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi's slopes: 2^(-8h/H) for h = 1..H when H is a power of two; otherwise the slopes of the nearest lower
    power of two followed by every other slope of the next one (Press et al.'s reference code)."""
    if n_heads < 1:
        raise ValueError(f"alibi needs n_heads >= 1, got {n_heads}")
    lower = 2 ** math.floor(math.log2(n_heads))
    geometric = lambda n: [2 ** (-8 * (h + 1) / n) for h in range(n)]
    return geometric(lower) + geometric(2 * lower)[0::2][: n_heads - lower]


def none(d_model: int, *, max_seq_len: int) -> None:
    """No positional information (NoPE): causal attention alone must infer order."""
    return None
