"""Initialisation helpers for the parts: each part calls the one its reference code uses on itself."""

import torch
from torch import nn


def normal_init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """GPT-2's init (nanoGPT's `_init_weights`) on every nn.Linear and nn.Embedding inside `module`: weights
    N(0, std), biases zero. The parts whose reference code initialises this way call it on themselves."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            torch.nn.init.normal_(m.weight, mean=0.0, std=std)
            if getattr(m, "bias", None) is not None:
                torch.nn.init.zeros_(m.bias)
    return module


def fla_init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """flash-linear-attention's model init (`FLAPreTrainedModel._init_weights`, fla/models/modeling_utils.py, and the
    models' own copies): every nn.Linear and nn.Conv1d weight (short convolutions included) N(0, std), biases zero.
    The fla-derived mixers call it on themselves; their other parameters (A_log, dt_bias, norms) keep the layer's
    own init, as fla's models leave them."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv1d):
            torch.nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    return module
