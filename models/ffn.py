"""Feed-forward layers. Each factory takes `d_model` and returns an nn.Module (or None for no feed-forward).
Weights N(0, 0.02), biases zero, as GPT-2 (nanoGPT `_init_weights`) and T5/Shazeer's GLU variants train them."""

from typing import Annotated

import torch.nn.functional as F
from annotated_types import Gt
from torch import Tensor, nn

from models.init import normal_init_

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "relu2": lambda x: F.relu(x).square()}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown (choose from {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Two-layer MLP d -> expansion*d -> d (Vaswani et al. 2017); presets mlp (gelu), mlp_relu, mlp_relu2, mlp_silu."""

    def __init__(
        self, d_model: int, *, expansion: Annotated[float, Gt(0)] = 4, activation: str = "gelu", bias: bool = False
    ):
        super().__init__()
        hidden = int(expansion * d_model)
        self.act = _activation(activation)
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.down = nn.Linear(hidden, d_model, bias=bias)
        normal_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.up(x)))


class GLU(nn.Module):
    """Gated feed-forward, down(act(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants Improve Transformer").

    The hidden width is 2/3 of the MLP's so that parameters match an MLP of the same expansion, as in the paper.
    The paper's variants are presets in conf/model/ffn/: swiglu (silu), geglu (gelu), reglu (relu).
    """

    def __init__(
        self, d_model: int, *, expansion: Annotated[float, Gt(0)] = 4, activation: str = "silu", bias: bool = False
    ):
        super().__init__()
        hidden = int(2 * expansion * d_model / 3)
        self.act = _activation(activation)
        self.gate = nn.Linear(d_model, hidden, bias=bias)
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.down = nn.Linear(hidden, d_model, bias=bias)
        normal_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.gate(x)) * self.up(x))


def none(d_model: int) -> None:
    """No feed-forward: blocks are mixer-only (as in Zoology's MQAR models)."""
    return None
