"""The frontier mixers (DeltaNet, Gated DeltaNet, Mamba-2, RWKV-7) against their references.

- layer level, float64: the chunked form `forward` trains with equals the token-by-token `recurrent` form, outputs
  and gradients, at a length past the chunk, with and without negative eigenvalues;
- kernel level, float32: the scans equal flash-linear-attention's pure-PyTorch naive references (fla/ops/*/naive.py)
  on the same q, k, v, beta, decays, outputs and gradients, at lengths past every chunk size (ours 64, fla's naive
  32/64); skipped when fla is not importable;
- on CUDA with fla: `kernel=fla` (fla's Triton chunk kernels) against `kernel=torch` (skipped without a GPU).
"""

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import options

D, B = 32, 2
FRONTIER = [n for n in ("delta_net", "gated_deltanet", "mamba2", "rwkv7") if n in options("model/mixer")]
NEG_EIGVAL = [n for n in ("delta_net", "gated_deltanet", "mamba2") if n in FRONTIER]
NEG_EIGVAL_ALL = [*NEG_EIGVAL, "mamba"]  # Mamba-1 too: the model of Grazzi et al.'s parity experiment
# (mixer, allow_neg_eigval) that kernel=fla runs: fla keeps decays in log space, so not Mamba-2's negative ones
FLA_KERNEL = [(n, False) for n in FRONTIER] + [(n, True) for n in ("delta_net", "gated_deltanet") if n in FRONTIER]

# float64 layer forms: rounding only. float32 against fla's naive loops: the chunked solve and the sequential loop
# round differently; measured max errors are ~1e-6 on outputs of size ~1 at T = 200.
TOL64 = {"rtol": 1e-7, "atol": 1e-8}
TOL32 = {"rtol": 1e-4, "atol": 2e-5}
TOL32_GRAD = {"rtol": 1e-3, "atol": 1e-4}


def build(compose, name, *overrides, seq_len=128, seed=0, d_model=D):
    cfg = compose([f"model/mixer={name}", *(f"model.mixer.{o}" for o in overrides)])
    torch.manual_seed(seed)
    return instantiate(cfg.model.mixer)(d_model, max_seq_len=seq_len, layer_idx=1)


def test_the_frontier_mixers_are_registered():
    assert {"delta_net", "gated_deltanet"} <= set(FRONTIER)


@pytest.mark.parametrize("neg", [False, True])
@pytest.mark.parametrize("name", FRONTIER)
def test_chunked_form_matches_recurrent_form_with_gradients(compose, name, neg):
    if neg and name not in NEG_EIGVAL:
        pytest.skip(f"{name} has no allow_neg_eigval option")
    overrides = ["chunk_size=16", *(["allow_neg_eigval=true"] if neg else [])]
    mixer = build(compose, name, *overrides).double()
    x = (2 * torch.randn(B, 45, D, dtype=torch.float64)).requires_grad_()  # 45: two full chunks and a partial one
    y_chunk, y_rec = mixer(x), mixer.recurrent(x)
    torch.testing.assert_close(y_chunk, y_rec, **TOL64)
    params = [x, *mixer.parameters()]
    g_chunk = torch.autograd.grad(y_chunk.square().sum(), params, allow_unused=True)
    g_rec = torch.autograd.grad(y_rec.square().sum(), params, allow_unused=True)
    for a, b in zip(g_chunk, g_rec, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, **TOL64)


def test_gated_deltanet_counts_heads_as_fla():
    """key dim = d_model * expand_k split over n_heads; value head dim = key head dim * expand_v (fla's head_dim and
    expand_v); the value dim need not be a multiple of n_heads by any other rule."""
    from models.mixers.gated_deltanet import GatedDeltaNet

    m = GatedDeltaNet(32, max_seq_len=16, layer_idx=0, n_heads=3)  # key dim 24
    assert (m.dk, m.dv, m.v_proj.out_features) == (8, 16, 48)
    with pytest.raises(ValueError, match="expand_k=0.75 must make d_model"):
        GatedDeltaNet(32, max_seq_len=16, layer_idx=0, n_heads=5)


@pytest.mark.parametrize("name", NEG_EIGVAL_ALL)
def test_negative_eigenvalues_double_the_range(compose, name):
    """allow_neg_eigval maps the same pre-activation to twice the rate (delta rule: beta in [0, 2]) or to the
    decay 2a - 1 (Mamba and Mamba-2: [-1, 1]); the default keeps [0, 1]."""
    plain, neg = build(compose, name), build(compose, name, "allow_neg_eigval=true")
    neg.load_state_dict(plain.state_dict())
    x = torch.randn(B, 20, D)
    assert not torch.allclose(plain(x), neg(x))
    low, high = neg.transition_range()
    assert low == -1.0 and high == 1.0 and plain.transition_range() == (0.0, 1.0)


def test_no_weight_decay_follows_the_references(compose):
    gdn = build(compose, "gated_deltanet")
    assert {id(p) for p in gdn.no_weight_decay()} == {id(gdn.A_log), id(gdn.dt_bias)}
    if "mamba2" in FRONTIER:
        m = build(compose, "mamba2")
        assert {id(p) for p in m.no_weight_decay()} == {id(m.A_log), id(m.dt_bias), id(m.D)}
    if "rwkv7" in FRONTIER:  # BlinkDL's optimizer groups decay only 2-D parameters named `.weight`
        m = build(compose, "rwkv7")
        decayed = {n for n, p in m.named_parameters() if id(p) not in {id(q) for q in m.no_weight_decay()}}
        assert decayed == {"receptance.weight", "key.weight", "value.weight", "output.weight"}


@pytest.mark.parametrize("name,neg", [(n, False) for n in FRONTIER] + [(n, True) for n in NEG_EIGVAL])
def test_long_extreme_inputs_stay_finite(compose, name, neg):
    """Every weight x20 and large inputs over 1,024 steps (strong decays, huge dt, beta and gates saturated): the
    chunked forms take exponents <= 0 only (RWKV-7: bounded by its decay clamp), so nothing overflows."""
    mixer = build(compose, name, *(["allow_neg_eigval=true"] if neg else []), seq_len=1024)
    with torch.no_grad():
        for p in mixer.parameters():
            p.mul_(20)
    x = (5 * torch.randn(1, 1024, D)).requires_grad_()
    y = mixer(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------------------------------------
# kernel level against flash-linear-attention's naive references (fp32, CPU)


def _inputs(b=2, h=3, t=200, dk=16, dv=8, seed=0, beta_max=1.0):
    """q, k (L2-normalised), v, beta in [0, beta_max], log decays in [-0.3, 0], all requiring grad, (b, h, t, .)."""
    from models.mixers.delta_net import l2_normalise

    g = torch.Generator().manual_seed(seed)
    q = l2_normalise(torch.randn(b, h, t, dk, generator=g))
    k = l2_normalise(torch.randn(b, h, t, dk, generator=g))
    v = torch.randn(b, h, t, dv, generator=g)
    beta = beta_max * torch.rand(b, h, t, generator=g)
    log_decay = -0.3 * torch.rand(b, h, t, generator=g)
    return [z.requires_grad_() for z in (q, k, v, beta, log_decay)]


def _compare(ours, ref, inputs, tol=TOL32, tol_grad=TOL32_GRAD):
    torch.testing.assert_close(ours, ref, **tol)
    w = torch.randn_like(ours)  # a random cotangent: every output element matters
    g_ours = torch.autograd.grad((ours * w).sum(), inputs, retain_graph=True)
    g_ref = torch.autograd.grad((ref * w).sum(), inputs)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, **tol_grad)


T = lambda z: z.transpose(1, 2)  # (b, h, t, .) <-> fla's (b, t, h, .)


@pytest.mark.parametrize("beta_max", [1.0, 2.0])
def test_delta_rule_matches_fla_naive(beta_max):
    pytest.importorskip("fla")
    from fla.ops.delta_rule.naive import delta_rule_chunkwise, delta_rule_recurrence

    from models.mixers.delta_net import chunked_delta_rule

    inputs = q, k, v, beta = _inputs(beta_max=beta_max)[:4]
    scale = q.shape[-1] ** -0.5
    ours = chunked_delta_rule(q * scale, k, v, beta, chunk_size=64)
    _compare(ours, delta_rule_recurrence(q, k, v, beta)[0], inputs)
    n = 192  # fla's chunkwise naive form needs a multiple of its chunk (32)
    ours_n = chunked_delta_rule(q[:, :, :n] * scale, k[:, :, :n], v[:, :, :n], beta[:, :, :n], chunk_size=64)
    ref_n = delta_rule_chunkwise(q[:, :, :n], k[:, :, :n], v[:, :, :n], beta[:, :, :n], chunk_size=32)[0]
    _compare(ours_n, ref_n, inputs)


@pytest.mark.parametrize("beta_max", [1.0, 2.0])
def test_gated_delta_rule_matches_fla_naive(beta_max):
    pytest.importorskip("fla")
    from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule

    from models.mixers.delta_net import chunked_delta_rule

    inputs = q, k, v, beta, g = _inputs(beta_max=beta_max)
    ours = chunked_delta_rule(q * q.shape[-1] ** -0.5, k, v, beta, g, chunk_size=64)
    _compare(ours, T(naive_recurrent_gated_delta_rule(T(q), T(k), T(v), T(beta), T(g))[0]), inputs)
    _compare(ours, T(naive_chunk_gated_delta_rule(T(q), T(k), T(v), T(g), T(beta), chunk_size=64)[0]), inputs)


def test_gated_deltanet_decay_matches_fla_gate():
    pytest.importorskip("fla")
    from fla.ops.gated_delta_rule.gate import naive_gdn_gate

    from models.mixers.gated_deltanet import gdn_log_decay

    g = torch.Generator().manual_seed(0)
    a, A_log, dt_bias = torch.randn(2, 50, 4, generator=g), torch.randn(4, generator=g), torch.randn(4, generator=g)
    torch.testing.assert_close(gdn_log_decay(a, A_log, dt_bias), naive_gdn_gate(a, A_log, dt_bias), rtol=0, atol=0)


@pytest.mark.skipif("mamba2" not in FRONTIER, reason="no mamba2 option")
def test_mamba2_ssd_matches_fla_simple_gla_naive():
    """Mamba-2's scan is simple GLA (a scalar decay per head) with q = C, k = B, v = dt x, log decay dt A, scale 1."""
    pytest.importorskip("fla")
    from fla.ops.simple_gla.naive import naive_chunk_simple_gla, naive_recurrent_simple_gla

    from models.mixers.mamba2 import chunked_ssd

    inputs = q, k, v, _, g = _inputs()
    inputs = [q, k, v, g]
    ours = chunked_ssd(q, k, v, g, chunk_size=64)
    _compare(ours, T(naive_recurrent_simple_gla(T(q), T(k), T(v), T(g), scale=1.0)[0]), inputs)
    _compare(ours, T(naive_chunk_simple_gla(T(q), T(k), T(v), T(g), scale=1.0, chunk_size=64)[0]), inputs)


@pytest.mark.skipif("mamba2" not in FRONTIER, reason="no mamba2 option")
def test_mamba2_negative_decays_match_the_papers_recurrence():
    """allow_neg_eigval: S_t = (2 e^{g_t} - 1) S_{t-1} + k_t v_t^T, the recurrence of Grazzi et al.'s modified GLA
    and Mamba kernels (flash-linear-attention_mod/fla/ops/gla/naive.py, use_negative_gates), written out here;
    the chunked form gets |a| and the signs apart. In float64: near a = 0 the gradient through log|a| scales by
    1/a, so float32 rounding shows there (measured: one element in 1,200 off by 2e-3 relative)."""
    from models.mixers.mamba2 import chunked_ssd

    q, k, v, _, g = (z.detach().double().requires_grad_() for z in _inputs())
    g = (4 * g).detach().requires_grad_()  # log decays in [-1.2, 0]: 2e^g - 1 in (-0.4, 1], ~40% negative
    a = 2 * g.exp() - 1
    ours = chunked_ssd(q, k, v, a.abs().log(), a < 0, chunk_size=64)
    state, ref = torch.zeros(*k.shape[:2], k.shape[-1], v.shape[-1], dtype=v.dtype), []
    for i in range(k.shape[2]):
        state = a[:, :, i, None, None] * state + k[:, :, i, :, None] * v[:, :, i, None, :]
        ref.append(q[:, :, i, None, :] @ state)
    assert (a < 0).float().mean() > 0.2
    _compare(ours, torch.cat(ref, dim=2), [q, k, v, g], TOL64, TOL64)


@pytest.mark.skipif("rwkv7" not in FRONTIER, reason="no rwkv7 option")
def test_rwkv7_matches_fla_dplr_naive():
    """RWKV-7's scan is fla's diagonal-plus-low-rank delta rule (the naive references chunk_rwkv7 reduces to):
    S_t = diag(w_t) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T with a = -kk, b = kk * a; fla's naive scales q by
    dk^-0.5, RWKV-7 by 1."""
    pytest.importorskip("fla")
    import torch.nn.functional as F
    from fla.ops.generalized_delta_rule.dplr.naive import dplr_chunkwise, dplr_recurrence

    from models.mixers.rwkv7 import LOG_W_MIN, chunked_rwkv7

    g = torch.Generator().manual_seed(0)
    b, h, t, d = 2, 3, 200, 16
    r, k, v = (
        torch.randn(b, h, t, d, generator=g),
        0.3 * torch.randn(b, h, t, d, generator=g),
        torch.randn(b, h, t, d, generator=g),
    )
    kk = F.normalize(torch.randn(b, h, t, d, generator=g), dim=-1)
    rate = torch.rand(b, h, t, d, generator=g)
    log_w = LOG_W_MIN * torch.rand(b, h, t, d, generator=g)
    inputs = [z.requires_grad_() for z in (r, k, v, kk, rate, log_w)]
    ours = chunked_rwkv7(r, log_w, k, v, -kk, kk * rate, chunk_size=16)
    rel = {"rtol": 1e-4, "atol": 1e-4}  # outputs of size ~10 here
    _compare(ours, dplr_recurrence(r * d**0.5, k, v, -kk, kk * rate, log_w)[0], inputs, rel, TOL32_GRAD)
    n = 192  # fla's chunkwise naive form needs a multiple of its chunk (32)
    cut = lambda z: z[:, :, :n]
    ref_n = dplr_chunkwise(cut(r) * d**0.5, cut(k), cut(v), -cut(kk), cut(kk * rate), cut(log_w), chunk_size=32)[0]
    ours_n = chunked_rwkv7(cut(r), cut(log_w), cut(k), cut(v), -cut(kk), cut(kk * rate), chunk_size=16)
    _compare(ours_n, ref_n, inputs, rel, TOL32_GRAD)


# ---------------------------------------------------------------------------------------------------------------------
# CUDA: fla's Triton kernels against the PyTorch forms


# head sizes fla's kernels are tuned for (powers of two >= 16) at d_model 256
GPU_SHAPES = {"delta_net": [], "gated_deltanet": ["n_heads=3"], "mamba2": [], "rwkv7": ["head_dim=64"]}


def _relative_error(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name,neg", FLA_KERNEL)
def test_fla_kernel_matches_the_pytorch_form_on_cuda(compose, name, neg):
    """Same weights, same input: fla's chunk kernel (kernel=fla) against the PyTorch chunked form (kernel=torch),
    outputs and every parameter's gradient. fla's chunk_delta_rule refuses float32, so DeltaNet's scan runs in bf16
    there: compared by relative error norms (2e-2 outputs, 5e-2 gradients); the others run in fp32 (1e-3, 1e-2)."""
    pytest.importorskip("fla")
    extra = [*GPU_SHAPES[name], *(["allow_neg_eigval=true"] if neg else [])]
    ref = build(compose, name, "kernel=torch", *extra, seq_len=512, d_model=256).cuda()
    fast = build(compose, name, "kernel=fla", *extra, seq_len=512, d_model=256).cuda()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 500, 256, device="cuda")  # past fla's chunk (64), not a multiple of it
    y_ref, y_fast = ref(x), fast(x)
    g_ref = torch.autograd.grad(y_ref.square().mean(), list(ref.parameters()))
    g_fast = torch.autograd.grad(y_fast.square().mean(), list(fast.parameters()))
    out_tol, grad_tol = (2e-2, 5e-2) if name == "delta_net" else (1e-3, 1e-2)
    assert _relative_error(y_fast, y_ref) < out_tol
    for (n, _), a, b in zip(ref.named_parameters(), g_fast, g_ref, strict=True):
        assert _relative_error(a, b) < grad_tol, n


FLA_LAYERS = {  # our option -> (fla layer, its constructor at d_model 256 matching our option with GPU_SHAPES)
    "delta_net": ("fla.layers.delta_net", "DeltaNet", {"num_heads": 4}),
    "gated_deltanet": ("fla.layers.gated_deltanet", "GatedDeltaNet", {"num_heads": 3, "head_dim": 64, "expand_v": 2}),
}
OUR_CONVS_AS_FLAS = {
    "convs.0.conv.weight": "q_conv1d.weight",
    "convs.1.conv.weight": "k_conv1d.weight",
    "convs.2.conv.weight": "v_conv1d.weight",
}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("neg", [False, True])
@pytest.mark.parametrize("name", [n for n in FLA_LAYERS if n in FRONTIER])
def test_the_layer_matches_flas_layer_on_cuda(compose, name, neg):
    """The whole layer (projections, short convs, L2 norms, beta, decay, output norm and gate) against fla's own
    layer holding the same weights (every name mapped, loaded strictly). fla's layer runs under bf16 autocast, as
    fla trains (chunk_delta_rule refuses float32), ours in float32: relative error norm of the outputs below 5e-2
    (a wrong formula is off by O(1))."""
    pytest.importorskip("fla")
    import importlib

    module, cls, kwargs = FLA_LAYERS[name]
    ours = build(
        compose,
        name,
        "kernel=torch",
        *GPU_SHAPES[name],
        *(["allow_neg_eigval=true"] if neg else []),
        seq_len=512,
        d_model=256,
    ).cuda()
    theirs = getattr(importlib.import_module(module), cls)(
        hidden_size=256, allow_neg_eigval=neg, layer_idx=0, **kwargs
    ).cuda()
    theirs.load_state_dict({OUR_CONVS_AS_FLAS.get(k, k): v for k, v in ours.state_dict().items()}, strict=True)
    x = torch.randn(2, 500, 256, device="cuda")
    with torch.no_grad():
        y_ours = ours(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y_theirs = theirs(x)[0].float()
    assert _relative_error(y_theirs, y_ours) < 5e-2
