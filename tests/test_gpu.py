"""The CUDA path: exact repeats with trainer.deterministic=true, and the fast path (trainer=gpu: bf16, compile)
training end to end with its MFU recorded. Skipped without a CUDA device (CI has none)."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from harness.run.build import build_model
from harness.run.mfu import peak_flops
from harness.run.train import TrainConfig, seed_everything, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TASK = [
    "task.vocab_size=256",
    "task.seq_len=128",
    "task.num_kv_pairs=8",
    "task.num_train=4096",
    "task.num_val=256",
    "task.num_test=256",
]


def fit(compose, overrides, **trainer):
    cfg = compose([*TASK, *overrides])
    settings = TrainConfig(
        **{**OmegaConf.to_container(cfg.trainer), "max_steps": 40, "eval_every": 20, "progress": False, **trainer}
    )
    seed_everything(0, deterministic=settings.deterministic)
    model, task = build_model(cfg), instantiate(cfg.task)
    flops = {
        "flops_per_token": model.flops_per_token(task.seq_len),
        "head_flops_per_scored": model.head_flops_per_scored(),
    }
    return train(model, task.splits(0), settings, seed=0, **flops), model


@pytest.mark.parametrize("mixer", ["attention", "sliding_window", "hyena", "mamba"])
def test_deterministic_gpu_runs_repeat_exactly(compose, mixer):
    try:
        a, _ = fit(compose, [f"model/mixer={mixer}", "trainer=gpu", "trainer.compile=false"], deterministic=True)
        b, _ = fit(compose, [f"model/mixer={mixer}", "trainer=gpu", "trainer.compile=false"], deterministic=True)
    finally:
        torch.use_deterministic_algorithms(False)
    assert a["metrics"] == b["metrics"] and a["history"] == b["history"]


def test_the_gpu_preset_trains_compiled_in_bf16_and_records_its_mfu(compose):
    out, model = fit(compose, ["trainer=gpu", "model.mixer.n_heads=4"])
    assert out["cost"]["device"].startswith("cuda") and out["metrics"]["val/loss"] < 6
    assert out["cost"]["peak_memory_bytes"] > 0
    if peak_flops(torch.device("cuda")) is not None:
        assert 0 < out["cost"]["mfu"] < 1


def test_gla_on_flash_linear_attention_matches_the_pytorch_reference():
    """The Triton kernel of flash-linear-attention (archbench[gpu]) against GLA's own chunked form: outputs and
    gradients of the same weights on the same input, in fp32."""
    pytest.importorskip("fla")
    from models.mixers.gla import GatedLinearAttention

    torch.manual_seed(0)
    ref = GatedLinearAttention(256, max_seq_len=512, layer_idx=0, kernel="torch").cuda()
    fast = GatedLinearAttention(256, max_seq_len=512, layer_idx=0, kernel="fla").cuda()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 500, 256, device="cuda")  # not a multiple of fla's chunk
    y_ref, y_fast = ref(x), fast(x)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-3, atol=1e-3)
    g_ref = torch.autograd.grad(y_ref.square().mean(), list(ref.parameters()))
    g_fast = torch.autograd.grad(y_fast.square().mean(), list(fast.parameters()))
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-4)
