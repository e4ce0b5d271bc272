"""Normalization layers. Each factory takes `d_model` and returns an nn.Module of shape (..., d) -> (..., d)."""

from torch import nn


def layernorm(d_model: int, *, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    """Ba et al. 2016."""
    return nn.LayerNorm(d_model, eps=eps, bias=bias)


def rmsnorm(d_model: int, *, eps: float = 1e-6) -> nn.Module:
    """Zhang & Sennrich 2019."""
    return nn.RMSNorm(d_model, eps=eps)
