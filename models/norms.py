"""Normalization layers. Each factory takes `d_model` and returns an nn.Module of shape (..., d) -> (..., d)."""

from typing import Annotated

import torch
from annotated_types import Gt
from torch import Tensor, nn


def layernorm(d_model: int, *, eps: Annotated[float, Gt(0)] = 1e-5, bias: bool = True) -> nn.Module:
    """Ba et al. 2016."""
    return nn.LayerNorm(d_model, eps=eps, bias=bias)


def rmsnorm(d_model: int, *, eps: Annotated[float, Gt(0)] = 1e-6) -> nn.Module:
    """Zhang & Sennrich 2019."""
    return nn.RMSNorm(d_model, eps=eps)


class ScaleNorm(nn.Module):
    """Nguyen & Salazar 2019 ("Transformers without Tears"): g * x / ||x||, one learned scalar g, initialised to
    sqrt(d_model) so that the output starts with unit RMS."""

    def __init__(self, d_model: int, eps: Annotated[float, Gt(0)] = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.tensor(float(d_model) ** 0.5))

    def forward(self, x: Tensor) -> Tensor:
        return self.g * x / x.norm(dim=-1, keepdim=True).clamp_min(self.eps)


def scalenorm(d_model: int, *, eps: Annotated[float, Gt(0)] = 1e-5) -> nn.Module:
    return ScaleNorm(d_model, eps=eps)


def none(d_model: int) -> nn.Module:
    """No normalization: the identity (for ablations; deep models usually need a norm to train)."""
    return nn.Identity()
