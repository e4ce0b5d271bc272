import pytest
import torch

from harness.mfu import PEAK_BF16_FLOPS, mfu, peak_flops


def test_mfu_is_achieved_over_peak():
    # nanoGPT's GPT-2 124M check: 6N + 12LHQT per token at 1024 context on an A100 at 37% MFU
    n, L, H, Q, T = 124e6, 12, 12, 64, 1024
    flops_per_token = 6 * n + 12 * L * H * Q * T
    tokens_per_s = 0.37 * PEAK_BF16_FLOPS["A100"] / flops_per_token
    assert mfu(flops_per_token, tokens_per_s, PEAK_BF16_FLOPS["A100"]) == pytest.approx(0.37)


def test_peak_is_unknown_on_cpu_unless_given():
    assert peak_flops(torch.device("cpu")) is None and mfu(1.0, 1.0, None) is None
    assert peak_flops(torch.device("cpu"), override=1e12) == 1e12


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_known_gpu_has_a_peak():
    assert peak_flops(torch.device("cuda")) is not None, torch.cuda.get_device_name()
