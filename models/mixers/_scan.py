"""The diagonal linear recurrence h_t = a_t * h_{t-1} + x_t (h_{-1} = 0) shared by the gated RNN mixers (RG-LRU),
as a chunked scan in log space, and as the plain loop it is checked against.

Within a chunk of c steps, h_t = sum_{s<=t} exp(L_t - L_s) x_s + exp(L_t) h_start with L the cumulative log decay:
every exponent is <= 0, so nothing overflows however strong the decay. The chunks' end states obey the same
recurrence over chunks (decay exp(L_last), input the chunk's local end state), which is scanned the same way,
recursively: depth log_c(T), no Python loop over time.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def diagonal_scan(x: Tensor, log_a: Tensor, chunk_size: int) -> Tensor:
    """x, log_a (<= 0): (batch, seq, channels) -> h (batch, seq, channels), h_t = exp(log_a_t) h_{t-1} + x_t.
    A chunk of 1 is taken as 2 (the recursion over chunk ends must shorten the sequence)."""
    b, t, d = x.shape
    c = min(max(chunk_size, 2), t)
    n = -(-t // c)
    pad = lambda z: F.pad(z, (0, 0, 0, n * c - t)).view(b, n, c, d)  # zero padding is future: no effect on t < T
    x, log_a = pad(x), pad(log_a)
    cum = log_a.cumsum(2)  # L_t within each chunk
    causal = torch.ones(c, c, dtype=torch.bool, device=x.device).tril()[..., None]
    weights = (cum[:, :, :, None] - cum[:, :, None, :]).masked_fill(~causal, float("-inf")).exp()  # (b, n, c, c, d)
    local = (weights * x[:, :, None]).sum(3)  # the chunk's own inputs, from a zero state
    if n > 1:
        ends = diagonal_scan(local[:, :, -1], cum[:, :, -1], chunk_size)  # the true state at each chunk's end
        start = F.pad(ends[:, :-1], (0, 0, 1, 0))  # the state entering each chunk
        local = local + cum.exp() * start[:, :, None]
    return local.reshape(b, n * c, d)[:, :t]


def diagonal_scan_recurrent(x: Tensor, log_a: Tensor) -> Tensor:
    """The same recurrence one step at a time: the reference for `diagonal_scan`."""
    h, ys = torch.zeros_like(x[:, 0]), []
    for t in range(x.shape[1]):
        h = log_a[:, t].exp() * h + x[:, t]
        ys.append(h)
    return torch.stack(ys, dim=1)
