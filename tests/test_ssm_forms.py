"""Where a mixer has a parallel (convolution or chunked) form and a recurrent one, they compute the same map."""

import pytest
import torch

from models.mixers._conv import ShortConv, fft_conv
from models.mixers.mamba import Mamba, selective_scan, selective_scan_recurrent
from models.mixers.s4d import S4D


def test_fft_conv_is_the_causal_linear_convolution():
    torch.manual_seed(0)
    u, k = torch.randn(3, 5, 37, dtype=torch.float64), torch.randn(5, 37, dtype=torch.float64)
    direct = torch.stack([(k[:, : t + 1].flip(-1) * u[..., : t + 1]).sum(-1) for t in range(37)], -1)
    torch.testing.assert_close(fft_conv(u, k), direct)


def test_short_conv_looks_only_back():
    conv = ShortConv(4, kernel_size=3, bias=False)
    x = torch.zeros(1, 10, 4)
    x[0, 5] = 1.0
    y = conv(x)
    assert y[0, :5].abs().max() == 0 and y[0, 8:].abs().max() == 0  # impulse at 5 reaches 5, 6, 7 only
    torch.testing.assert_close(y[0, 5:8], conv.conv.weight[:, 0].T.flip(0))


@pytest.mark.parametrize("seq_len", [1, 16, 100])
def test_s4d_convolution_kernel_equals_its_recurrence(seq_len):
    torch.manual_seed(0)
    mixer = S4D(8, max_seq_len=seq_len, layer_idx=0, d_state=16).double()
    x = torch.randn(2, seq_len, 8, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), mixer.recurrent(x))


@pytest.mark.parametrize("seq_len,chunk_size", [(1, None), (37, None), (64, 8), (50, 7), (64, 64), (20, 100)])
def test_chunked_selective_scan_equals_the_recurrence(seq_len, chunk_size):
    torch.manual_seed(0)
    b, d, n = 2, 6, 5
    x, B, C = torch.randn(b, seq_len, d), torch.randn(b, seq_len, n), torch.randn(b, seq_len, n)
    dt = torch.nn.functional.softplus(torch.randn(b, seq_len, d) * 2)  # steps up to ~e^2: strong decays too
    A = -torch.rand(d, n) * 8
    x, dt, B, C, A = (z.double() for z in (x, dt, B, C, A))
    torch.testing.assert_close(selective_scan(x, dt, A, B, C, chunk_size), selective_scan_recurrent(x, dt, A, B, C))


@pytest.mark.parametrize("neg", [False, True])
def test_mamba_block_forms_agree_in_value_and_gradient(neg):
    torch.manual_seed(0)
    mixer = Mamba(16, max_seq_len=64, layer_idx=0, chunk_size=8, allow_neg_eigval=neg).double()
    x = torch.randn(2, 45, 16, dtype=torch.float64, requires_grad=True)
    y_chunked, y_recurrent = mixer(x), mixer.recurrent(x)
    torch.testing.assert_close(y_chunked, y_recurrent)
    (g_chunked,) = torch.autograd.grad(y_chunked.square().sum(), x)
    (g_recurrent,) = torch.autograd.grad(y_recurrent.square().sum(), x)
    torch.testing.assert_close(g_chunked, g_recurrent)


def test_selective_scan_is_stable_when_decays_are_extreme():
    """exp(-sum dt A) over a chunk would overflow fp32 here; the chunked scan multiplies only decays <= 1."""
    b, L, d, n = 1, 64, 3, 4
    dt = torch.full((b, L, d), 50.0)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    x, B, C = torch.randn(b, L, d), torch.randn(b, L, n), torch.randn(b, L, n)
    y = selective_scan(x, dt, A, B, C, chunk_size=32)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, selective_scan_recurrent(x, dt, A, B, C))


@pytest.mark.parametrize("seq_len,chunk_size", [(1, None), (37, None), (50, 7), (64, 64)])
def test_negative_decays_follow_grazzi_et_al_selective_scan_ref(seq_len, chunk_size):
    """allow_neg_eigval: h_t = (2 exp(dt_t A) - 1) h_t-1 + dt_t x_t B_t, the recurrence of Grazzi et al.'s modified
    mamba_ssm (automl/unlocking_state_tracking, mamba_dev/mamba_ssm/ops/selective_scan_interface.py,
    selective_scan_ref: deltaA = 2 * exp(delta A) - 1), written out here; the chunked scan carries the signs."""
    torch.manual_seed(0)
    b, d, n = 2, 6, 5
    x, B, C = torch.randn(b, seq_len, d), torch.randn(b, seq_len, n), torch.randn(b, seq_len, n)
    dt = torch.nn.functional.softplus(torch.randn(b, seq_len, d) * 2)
    A = -torch.rand(d, n) * 8
    x, dt, B, C, A = (z.double() for z in (x, dt, B, C, A))
    h, ys = torch.zeros(b, d, n, dtype=torch.float64), []
    for t in range(seq_len):
        a = 2 * torch.exp(dt[:, t, :, None] * A) - 1
        h = a * h + (dt[:, t] * x[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    expected = torch.stack(ys, 1)
    assert (2 * torch.exp(dt[..., None] * A) - 1 < 0).float().mean() > 0.3  # many decays are negative
    torch.testing.assert_close(selective_scan(x, dt, A, B, C, chunk_size, negative=True), expected)
    torch.testing.assert_close(selective_scan_recurrent(x, dt, A, B, C, negative=True), expected)
