import pytest
import torch

from harness.run.mfu import PEAK_BF16_FLOPS, mfu, peak_flops, peak_of


def test_mfu_is_achieved_over_peak():
    # nanoGPT's GPT-2 124M check: 6N + 12LHQT per token at 1024 context on an A100 at 37% MFU
    n, L, H, Q, T = 124e6, 12, 12, 64, 1024
    flops_per_token = 6 * n + 12 * L * H * Q * T
    tokens_per_s = 0.37 * PEAK_BF16_FLOPS["A100"] / flops_per_token
    assert mfu(flops_per_token, tokens_per_s, PEAK_BF16_FLOPS["A100"]) == pytest.approx(0.37)


def test_the_models_flops_per_token_are_palms_formula_on_gpt2_small(compose):
    """6 * non-embedding params (Kaplan et al.: no embedding, no head) + 12 * L * H * Q * T, from the attention
    mixer's own term; the head's 6 * d_model * vocab is charged per scored target."""
    from harness.run.build import build_model

    cfg = compose(
        [
            "task=lm_text",
            "task.seq_len=1024",
            "task.vocab_size=50304",
            "model.d_model=768",
            "model.n_layers=12",
            "model.mixer.n_heads=12",
            "model.max_seq_len=1024",
        ]
    )
    with torch.device("meta"):
        model = build_model(cfg)
    n = model.num_params(non_embedding=True)
    assert n == 12 * (4 * 768 * 768 + 8 * 768 * 768 + 4 * 768) + 2 * 768  # GPT-2 small, no biases, no head
    assert model.num_params() == n + model.num_embedding_params()
    assert model.flops_per_token(1024) == 6 * n + 12 * 12 * 12 * 64 * 1024
    assert model.head_flops_per_scored() == 6 * 768 * 50304


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40", 181e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA A10G", 70e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA GeForce RTX 3060", None),
        ("Tesla T4", None),
    ],
)
def test_a_device_name_finds_its_own_peak_and_no_other(name, peak):
    assert peak_of(name) == peak


def test_peak_is_unknown_on_cpu_unless_given():
    assert peak_flops(torch.device("cpu")) is None and mfu(1.0, 1.0, None) is None
    assert peak_flops(torch.device("cpu"), override=1e12) == 1e12


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_known_gpu_has_a_peak():
    assert peak_flops(torch.device("cuda")) is not None, torch.cuda.get_device_name()
