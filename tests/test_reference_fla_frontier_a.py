"""The 2025-26 delta-rule mixers (KDA, Gated DeltaProduct, Comba) against flash-linear-attention's layers running on
its naive PyTorch references (`pip install 'archbench[reference]'`), as tests/test_reference_fla.py does for GLA.

fla's layer is built with our weights (every parameter of both sides mapped by name) and its Triton parts are
swapped for PyTorch: the kernel for fla's own `fla/ops/*/naive.py` reference (with the pre-processing the kernel
does when called with `use_qk_l2norm_in_kernel`, `use_gate_in_kernel`, `use_beta_sigmoid_in_kernel`: the L2 norm
x / sqrt(sum x^2 + 1e-6) of fla's l2norm kernel, fla's `naive_kda_gate`, sigmoid), the short convolution for the
same causal depthwise convolution + SiLU, and the gated RMSNorm for fla's `rms_norm_ref` times the gate's
activation. So the projections, head split, gates, scales and output norm are fla's code, not ours. Same inputs
and weights -> same outputs and gradients (inputs and every parameter), fp32, at T = 150: past every chunk size of
ours (16, 64) and a multiple of none. Measured max differences are in docs/fidelity.md.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

with warnings.catch_warnings():  # "Triton is not supported on current platform, roll back to CPU"
    warnings.simplefilter("ignore", UserWarning)
    pytest.importorskip("fla")
    from fla.layers import comba as fla_comba
    from fla.layers import gated_deltaproduct as fla_gdp
    from fla.layers import gdn2 as fla_gdn2
    from fla.layers import gsa as fla_gsa
    from fla.layers import hgrn as fla_hgrn
    from fla.layers import kda as fla_kda
    from fla.layers import rwkv6 as fla_rwkv6
    from fla.modules.norm.layernorm import group_norm_ref, rms_norm_ref
    from fla.ops.comba.naive import naive_chunk_comba
    from fla.ops.gated_delta_product.naive import naive_recurrent_gated_delta_product
    from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule
    from fla.ops.gdn2.naive import naive_chunk_gdn2, naive_recurrent_gdn2
    from fla.ops.gsa.naive import naive_recurrent_gsa
    from fla.ops.hgrn.naive import naive_recurrent_hgrn
    from fla.ops.kda.gate import naive_kda_gate
    from fla.ops.kda.naive import naive_chunk_kda, naive_recurrent_kda
    from fla.ops.rwkv6.recurrent_naive import naive_recurrent_rwkv6

from models.mixers.comba import Comba
from models.mixers.gated_deltanet2 import GatedDeltaNet2
from models.mixers.gated_deltaproduct import GatedDeltaProduct
from models.mixers.gsa import GatedSlotAttention
from models.mixers.hgrn import HGRN
from models.mixers.kda import KimiDeltaAttention
from models.mixers.rwkv6 import RWKV6TimeMix
from tests.test_reference_fla import _check, _copy

pytestmark = pytest.mark.reference

D, T, BATCH, HEADS = 32, 150, 2, 4
# gradients of n T = 300-450 sequential float32 steps (the naive loops) against the chunked solve: measured up to
# ~3e-5 absolute on entries of size ~1e-2; a wrong formula is off by O(1)
GRAD_TOL = {"atol": 1e-4, "rtol": 1e-3}


def _l2(x):
    """fla's l2norm kernel (fla/modules/norm/l2norm.py): x / sqrt(sum x^2 + eps), eps 1e-6."""
    return x * torch.rsqrt(x.float().square().sum(-1, keepdim=True) + 1e-6)


def _torch_convs(monkeypatch, layer, names=("q_conv1d", "k_conv1d", "v_conv1d")):
    """fla's ShortConvolution (a Conv1d subclass whose forward is Triton) as the causal depthwise conv + SiLU it is."""
    for name in names:
        conv = getattr(layer, name)

        def forward(x, cache=None, output_final_state=False, cu_seqlens=None, conv=conv, **_):
            w = conv.weight  # (channels, 1, kernel)
            y = F.conv1d(F.pad(x.transpose(1, 2), (w.shape[-1] - 1, 0)), w, conv.bias, groups=w.shape[0])
            return F.silu(y).transpose(1, 2), None

        monkeypatch.setattr(conv, "forward", forward)


def _gated_norm(monkeypatch, norm, activation):
    """fla's FusedRMSNormGated (Triton) as rms_norm_ref(o) * act(g)."""
    act = {"sigmoid": torch.sigmoid, "swish": F.silu}[activation]
    monkeypatch.setattr(norm, "forward", lambda o, g: rms_norm_ref(o, norm.weight, None, eps=norm.eps) * act(g))


CONVS = {"convs.0.conv.weight": "q_conv1d.weight", "convs.1.conv.weight": "k_conv1d.weight"}
CONVS["convs.2.conv.weight"] = "v_conv1d.weight"


# ---------------------------------------------------------------------------------------------------------------------
# Kimi Delta Attention


def _kda_kernel(naive, **naive_kwargs):
    """fla's chunk_kda as the layer calls it (q, k L2-normalised, the gate and beta sigmoid in the kernel), on
    fla's naive reference."""

    def kernel(q, k, v, g, beta, A_log, dt_bias, allow_neg_eigval=False, **flags):
        assert flags["use_qk_l2norm_in_kernel"] and flags["use_gate_in_kernel"] and flags["use_beta_sigmoid_in_kernel"]
        assert flags.get("lower_bound") is None
        g = naive_kda_gate(g, A_log, dt_bias)
        beta = beta.float().sigmoid() * (2.0 if allow_neg_eigval else 1.0)
        return naive(_l2(q), _l2(k), v, g, beta, **naive_kwargs)[0], None

    return kernel


@pytest.mark.parametrize("neg", [False, True])
@pytest.mark.parametrize(
    ("chunk_size", "naive", "naive_kwargs"),
    [(16, naive_recurrent_kda, {}), (64, naive_recurrent_kda, {}), (16, naive_chunk_kda, {"chunk_size": 50})],
)
def test_kda_matches_fla_layer(monkeypatch, chunk_size, naive, naive_kwargs, neg):
    torch.manual_seed(0)
    ours = KimiDeltaAttention(D, max_seq_len=T, layer_idx=0, n_heads=HEADS, chunk_size=chunk_size, allow_neg_eigval=neg)
    ref = fla_kda.KimiDeltaAttention(hidden_size=D, head_dim=D // HEADS, num_heads=HEADS, allow_neg_eigval=neg)
    names = {n: n for n, _ in ours.named_parameters() if not n.startswith("convs.")}
    ours_params, ref_params = _copy(ref, ours, {**{v: k for k, v in CONVS.items()}, **names})
    monkeypatch.setattr(fla_kda, "chunk_kda", _kda_kernel(naive, **naive_kwargs))
    _torch_convs(monkeypatch, ref)
    _gated_norm(monkeypatch, ref.o_norm, "sigmoid")
    _check(ours, ours_params, lambda x: ref(x)[0], ref_params, torch.randn(BATCH, T, D))


# ---------------------------------------------------------------------------------------------------------------------
# Gated DeltaProduct


def _gdp_recurrent(q, k, v, g, beta, num_householder, use_qk_l2norm_in_kernel, **_):
    """fla's chunk_gated_delta_product as the layer calls it, on fla's naive recurrence (n steps per token)."""
    assert use_qk_l2norm_in_kernel
    scale = q.shape[-1] ** -0.5
    return naive_recurrent_gated_delta_product(_l2(q), _l2(k), v, g, beta, scale, num_householder=num_householder)[
        0
    ], None


def _gdp_chunk_ref(q, k, v, g, beta, num_householder, use_qk_l2norm_in_kernel, **_):
    """The same through fla's chunk_ref.py construction (the gated delta rule on n T steps, q at the last step of
    each token, g at the first), on fla's naive chunked gated delta rule (chunk 64) instead of its Triton kernel."""
    assert use_qk_l2norm_in_kernel
    b, t, h, dk = q.shape
    n = num_householder
    q_steps = q.new_zeros(b, t, n, h, dk)
    q_steps[:, :, -1] = _l2(q)
    g_steps = torch.zeros(b, t, n, h) if g is None else torch.stack([g, *[torch.zeros_like(g)] * (n - 1)], dim=2)
    o = naive_chunk_gated_delta_rule(
        q_steps.flatten(1, 2), _l2(k), v, g_steps.flatten(1, 2), beta, chunk_size=64, scale=dk**-0.5
    )[0]
    return o.unflatten(1, (t, n))[:, :, -1], None


@pytest.mark.parametrize(("n", "neg", "forget"), [(2, True, True), (3, False, True), (2, True, False)])
@pytest.mark.parametrize("kernel", [_gdp_recurrent, _gdp_chunk_ref])
def test_gated_deltaproduct_matches_fla_layer(monkeypatch, kernel, n, neg, forget):
    torch.manual_seed(0)
    kw = {"num_householder": n, "allow_neg_eigval": neg, "use_forget_gate": forget}
    ours = GatedDeltaProduct(D, max_seq_len=T, layer_idx=0, n_heads=HEADS, chunk_size=16, **kw)
    ref = fla_gdp.GatedDeltaProduct(hidden_size=D, head_dim=ours.dk, num_heads=HEADS, expand_v=2, **kw)
    names = {n: n for n, _ in ours.named_parameters() if not n.startswith("convs.")}
    ours_params, ref_params = _copy(ref, ours, {**{v: k for k, v in CONVS.items()}, **names})
    monkeypatch.setattr(fla_gdp, "chunk_gated_delta_product", kernel)
    _torch_convs(monkeypatch, ref)
    _gated_norm(monkeypatch, ref.o_norm, "swish")
    _check(ours, ours_params, lambda x: ref(x)[0], ref_params, torch.randn(BATCH, T, D), GRAD_TOL)


# ---------------------------------------------------------------------------------------------------------------------
# Comba


def _comba_chunk(q, k, v, p, g, beta, use_qk_l2norm_in_kernel, **_):
    """fla's chunk_comba as the layer calls it (q, k, p L2-normalised in the kernel), on fla's naive_chunk_comba.
    Not fla's naive_recurrent_comba: it decays the state before the read, unlike both Triton kernels."""
    assert use_qk_l2norm_in_kernel
    return naive_chunk_comba(_l2(q), _l2(k), v, _l2(p), g, beta, chunk_size=64)[0], None


@pytest.mark.parametrize(
    "options",
    [{}, {"use_gate": False, "correction_factor": 0.02}, {"use_output_correction": False, "use_inner_decay": False}],
)
@pytest.mark.parametrize("chunk_size", [16, 64])
def test_comba_matches_fla_layer(monkeypatch, chunk_size, options):
    torch.manual_seed(0)
    ours = Comba(D, max_seq_len=T, layer_idx=0, n_heads=HEADS, chunk_size=chunk_size, **options)
    with torch.no_grad():  # away from their init values, so that a wrong use of d or D shows
        for p in (ours.decay, ours.D):
            if p is not None:
                p.normal_()
    fla_options = {"use_output_gate": ours.g_proj is not None, **options}
    fla_options.pop("use_gate", None)
    ref = fla_comba.Comba(hidden_size=D, head_dim=ours.dk, num_heads=HEADS, expand_v=2, **fla_options)
    names = {n: n for n, _ in ours.named_parameters() if not n.startswith("convs.")}
    ours_params, ref_params = _copy(ref, ours, {**{v: k for k, v in CONVS.items()}, **names})
    monkeypatch.setattr(fla_comba, "chunk_comba", _comba_chunk)
    _torch_convs(monkeypatch, ref)
    if ours.g_proj is not None:
        _gated_norm(monkeypatch, ref.o_norm, "sigmoid")
    else:
        monkeypatch.setattr(
            ref.o_norm, "forward", lambda o: rms_norm_ref(o, ref.o_norm.weight, None, eps=ref.o_norm.eps)
        )
    _check(ours, ours_params, lambda x: ref(x)[0], ref_params, torch.randn(BATCH, T, D), GRAD_TOL)


# ---------------------------------------------------------------------------------------------------------------------
# Gated DeltaNet-2


def _gdn2_kernel(naive):
    def kernel(q, k, v, g, b, w, use_qk_l2norm_in_kernel, **_):
        """fla's chunk_gdn2 as the layer calls it (q, k L2-normalised in the kernel), on a naive reference."""
        assert use_qk_l2norm_in_kernel
        return naive(_l2(q), _l2(k), v, g, b, w)[0], None

    return kernel


@pytest.mark.parametrize("neg", [False, True])
@pytest.mark.parametrize(("chunk_size", "naive"), [(16, naive_recurrent_gdn2), (64, naive_chunk_gdn2)])
def test_gated_deltanet2_matches_fla_layer(monkeypatch, chunk_size, naive, neg):
    torch.manual_seed(0)
    ours = GatedDeltaNet2(D, max_seq_len=T, layer_idx=0, n_heads=HEADS, chunk_size=chunk_size, allow_neg_eigval=neg)
    ref = fla_gdn2.GatedDeltaNet2(hidden_size=D, head_dim=D // HEADS, num_heads=HEADS, allow_neg_eigval=neg)
    names = {n: n for n, _ in ours.named_parameters() if not n.startswith("convs.")}
    ours_params, ref_params = _copy(ref, ours, {**{v: k for k, v in CONVS.items()}, **names})
    monkeypatch.setattr(fla_gdn2, "chunk_gdn2", _gdn2_kernel(naive))
    _torch_convs(monkeypatch, ref)
    _gated_norm(monkeypatch, ref.o_norm, "sigmoid")
    _check(ours, ours_params, lambda x: ref(x)[0], ref_params, torch.randn(BATCH, T, D), GRAD_TOL)


# ---------------------------------------------------------------------------------------------------------------------
# Gated Slot Attention


@pytest.mark.parametrize(("chunk_size", "slots", "conv"), [(16, None, False), (64, 6, False), (16, None, True)])
def test_gsa_matches_fla_layer(monkeypatch, chunk_size, slots, conv):
    """fla's GatedSlotAttention with its chunk_gsa swapped for naive_recurrent_gsa, its swish feature map for
    F.silu and its fused rms_norm_linear for rms_norm_ref then the linear map."""
    torch.manual_seed(0)
    ours = GatedSlotAttention(
        D, max_seq_len=T, layer_idx=0, n_heads=HEADS, num_slots=slots, use_short_conv=conv, chunk_size=chunk_size
    )
    with torch.no_grad():  # weights of std ~0.2, not fla's 0.02: at 0.02 the slot scores are ~0 and their softmax
        for p in ours.parameters():  # uniform, so the first pass would hardly show in the output
            p.mul_(10)
    ref = fla_gsa.GatedSlotAttention(hidden_size=D, num_heads=HEADS, num_slots=slots, use_short_conv=conv, layer_idx=0)
    names = {n: n for n, _ in ours.named_parameters() if not n.startswith("convs.")}
    ours_params, ref_params = _copy(ref, ours, {**({v: k for k, v in CONVS.items()} if conv else {}), **names})

    def kernel(q, k, v, s, g, scale, **_):
        return naive_recurrent_gsa(q, k, v, s, g, scale=scale)

    monkeypatch.setattr(fla_gsa, "chunk_gsa", kernel)
    monkeypatch.setattr(fla_gsa, "fused_recurrent_gsa", kernel)
    monkeypatch.setattr(ref.feature_map, "forward", F.silu)
    monkeypatch.setattr(
        fla_gsa,
        "rms_norm_linear",
        lambda x, nw, nb, lw, lb: F.linear(rms_norm_ref(x, nw, nb, eps=1e-5), lw, lb),
    )
    if conv:
        _torch_convs(monkeypatch, ref)
    _check(ours, ours_params, lambda x: ref(x)[0], ref_params, torch.randn(BATCH, T, D), GRAD_TOL)


# ---------------------------------------------------------------------------------------------------------------------
# HGRN


@pytest.mark.parametrize(("layer_idx", "conv", "chunk_size"), [(0, False, 16), (1, False, 64), (2, True, 16)])
def test_hgrn_matches_fla_layer(monkeypatch, layer_idx, conv, chunk_size):
    """fla's HGRNAttention on naive_recurrent_hgrn, its swiglu and gated norm as torch, handed our layer's lower bound
    sigmoid(beta) as fla's model hands each layer its own (none in layer 0)."""
    torch.manual_seed(0)
    ours = HGRN(D, max_seq_len=T, layer_idx=layer_idx, n_layers=4, use_short_conv=conv, chunk_size=chunk_size)
    ref = fla_hgrn.HGRNAttention(hidden_size=D, use_short_conv=conv, layer_idx=layer_idx)
    names = {n: n for n, _ in ours.named_parameters() if not n.startswith("convs.") and n != "lower_bound"}
    conv_names = {"convs.0.conv.weight": "i_conv1d.weight", "convs.1.conv.weight": "f_conv1d.weight"}
    names.update({v: k for k, v in conv_names.items()} if conv else {})
    # fla's lower bound lives in its model and is handed to the layer: ours (the one unmapped parameter) is handed over
    bound_param = [ours.lower_bound] if ours.lower_bound is not None else []
    ours.lower_bound = None  # _copy maps every remaining parameter both ways
    ours_params, ref_params = _copy(ref, ours, names)
    ours.lower_bound = bound_param[0] if bound_param else None
    ours_params, ref_params = ours_params + bound_param, ref_params + bound_param
    monkeypatch.setattr(fla_hgrn, "chunk_hgrn", lambda x, g, **_: naive_recurrent_hgrn(x, g))
    monkeypatch.setattr(fla_hgrn, "swiglu", lambda x, y: F.silu(x) * y)
    _gated_norm(monkeypatch, ref.g_norm, "swish")
    if conv:  # fla's ShortConvolution here has no activation
        for name in ("i_conv1d", "f_conv1d"):
            c = getattr(ref, name)
            monkeypatch.setattr(
                c,
                "forward",
                lambda x, c=c, **_: (
                    F.conv1d(F.pad(x.transpose(1, 2), (3, 0)), c.weight, groups=D).transpose(1, 2),
                    None,
                ),
            )
    bound = (lambda: None) if ours.lower_bound is None else (lambda: torch.sigmoid(ours.lower_bound))
    _check(ours, ours_params, lambda x: ref(x, lower_bound=bound())[0], ref_params, torch.randn(BATCH, T, D), GRAD_TOL)


# ---------------------------------------------------------------------------------------------------------------------
# RWKV-6

RWKV6_NAMES = {  # fla's name -> ours
    "x_proj.0.mu": "shift_mu",
    "x_proj.0.linear.weight": "shift_down.weight",
    "x_proj.2.weight": "shift_up.weight",
    "x_bias": "shift_bias",
    "r_proj.linear.weight": "r_proj.weight",
    "w_proj.linear.lora.0.weight": "w_proj.down.weight",
    "w_proj.linear.lora.2.weight": "w_proj.up.weight",
    "w_proj.linear.lora.2.bias": "w_proj.up.bias",
    "k_proj.linear.weight": "k_proj.weight",
    "v_proj.linear.weight": "v_proj.weight",
    "g_proj.linear.weight": "g_proj.weight",
    "bonus": "bonus",
    "g_norm.weight": "g_norm.weight",
    "g_norm.bias": "g_norm.bias",
    "o_proj.weight": "o_proj.weight",
}


@pytest.mark.parametrize("chunk_size", [16, 64])
def test_rwkv6_matches_fla_layer(monkeypatch, chunk_size):
    """fla's RWKV6Attention on naive_recurrent_rwkv6 (heads-first layout), its token shift, GroupNorm and swish as
    torch. Every parameter is drawn N(0, 0.2) first: at init the shift mixes, their LoRA, the decay LoRA's first
    factor and the bonus are zero, and a wrong formula there would not show."""
    torch.manual_seed(0)
    ours = RWKV6TimeMix(D, max_seq_len=T, layer_idx=0, n_heads=HEADS, chunk_size=chunk_size)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0.0, 0.2)
    ref = fla_rwkv6.RWKV6Attention(hidden_size=D, num_heads=HEADS, layer_idx=0)
    ours_params, ref_params = _copy(ref, ours, RWKV6_NAMES)
    heads_first = lambda z: z.transpose(1, 2)

    def kernel(r, k, v, w, u, scale, **_):
        o = naive_recurrent_rwkv6(*(heads_first(z) for z in (r, k, v, w)), u, scale=scale)[0]
        return heads_first(o), None

    monkeypatch.setattr(fla_rwkv6, "chunk_rwkv6", kernel)
    monkeypatch.setattr(fla_rwkv6, "fused_recurrent_rwkv6", kernel)
    monkeypatch.setattr(fla_rwkv6, "token_shift", lambda x, cu_seqlens=None: F.pad(x, (0, 0, 1, -1)) - x)
    monkeypatch.setattr(
        ref.g_norm, "forward", lambda x: group_norm_ref(x, ref.g_norm.weight, ref.g_norm.bias, HEADS, eps=1e-5)
    )
    monkeypatch.setattr(ref, "gate_fn", F.silu)
    _check(ours, ours_params, lambda x: ref(x)[0], ref_params, torch.randn(BATCH, T, D), GRAD_TOL)


# ---------------------------------------------------------------------------------------------------------------------
# RWKV-7 (issue 31, item 4): the value residual and the depth-dependent init against fla's RWKV7Attention

RWKV7_LORAS = {"w": "w_lora", "a": "a_lora", "v": "v_lora"}  # ours: w0 + tanh(x w1) w2 etc.; fla: lora.2(act(lora.0 x))


def _rwkv7_pairs(ours, ref):
    """(our parameter, fla's, fla's -> our layout) for every parameter of both (each side's count asserted)."""
    flat = lambda z: z.reshape(-1)
    pairs = [(getattr(ours, f"x_{c}"), getattr(ref, f"x_{c}"), flat) for c in "rwkvag"]
    pairs += [(ours.k_k, ref.k_k, flat), (ours.k_a, ref.k_a, flat), (ours.r_k, ref.r_k, lambda z: z)]
    pairs += [(ours.ln_x.weight, ref.g_norm.weight, flat), (ours.ln_x.bias, ref.g_norm.bias, flat)]
    for mine, theirs in (("receptance", "r_proj"), ("key", "k_proj"), ("value", "v_proj"), ("output", "o_proj")):
        pairs.append((getattr(ours, mine).weight, getattr(ref, theirs).weight, lambda z: z))
    for c, lora in RWKV7_LORAS.items():
        if getattr(ours, f"{c}0") is None:
            assert not hasattr(ref, lora)
            continue
        m = getattr(ref, lora).lora
        pairs += [(getattr(ours, f"{c}0"), m[2].bias, flat), (getattr(ours, f"{c}1"), m[0].weight, lambda z: z.T)]
        pairs.append((getattr(ours, f"{c}2"), m[2].weight, lambda z: z.T))
    m = ref.g_lora.lora
    pairs += [(ours.g1, m[0].weight, lambda z: z.T), (ours.g2, m[2].weight, lambda z: z.T)]
    assert len(pairs) == len(list(ours.parameters())) == len(list(ref.parameters()))
    return pairs


@pytest.mark.parametrize("n_layers", [2, 5])
def test_rwkv7_value_residual_and_init_match_fla_layer(monkeypatch, n_layers):
    """Layers 0 and the last of an n-layer RWKV-7 against fla's RWKV7Attention (fuse_norm=False: torch's GroupNorm and
    F.normalize) with layer 0's v_first handed to the last, its Triton parts as torch (token shift, the six mixes,
    k * (1 + (a - 1) k_a), the output correction) and chunk_rwkv7 as fla's dplr_recurrence. Their init's
    depth-dependent parts (mixes, w0, a0, v0, k_k, k_a, r_k, GroupNorm weights) are compared first; then fla gets
    our weights and the outputs and every gradient are compared."""
    from fla.layers import rwkv7 as fla_rwkv7
    from fla.ops.generalized_delta_rule.dplr.naive import dplr_recurrence

    from models.mixers.rwkv7 import RWKV7TimeMix

    torch.manual_seed(0)
    idx = (0, n_layers - 1)
    ours = [RWKV7TimeMix(D, max_seq_len=T, layer_idx=i, n_layers=n_layers, head_dim=8, kernel="torch") for i in idx]
    ours[1].use_first_layer(ours[0])
    ours[0].use_first_layer(ours[0])
    refs = [
        fla_rwkv7.RWKV7Attention(hidden_size=D, head_dim=8, layer_idx=i, num_hidden_layers=n_layers, fuse_norm=False)
        for i in idx
    ]
    deterministic = ("x_", "w0", "a0", "v0", "k_k", "k_a", "r_k", "ln_x.weight")
    for mine, ref in zip(ours, refs, strict=True):
        for a, b, layout in _rwkv7_pairs(mine, ref):
            name = next(n for n, p in mine.named_parameters() if p is a)
            if name.startswith(deterministic):
                torch.testing.assert_close(a.detach(), layout(b.detach()), msg=lambda m, name=name: f"init {name}: {m}")
        with torch.no_grad():
            for a, b, layout in _rwkv7_pairs(mine, ref):
                b.copy_(layout(a.detach()).reshape(b.shape))  # each layout is its own inverse up to shape
    shift = lambda x, cu_seqlens=None, output_cache=False, cache=None: (F.pad(x, (0, 0, 1, -1)) - x, None)
    monkeypatch.setattr(fla_rwkv7, "token_shift", shift)
    monkeypatch.setattr(fla_rwkv7, "fused_addcmul_rwkv7", lambda x, d, *mus: [x + d * mu for mu in mus])
    monkeypatch.setattr(fla_rwkv7, "fused_k_rwkv7", lambda k, a, k_a: k.addcmul(k * (a - 1), k_a))

    def correction(o, r, k, r_k, v, g):
        bonus = (r * k * r_k).sum(-1, keepdim=True) * v  # (b, t, h, d)
        return (o + bonus.flatten(-2)) * g

    def kernel(r, w, k, v, a, b, scale, **_):
        heads_first = lambda z: z.transpose(1, 2)
        d = r.shape[-1]
        o = dplr_recurrence(*(heads_first(z) for z in (r * d**0.5, k, v, a, b, w)))[0]
        return heads_first(o), None

    monkeypatch.setattr(fla_rwkv7, "gate_output_correction", correction)
    monkeypatch.setattr(fla_rwkv7, "chunk_rwkv7", kernel)
    x0, x1 = torch.randn(BATCH, T, D, requires_grad=True), torch.randn(BATCH, T, D, requires_grad=True)
    y0_ours = ours[0](x0)
    y_ours = ours[1](x1)
    y0_ref, _, _, v_first = refs[0](x0)
    y_ref = refs[1](x1, v_first=v_first)[0]
    torch.testing.assert_close(y0_ours, y0_ref, atol=ATOL_RWKV7, rtol=1e-4)
    torch.testing.assert_close(y_ours, y_ref, atol=ATOL_RWKV7, rtol=1e-4)
    probe0, probe1 = torch.randn_like(y0_ours), torch.randn_like(y_ours)
    pairs = [p for m, r in zip(ours, refs, strict=True) for p in _rwkv7_pairs(m, r)]
    g_ours = torch.autograd.grad(
        (y0_ours * probe0).sum() + (y_ours * probe1).sum(), [x0, x1, *(a for a, _, _ in pairs)]
    )
    g_ref = torch.autograd.grad((y0_ref * probe0).sum() + (y_ref * probe1).sum(), [x0, x1, *(b for _, b, _ in pairs)])
    for i, (a, b) in enumerate(zip(g_ours, g_ref, strict=True)):
        b = b if i < 2 else pairs[i - 2][2](b).reshape(a.shape)
        torch.testing.assert_close(a, b, **GRAD_TOL, msg=lambda m, i=i: f"gradient {i}: {m}")


ATOL_RWKV7 = 2e-5  # measured 2.6e-8 on the outputs (gradients: 2.3e-5 on entries up to 33, within GRAD_TOL)
