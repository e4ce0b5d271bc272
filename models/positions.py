"""Positional schemes.

Two kinds: embedding positions (`learned`) are added to the token embeddings by the backbone; attention
positions (`rope`) are handed to every mixer that declares `accepts_position = True` and act on queries and keys.
Each factory takes `d_model` and `max_seq_len` and returns a module, or None for no positional information.
"""

import torch
from torch import Tensor, nn


class LearnedPosition(nn.Module):
    """A learned absolute position embedding (GPT-2)."""

    kind = "embedding"

    def __init__(self, d_model: int, *, max_seq_len: int):
        super().__init__()
        self.embedding = nn.Embedding(max_seq_len, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.embedding.weight[: x.shape[1]]


class RotaryPosition(nn.Module):
    """Rotary position embedding on queries and keys (Su et al. 2021, RoFormer), half-split layout."""

    kind = "attention"

    def __init__(self, d_model: int, *, max_seq_len: int, base: float = 10000.0):
        super().__init__()
        self.base, self.max_seq_len = base, max_seq_len
        self._cache: dict = {}

    def _cos_sin(self, seq_len: int, head_dim: int, device, dtype) -> tuple[Tensor, Tensor]:
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


def none(d_model: int, *, max_seq_len: int) -> None:
    """No positional information (NoPE): causal attention alone must infer order."""
    return None
