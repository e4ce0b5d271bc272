"""Every mixer with a `recurrent(x)` form (one token at a time, the RNN view) agrees with the parallel or chunked
form its `forward` trains with, for any chunk size, and stays finite on long sequences with extreme inputs."""

import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF, options

D, T, B = 32, 37, 2  # T is no multiple of the chunk sizes below, so the padded last chunk is exercised


def _has_recurrent(name: str) -> bool:
    return hasattr(get_class(OmegaConf.load(CONF / "model" / "mixer" / f"{name}.yaml")._target_), "recurrent")


def _has_chunks(name: str) -> bool:
    return "chunk_size" in OmegaConf.load(CONF / "model" / "mixer" / f"{name}.yaml")


RECURRENT = [name for name in options("model/mixer") if _has_recurrent(name)]
CHUNKED = [name for name in RECURRENT if _has_chunks(name)]
LOG_SPACE = ["linear_attention", "based", "retention", "gla", "rwkv"]  # the chunked kernels with log-space decays


def build(compose, name, *overrides, seq_len=T, seed=0):
    cfg = compose([f"model/mixer={name}", *(f"model.mixer.{o}" for o in overrides)])
    torch.manual_seed(seed)
    return instantiate(cfg.model.mixer)(D, max_seq_len=seq_len, layer_idx=0)


def test_the_recurrent_mixers_are_found():
    assert set(LOG_SPACE) <= set(CHUNKED)


# float64: a wrong recurrence is off by O(1); the tolerance leaves room only for rounding (FFTs, float32 internals).
TOL = {"rtol": 1e-6, "atol": 1e-7}


@pytest.mark.parametrize("name", RECURRENT)
def test_parallel_form_matches_recurrent_form(compose, name):
    mixer = build(compose, name, *(["chunk_size=8"] if name in CHUNKED else [])).double()
    x = 2 * torch.randn(B, T, D, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), mixer.recurrent(x), **TOL)


@pytest.mark.parametrize("name", CHUNKED)
def test_chunk_size_does_not_change_the_output(compose, name):
    x = torch.randn(B, T, D, dtype=torch.float64)
    ys = [build(compose, name, f"chunk_size={c}").double()(x) for c in (1, 5, 64)]
    torch.testing.assert_close(ys[0], ys[1], **TOL)
    torch.testing.assert_close(ys[0], ys[2], **TOL)


@pytest.mark.parametrize("name", LOG_SPACE)
def test_long_extreme_inputs_stay_finite(compose, name):
    """Large activations and strong decays over 1024 steps: log-space decays and per-row maxima keep exp finite."""
    mixer = build(compose, name, seq_len=1024)
    with torch.no_grad():
        for p in mixer.parameters():
            p.mul_(20)  # large q, k (RWKV: e^{k} far beyond float32), strong decays and gates
    x = (5 * torch.randn(1, 1024, D)).requires_grad_()
    y = mixer(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_rwkv_forgets_with_its_time_decay(compose):
    """With a fast decay the WKV average is dominated by recent tokens: the first token stops mattering."""
    mixer = build(compose, "rwkv", seq_len=64)
    with torch.no_grad():
        mixer.time_decay.fill_(3.0)  # w = e^3: each step multiplies old weights by e^{-20}
    x = torch.randn(1, 64, D)
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert not torch.allclose(mixer(x2)[:, 1], mixer(x)[:, 1])
    torch.testing.assert_close(mixer(x2)[:, 10:], mixer(x)[:, 10:], rtol=0, atol=1e-6)
