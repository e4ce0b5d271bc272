"""Long short-term memory (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000), one layer of
torch.nn.LSTM with d_model hidden units: a classic recurrent baseline for the state-tracking and formal-language tasks.

Reference: PyTorch's own `torch.nn.LSTM` (cuDNN on CUDA), with its default init (uniform(+-1/sqrt(d_model)) for every
weight and bias; nn.LSTM is not an nn.Linear, so the backbone's init leaves it alone). Strictly causal by
construction: a unidirectional RNN reads left to right. `recurrent(x)` spells out the same cell one token at a time
from the same weights (i, f, g, o = split(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh); c_t = f c_{t-1} + i g;
h_t = o tanh(c_t)), which tests/test_rnn_forms.py compares with the fused kernel.
"""

import torch
from torch import Tensor, nn

from models.mixers.base import Mixer


class LSTM(Mixer):
    def __init__(self, d_model: int, *, max_seq_len: int, layer_idx: int, bias: bool = True):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        self.rnn = nn.LSTM(d_model, d_model, num_layers=1, bias=bias, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.rnn(x)[0]

    def recurrent(self, x: Tensor) -> Tensor:
        w_ih, w_hh = self.rnn.weight_ih_l0, self.rnn.weight_hh_l0
        b = self.rnn.bias_ih_l0 + self.rnn.bias_hh_l0 if self.rnn.bias else 0.0
        h = c = x.new_zeros(x.shape[0], self.d_model)
        inputs, ys = x @ w_ih.T + b, []
        for t in range(x.shape[1]):
            i, f, g, o = (inputs[:, t] + h @ w_hh.T).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys, dim=1)

    def flops_per_token(self, seq_len: int) -> int:
        # The matmuls use each weight once per token: 6 * parameters counts them. Beyond them, the cell's
        # elementwise work per hidden unit: 3 sigmoids, 2 tanh, 3 products, 2 sums (~10 d forward); x3 for training.
        return 3 * 10 * self.d_model
