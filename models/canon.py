"""Canon layers (Allen-Zhu 2025, "Physics of Language Models: Part 4.1, Architecture Design and the Magic of Canon
Layers"): a short causal depthwise convolution with a residual, h_t + sum_{j<K} w_j h_{t-j}, mixing each channel
with its own K-1 predecessors. The backbone option `canon=K` (0 = off) puts one before every block's mixer, on the
mixer's input (after the pre-norm): the paper's Canon-A, which any mixer can take.

Follows facebookresearch/PhysicsLM4, huggingface/canon_helper.py (create_canon, apply_canon with the defaults
canon_residual=True, canon_activation=False, canon_bias=False, canon_kernel=4): nn.Conv1d with groups = channels and
PyTorch's default init (uniform(+-1/sqrt(K)), weight std ~0.29 at K = 4), which the README warns must not be
overwritten by a model's small init (the backbone's init touches only Linear and Embedding).
"""

import torch.nn.functional as F
from torch import Tensor, nn


class Canon(nn.Module):
    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"canon={kernel_size} must be a kernel size >= 1 (or 0 for no Canon layers)")
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, seq, channels) -> same; output t sees inputs t-K+1..t (left zero padding)."""
        return x + self.conv(F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0))).transpose(1, 2)
