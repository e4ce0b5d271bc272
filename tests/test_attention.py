"""The attention family's own checks: sliding windows against a dense banded reference, ALiBi's bias and slopes,
QK-norm's scale invariance, sinusoidal positions."""

import pytest
import torch
import torch.nn.functional as F

from models.mixers.attention import Attention
from models.mixers.sliding_window import SlidingWindowAttention
from models.positions import AlibiPosition, RotaryPosition, SinusoidalPosition, alibi_slopes

D, B = 32, 2


def positions():
    return {"none": None, "rope": RotaryPosition(D, max_seq_len=64), "alibi": AlibiPosition(D, max_seq_len=64)}


def dense_reference(mixer: Attention, x: torch.Tensor, window: int) -> torch.Tensor:
    """Full T x T softmax attention with a band mask and (for ALiBi) the bias, from the mixer's own projections."""
    q, k, v = mixer.project(x)
    t = x.shape[1]
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    visible = (i >= j) & (i - j < window)
    bias = torch.zeros(t, t) if mixer.score_bias is None else mixer.score_bias.bias(mixer.n_heads, i, j)
    y = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias.masked_fill(~visible, float("-inf")), enable_gqa=mixer.n_kv_heads != mixer.n_heads
    )
    return mixer.out(y.transpose(1, 2).reshape(x.shape))


@pytest.mark.parametrize("position", ["none", "rope", "alibi"])
@pytest.mark.parametrize("n_kv_heads", [4, 2])
@pytest.mark.parametrize("window", [1, 5, 8])
def test_blocked_sliding_window_matches_dense_banded_attention(position, n_kv_heads, window):
    torch.manual_seed(0)
    mixer = SlidingWindowAttention(
        D, max_seq_len=64, layer_idx=0, window=window, n_heads=4, n_kv_heads=n_kv_heads, position=positions()[position]
    )
    x = torch.randn(B, 23, D)  # 23 is no multiple of the window: the padded last block is exercised
    torch.testing.assert_close(mixer(x), dense_reference(mixer, x, window), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("position", ["none", "rope", "alibi"])
def test_a_window_covering_the_sequence_is_plain_attention(position):
    torch.manual_seed(0)
    swa = SlidingWindowAttention(D, max_seq_len=64, layer_idx=0, window=16, n_heads=4, position=positions()[position])
    full = Attention(D, max_seq_len=64, layer_idx=0, n_heads=4, position=positions()[position])
    full.load_state_dict(swa.state_dict())
    x = torch.randn(B, 16, D)
    torch.testing.assert_close(swa(x), full(x))
    longer = torch.randn(B, 40, D)  # past the window the two differ
    torch.testing.assert_close(swa(longer)[:, :16], full(longer)[:, :16])
    assert not torch.allclose(swa(longer)[:, 16:], full(longer)[:, 16:])


def test_alibi_attention_adds_minus_slope_times_distance():
    torch.manual_seed(0)
    mixer = Attention(D, max_seq_len=64, layer_idx=0, n_heads=2, position=AlibiPosition(D, max_seq_len=64))
    x = torch.randn(B, 12, D)
    q, k, v = mixer.project(x)
    slopes = torch.tensor([2.0**-4, 2.0**-8]).view(2, 1, 1)  # 2^(-8h/H), H = 2
    i, j = torch.arange(12)[:, None], torch.arange(12)[None, :]
    scores = q @ k.transpose(-1, -2) / (D // 2) ** 0.5 - slopes * (i - j)
    y = scores.masked_fill(j > i, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(mixer(x), mixer.out(y.transpose(1, 2).reshape(x.shape)))


def test_alibi_slopes_follow_the_paper():
    assert alibi_slopes(8) == [2.0**-k for k in range(1, 9)]
    # non-powers of two: the 4-head slopes, then every other slope of the 8-head sequence (Press et al.'s code)
    assert alibi_slopes(6) == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]


def test_alibi_needs_no_even_head_dim_but_rope_does():
    Attention(D, max_seq_len=8, layer_idx=0, n_heads=32, position=AlibiPosition(D, max_seq_len=8))
    with pytest.raises(ValueError, match="even head dim"):
        Attention(D, max_seq_len=8, layer_idx=0, n_heads=32, position=RotaryPosition(D, max_seq_len=8))


@pytest.mark.parametrize("qk_norm", [True, False])
def test_qk_norm_makes_scores_invariant_to_the_scale_of_q_and_k(qk_norm):
    torch.manual_seed(0)
    mixer = Attention(D, max_seq_len=16, layer_idx=0, n_heads=4, qk_norm=qk_norm)
    x = torch.randn(B, 16, D)
    y = mixer(x)
    with torch.no_grad():
        mixer.qkv.weight[: 2 * D] *= 7.0  # the q and k rows
    assert torch.allclose(mixer(x), y, atol=1e-5) == qk_norm


def test_sliding_window_rejects_a_bad_window():
    with pytest.raises(ValueError, match="window=0 must be positive"):
        SlidingWindowAttention(D, max_seq_len=8, layer_idx=0, window=0)


def test_sinusoidal_positions_are_vaswani_s_table():
    pe = SinusoidalPosition(8, max_seq_len=5)
    table = pe(torch.zeros(1, 5, 8))[0]
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0] * 4))
    angle = torch.tensor(3 / 10000 ** (2 / 8))  # t = 3, pair i = 1: angle t / base^(2i/d)
    torch.testing.assert_close(table[3, 2:4], torch.stack([angle.sin(), angle.cos()]))
    with pytest.raises(ValueError, match="even d_model"):
        SinusoidalPosition(7, max_seq_len=5)


@pytest.mark.parametrize("position", ["none", "alibi"])
@pytest.mark.parametrize("window", [None, 5, 32])  # None: full causal attention (ALiBi's flex path)
def test_flex_kernel_matches_sdpa_forward_and_backward(position, window):
    """kernel=flex (FlexAttention, eager off CUDA) against kernel=sdpa: the same function of the same weights.
    Forward only: eager FlexAttention has no backward on CPU (the CUDA test below checks gradients)."""
    if position == "none" and window is None:
        pytest.skip("plain causal attention always takes SDPA's flash path")
    torch.manual_seed(0)
    make = (
        (
            lambda **o: Attention(
                D, max_seq_len=64, layer_idx=0, n_heads=4, n_kv_heads=2, position=positions()[position], **o
            )
        )
        if window is None
        else (
            lambda **o: SlidingWindowAttention(
                D,
                max_seq_len=64,
                layer_idx=0,
                window=window,
                n_heads=4,
                n_kv_heads=2,
                position=positions()[position],
                **o,
            )
        )
    )
    sdpa = make(kernel="sdpa")
    flex = make(kernel="flex")
    flex.load_state_dict(sdpa.state_dict())
    x = torch.randn(B, 45, D)
    with torch.no_grad():
        torch.testing.assert_close(flex(x), sdpa(x), rtol=1e-5, atol=1e-5)


def test_an_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="mixer.kernel='triton' must be one of auto, sdpa, flex"):
        Attention(D, max_seq_len=8, layer_idx=0, kernel="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("position,window", [("alibi", None), ("none", 128), ("alibi", 128)])
def test_compiled_flex_on_cuda_matches_sdpa_in_bf16(position, window):
    torch.manual_seed(0)
    kw = dict(max_seq_len=1024, layer_idx=0, n_heads=8, n_kv_heads=4, position=positions()[position])
    cls, extra = (Attention, {}) if window is None else (SlidingWindowAttention, {"window": window})
    sdpa = cls(512, kernel="sdpa", **kw, **extra).cuda()
    flex = cls(512, kernel="auto", **kw, **extra).cuda()
    flex.load_state_dict(sdpa.state_dict())
    x = torch.randn(4, 1024, 512, device="cuda")
    with torch.autocast("cuda", torch.bfloat16):
        y_sdpa, y_flex = sdpa(x).float(), flex(x).float()
    torch.testing.assert_close(y_flex, y_sdpa, rtol=2e-2, atol=2e-2)
    g_sdpa = torch.autograd.grad(y_sdpa.square().mean(), list(sdpa.parameters()))
    g_flex = torch.autograd.grad(y_flex.square().mean(), list(flex.parameters()))
    for a, b in zip(g_flex, g_sdpa, strict=True):
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-3)
