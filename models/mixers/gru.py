"""Gated recurrent unit (Cho et al. 2014), one layer of torch.nn.GRU with d_model hidden units: a classic recurrent
baseline for the state-tracking and formal-language tasks.

Reference: PyTorch's own `torch.nn.GRU` (cuDNN on CUDA), with its default init (uniform(+-1/sqrt(d_model)); nn.GRU is
not an nn.Linear, so the backbone's init leaves it alone). PyTorch's variant applies the reset gate after the hidden
matmul (n_t = tanh(W_in x_t + b_in + r_t (W_hn h_{t-1} + b_hn)), as cuDNN does; Cho et al. reset h before it).
Strictly causal by construction. `recurrent(x)` spells out the same cell one token at a time from the same weights
(r, z from sigmoid; h_t = (1 - z) n_t + z h_{t-1}); tests/test_rnn_forms.py compares it with the fused kernel.
"""

import torch
from torch import Tensor, nn

from models.mixers.base import Mixer


class GRU(Mixer):
    def __init__(self, d_model: int, *, max_seq_len: int, layer_idx: int, bias: bool = True):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        self.rnn = nn.GRU(d_model, d_model, num_layers=1, bias=bias, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.rnn(x)[0]

    def recurrent(self, x: Tensor) -> Tensor:
        w_ih, w_hh = self.rnn.weight_ih_l0, self.rnn.weight_hh_l0
        b_ih, b_hh = (self.rnn.bias_ih_l0, self.rnn.bias_hh_l0) if self.rnn.bias else (0.0, 0.0)
        h = x.new_zeros(x.shape[0], self.d_model)
        inputs, ys = x @ w_ih.T + b_ih, []
        for t in range(x.shape[1]):
            x_r, x_z, x_n = inputs[:, t].chunk(3, dim=-1)
            h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            h = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
            ys.append(h)
        return torch.stack(ys, dim=1)

    def flops_per_token(self, seq_len: int) -> int:
        # The matmuls use each weight once per token: 6 * parameters counts them. Beyond them, the cell's
        # elementwise work per hidden unit: 2 sigmoids, 1 tanh, 3 products, 4 sums (~10 d forward); x3 for training.
        return 3 * 10 * self.d_model
