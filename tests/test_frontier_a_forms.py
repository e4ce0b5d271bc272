"""The 2025-26 delta-rule mixers (KDA, Gated DeltaProduct, Comba) beyond what the generic suites check: strict
causality at length 1,000, the scans in float32 under bf16 autocast, negative eigenvalues, the parameters without
weight decay, finite outputs on extreme inputs, DeltaProduct with one step being Gated DeltaNet and GDN-2 with equal
erase and write gates being KDA.
(Equivalence with flash-linear-attention: tests/test_reference_fla_frontier_a.py; chunked = recurrent form:
tests/test_recurrent_forms.py.)"""

import inspect

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import options

D, B = 32, 1
SCANS = {  # option -> the chunked kernels its forward calls
    "kda": ["chunked_delta_rule"],
    "gated_deltaproduct": ["chunked_delta_rule"],
    "comba": ["chunked_delta_rule"],
    "gated_deltanet2": ["chunked_delta_rule"],
    "gsa": ["chunked_slot_read", "chunked_linear_attention"],
    "hgrn": ["diagonal_scan"],
    "rwkv6": ["chunked_rwkv6"],
}
NEW = [n for n in SCANS if n in options("model/mixer")]
NEG_EIGVAL = ["kda", "gated_deltaproduct", "gated_deltanet2"]


def build(compose, name, *overrides, seq_len=64, seed=0):
    cfg = compose([f"model/mixer={name}", *(f"model.mixer.{o}" for o in overrides)])
    torch.manual_seed(seed)
    return instantiate(cfg.model.mixer)(D, max_seq_len=seq_len, layer_idx=0)


def test_the_new_mixers_are_registered():
    assert NEW == list(SCANS)


@pytest.mark.parametrize("name", NEW)
def test_strictly_causal_at_length_1000(compose, name):
    """Past many chunks (16 and 64 by default; DeltaProduct's chunks count 2 steps per token): changing token t
    changes no output before t, and changes output t."""
    mixer = build(compose, name, seq_len=1000)
    x = torch.randn(B, 1000, D)
    with torch.no_grad():
        y = mixer(x)
        for t in (517, 999):
            x2 = x.clone()
            x2[:, t] += torch.randn(B, D)
            y2 = mixer(x2)
            torch.testing.assert_close(y2[:, :t], y[:, :t], rtol=0, atol=1e-6)
            assert not torch.allclose(y2[:, t], y[:, t])


@pytest.mark.parametrize("name", NEW)
def test_the_scan_runs_in_float32_under_bf16_autocast(compose, name, monkeypatch):
    """Gates, decays, beta, q, k, v reach the scans in float32 with autocast off, whatever the autocast outside."""
    mixer = build(compose, name)
    module, seen = inspect.getmodule(type(mixer).forward), []

    def spying(real):
        def spy(*args, **kwargs):
            seen.append([z.dtype for z in [*args, *kwargs.values()] if isinstance(z, torch.Tensor)])
            seen[-1].append(torch.is_autocast_enabled("cpu"))
            return real(*args, **kwargs)

        return spy

    for kernel in SCANS[name]:
        monkeypatch.setattr(module, kernel, spying(getattr(module, kernel)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mixer(torch.randn(B, 40, D))
    assert y.dtype == torch.bfloat16
    assert len(seen) == len(SCANS[name])
    assert all(all(s is torch.float32 for s in call[:-1]) and call[-1] is False for call in seen)


@pytest.mark.parametrize("name", NEG_EIGVAL)
def test_negative_eigenvalues_double_the_range(compose, name):
    plain, neg = build(compose, name, "allow_neg_eigval=false"), build(compose, name, "allow_neg_eigval=true")
    neg.load_state_dict(plain.state_dict())
    x = torch.randn(B, 20, D)
    assert not torch.allclose(plain(x), neg(x))
    assert neg.transition_range() == (-1.0, 1.0) and plain.transition_range() == (0.0, 1.0)


def test_deltaproduct_defaults_to_negative_eigenvalues_as_the_paper(compose):
    assert build(compose, "gated_deltaproduct").transition_range() == (-1.0, 1.0)


@pytest.mark.parametrize(
    ("name", "undecayed"),
    [
        ("kda", {"A_log", "dt_bias"}),
        ("gated_deltaproduct", {"A_log", "dt_bias"}),
        ("comba", {"A_log", "dt_bias", "D"}),
        ("gated_deltanet2", {"A_log", "dt_bias"}),
    ],
)
def test_no_weight_decay_follows_fla(compose, name, undecayed):
    """fla flags A_log, dt_bias (and Comba's D) with _no_weight_decay; nothing else."""
    m = build(compose, name)
    assert {n for n, p in m.named_parameters() if any(p is q for q in m.no_weight_decay())} == undecayed


@pytest.mark.parametrize("name", NEW)
def test_long_extreme_inputs_stay_finite(compose, name):
    """Every weight x20 and large inputs over 1,024 steps: the chunked forms take exponents <= 0 only."""
    mixer = build(compose, name, seq_len=1024)
    with torch.no_grad():
        for p in mixer.parameters():
            p.mul_(20)
    x = (5 * torch.randn(1, 1024, D)).requires_grad_()
    y = mixer(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_one_householder_step_is_gated_deltanet(compose):
    """DeltaProduct with n = 1 (and GDN's beta range) is Gated DeltaNet: same parameter names, same map."""
    gdp = build(compose, "gated_deltaproduct", "num_householder=1", "allow_neg_eigval=false")
    gdn = build(compose, "gated_deltanet", "kernel=torch", seed=1)
    gdn.load_state_dict(gdp.state_dict(), strict=True)
    x = torch.randn(2, 70, D)
    torch.testing.assert_close(gdp(x), gdn(x), rtol=1e-5, atol=1e-6)
    two = build(compose, "gated_deltaproduct", "num_householder=2", "allow_neg_eigval=false")
    assert not torch.allclose(two(x), gdn(x), atol=1e-3)


def test_gdn2_with_erase_and_write_gates_equal_to_beta_is_kda(compose):
    """GDN-2's gates b (per key channel) and w (per value channel) both set to KDA's beta of their head (W_b's row
    repeated): KDA's map. Different gates: a different map."""
    kda, gdn2 = build(compose, "kda"), build(compose, "gated_deltanet2", seed=1)
    state = dict(kda.state_dict())
    state["b_proj.weight"] = kda.b_proj.weight.detach().repeat_interleave(kda.dk, dim=0)
    state["w_proj.weight"] = kda.b_proj.weight.detach().repeat_interleave(kda.dv, dim=0)
    gdn2.load_state_dict(state, strict=True)
    x = torch.randn(2, 40, D)
    torch.testing.assert_close(gdn2(x), kda(x), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        gdn2.w_proj.weight.normal_()
    assert not torch.allclose(gdn2(x), kda(x), atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------------
# RWKV-7's debts (issue 31, item 4): the value residual and the depth-dependent init


def _rwkv7(layer_idx, n_layers=4, seed=0):
    from models.mixers.rwkv7 import RWKV7TimeMix

    torch.manual_seed(seed)
    return RWKV7TimeMix(D, max_seq_len=64, layer_idx=layer_idx, n_layers=n_layers, kernel="torch")


def test_rwkv7_later_layers_mix_in_the_first_layers_values():
    """v <- v + (v_first - v) sigmoid(v_0 + x_v V_1 V_2) with v_first the first layer's v of the same pass: layer 1's
    output moves with layer 0's input; with the gate shut (v_0 -> -inf) it is the layer alone; fully open, it is the
    layer with layer 0's values (RWKV_Tmix_x070, fla's RWKV7Attention)."""
    first, later = _rwkv7(0), _rwkv7(1, seed=1)
    assert first.v0 is None and later.v0 is not None
    first.use_first_layer(first)
    later.use_first_layer(first)
    x0, x1 = torch.randn(2, 30, D), torch.randn(2, 30, D)
    with torch.no_grad():
        first(x0)
        y = later(x1)
        first(x0 + 1.0)
        assert not torch.allclose(later(x1), y)
        later.v0.fill_(-1e4)  # gate 0: no residual
        alone = _rwkv7(1, seed=1)
        alone.load_state_dict(later.state_dict())
        torch.testing.assert_close(later(x1), alone(x1), rtol=1e-6, atol=1e-7)
        later.v0.fill_(1e4)  # gate 1: v is the first layer's v (of x0 + 1)
        v_first = first._v_first.clone()
        alone.value.forward = lambda _: v_first  # the layer alone, its value projection returning those values
        torch.testing.assert_close(later(x1), alone(x1), rtol=1e-5, atol=1e-6)


def test_the_backbone_links_every_rwkv7_layer_to_the_first(compose):
    cfg = compose(["model/mixer=rwkv7", "model.n_layers=3", "model.d_model=32", "task.vocab_size=50"])
    model = instantiate(cfg.model)
    mixers = [b.mixer for b in model.blocks]
    assert all(m._first is mixers[0] for m in mixers)


@pytest.mark.parametrize("n_layers", [1, 4])
def test_rwkv7_init_follows_depth(n_layers):
    """GroupNorm weights ((i + 1) / n) ** 0.7, mixes 1 - (c / C) ** (p (1 - i / n)), decay profile by i / (n - 1)."""
    layers = [_rwkv7(i, n_layers) for i in range(n_layers)]
    for i, m in enumerate(layers):
        torch.testing.assert_close(m.ln_x.weight, torch.full((D,), ((i + 1) / n_layers) ** 0.7))
        ddd = torch.arange(D) / D
        torch.testing.assert_close(m.x_r.detach(), 1.0 - ddd ** (0.2 * (1 - i / n_layers)))
    if n_layers > 1:
        assert not torch.allclose(layers[0].w0, layers[-1].w0)
    with pytest.raises(ValueError, match="n_layers=4 must exceed the layer index 4"):
        _rwkv7(4, 4)
