"""The 2025-26 mixers of issue 31, part B (Mamba-3, PaTH attention, ...): what the generic suites do not check.

Strict causality at a long length (1,000: many chunks), decays and gates handed to the scan in fp32 under bf16
autocast, finite outputs and gradients on long extreme inputs, and the weight-decay groups their references declare.
Equivalence with the authors' code: tests/test_reference_fla_frontier_b.py; chunked against recurrent forms:
tests/test_recurrent_forms.py.
"""

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import options

D, B = 32, 2
NEW = [
    n
    for n in ("mamba3", "path_attn", "log_linear_mamba2", "diff_attention", "stickbreaking_attn", "rebased", "mesa_net")
    if n in options("model/mixer")
]


def build(compose, name, *overrides, seq_len=1000, seed=0):
    cfg = compose([f"model/mixer={name}", *(f"model.mixer.{o}" for o in overrides)])
    torch.manual_seed(seed)
    return instantiate(cfg.model.mixer)(D, max_seq_len=seq_len, layer_idx=1)


def test_the_new_mixers_are_registered():
    assert {"mamba3", "path_attn", "log_linear_mamba2", "diff_attention"} <= set(NEW)


@pytest.mark.parametrize("name", NEW)
def test_strictly_causal_at_length_1000(compose, name):
    mixer = build(compose, name)
    x = torch.randn(1, 1000, D)
    with torch.no_grad():
        y = mixer(x)
        for t in (1, 500, 999):
            x2 = x.clone()
            x2[:, t] += torch.randn(D)
            y2 = mixer(x2)
            assert torch.equal(y2[:, :t], y[:, :t]), f"output before {t} changed"
            assert not torch.allclose(y2[:, t], y[:, t])


# the function each mixer hands its decays, gates and cumulative sums to: under bf16 autocast all must arrive in fp32
SCANS = {
    "mamba3": "models.mixers.mamba3.chunked_ssd",
    "path_attn": "models.mixers.path_attn.path_scores",
    "log_linear_mamba2": "models.mixers.log_linear_mamba2.chunked_log_linear",
    "stickbreaking_attn": "models.mixers.stickbreaking_attn.stickbreaking",
    "rebased": "models.mixers.linear_attention.chunked_linear_attention",
    "mesa_net": "models.mixers.mesa_net.mesa",
}  # differential attention has no decays or gates: its lambda is computed in fp32 from fp32 parameters


@pytest.mark.parametrize("name", [n for n in NEW if n in SCANS])
def test_bf16_autocast_hands_the_scan_fp32(compose, name, monkeypatch):
    import importlib

    module, attr = SCANS[name].rsplit(".", 1)
    module = importlib.import_module(module)
    real, seen = getattr(module, attr), []

    def spy(*args, **kwargs):
        seen.extend(a.dtype for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, attr, spy)
    mixer = build(compose, name, seq_len=100)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = mixer(torch.randn(B, 100, D))
    assert y.dtype == torch.bfloat16, "autocast did not reach the layer: the check below would prove nothing"
    assert seen and set(seen) == {torch.float32}, seen


@pytest.mark.parametrize("name", NEW)
def test_long_extreme_inputs_stay_finite(compose, name):
    mixer = build(compose, name, seq_len=1024)
    with torch.no_grad():
        for p in mixer.parameters():
            p.mul_(20)
    x = (5 * torch.randn(1, 1024, D)).requires_grad_()
    y = mixer(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


NO_DECAY = {
    "mamba3": {"dt_bias", "D"},
    "path_attn": set(),
    "log_linear_mamba2": {"dt_bias", "A_log", "L", "D"},
    "diff_attention": set(),
    "stickbreaking_attn": set(),
    "rebased": set(),
    "mesa_net": {"lambda_params"},
}  # the parameters each reference flags _no_weight_decay


@pytest.mark.parametrize("name", NEW)
def test_no_weight_decay_follows_the_reference(compose, name):
    mixer = build(compose, name, seq_len=16)
    ids = {id(p) for p in mixer.no_weight_decay()}
    assert {n for n, p in mixer.named_parameters() if id(p) in ids} == NO_DECAY[name]


def test_log_linear_levels_are_the_fenwick_buckets():
    """Query t reads key s < t in bucket bit_length(t xor s): the 2^(l-1) keys just before t's lowest l-1 bits are
    cleared, as fla's construct_level_mask builds them (t = 13 = 0b1101: s = 12 in level 1, 8..11 in level 3,
    0..7 in level 4; level 2 is empty because bit 1 of t is 0)."""
    from models.mixers.log_linear_mamba2 import bit_length

    levels = bit_length(torch.tensor(13) ^ torch.arange(14)).tolist()
    assert levels == [4] * 8 + [3] * 4 + [1, 0]
