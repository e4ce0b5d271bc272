"""The recurrent mixers of issue 17 (LSTM, GRU, RG-LRU, mLSTM, HGRN2, Forgetting Transformer): the form `forward`
trains with (a fused kernel, a chunked scan or a parallel form) equals the token-by-token `recurrent(x)` form in value
and gradient, and, where the authors' or flash-linear-attention's reference code installs, equals that reference.
tests/test_recurrent_forms.py checks values for every mixer with a `recurrent` form; this file adds gradients and the
references."""

import pytest
import torch
from hydra.utils import instantiate

D, T, B = 32, 37, 2  # T is no multiple of the chunk sizes, so a padded last chunk is exercised
NAMES = ["lstm", "gru", "rglru", "mlstm", "fox", "hgrn2"]
SCANS = ["rglru", "mlstm", "fox", "hgrn2"]  # the chunked or parallel forms with log-space decays
TOL = {"rtol": 1e-6, "atol": 1e-7}  # float64: a wrong recurrence is off by O(1)


def build(compose, name, *overrides, seq_len=T, seed=0, d_model=D):
    cfg = compose([f"model/mixer={name}", *(f"model.mixer.{o}" for o in overrides)])
    torch.manual_seed(seed)
    return instantiate(cfg.model.mixer)(d_model, max_seq_len=seq_len, layer_idx=0)


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_recurrent_forms_agree_in_value_and_gradient(compose, name):
    mixer = build(compose, name).double()
    x = (2 * torch.randn(B, T, D, dtype=torch.float64)).requires_grad_()
    y_parallel, y_recurrent = mixer(x), mixer.recurrent(x)
    torch.testing.assert_close(y_parallel, y_recurrent, **TOL)
    wrt = [x, *mixer.parameters()]
    g_parallel = torch.autograd.grad(y_parallel.square().sum(), wrt)
    g_recurrent = torch.autograd.grad(y_recurrent.square().sum(), wrt)
    for a, b in zip(g_parallel, g_recurrent, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", SCANS)
def test_long_extreme_inputs_stay_finite(compose, name):
    """Large activations and strong decays over 1024 steps: log-space decays and maxima keep every exp finite."""
    mixer = build(compose, name, seq_len=1024)
    with torch.no_grad():
        for p in mixer.parameters():
            p.mul_(20)
    x = (5 * torch.randn(1, 1024, D)).requires_grad_()
    y = mixer(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("seq_len,chunk_size", [(1, 4), (37, 1), (37, 8), (200, 3), (64, 64)])
def test_chunked_diagonal_scan_equals_the_loop(seq_len, chunk_size):
    from models.mixers._scan import diagonal_scan, diagonal_scan_recurrent

    torch.manual_seed(0)
    x = torch.randn(2, seq_len, 5, dtype=torch.float64)
    log_a = -torch.rand(2, seq_len, 5, dtype=torch.float64) * 30  # decays down to e^-30 per step
    torch.testing.assert_close(diagonal_scan(x, log_a, chunk_size), diagonal_scan_recurrent(x, log_a), **TOL)


def test_rglru_equals_recurrentgemmas_recurrent_block(compose, monkeypatch):
    """google-deepmind/recurrentgemma's PyTorch RecurrentBlock (skipped unless `recurrentgemma` imports) with the same
    weights, its scan accumulating in float64 instead of float32: value and input gradient, float64. Run as a one-off
    from the repository's source on 2026-12-01: 5e-15 (outputs ~17), gradients 3e-13."""
    pytest.importorskip("recurrentgemma.torch")
    from recurrentgemma.torch import layers, modules

    scan = layers.rnn_scan
    monkeypatch.setattr(layers, "rnn_scan", lambda x, a, reset, h0, acc_dtype=None: scan(x, a, reset, h0, torch.double))
    mixer = build(compose, "rglru").double()
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ref = modules.RecurrentBlock(width=D, num_heads=4, lru_width=D, conv1d_temporal_width=4).double()
    with torch.no_grad():
        for name in ("linear_x", "linear_y", "linear_out"):
            getattr(ref, name).load_state_dict(getattr(mixer, name).state_dict())
        ref.conv_1d.w.copy_(mixer.conv.conv.weight[:, 0].T)
        ref.conv_1d.b.copy_(mixer.conv.conv.bias)
        for theirs, ours in ((ref.rg_lru.input_gate, mixer.input_gate), (ref.rg_lru.a_gate, mixer.a_gate)):
            theirs.w.copy_(ours.w), theirs.b.copy_(ours.b)
        ref.rg_lru.a_param.copy_(mixer.a_param)
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    y, (y_ref, _) = mixer(x), ref(x, torch.arange(T).repeat(B, 1), return_cache=False)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_rglru_initialises_its_decay_as_recurrentgemma(compose):
    """sigma(-Lambda) = exp(-softplus(Lambda)) lies in [0.9, 0.999] with its square uniform (recurrentgemma's
    rnn_param_init); every RG-LRU parameter is kept from weight decay."""
    mixer = build(compose, "rglru", d_model=4096)
    a = torch.exp(-torch.nn.functional.softplus(mixer.a_param.double()))
    assert 0.9 <= a.min() and a.max() <= 0.999
    squares = (a.square() - 0.9**2) / (0.999**2 - 0.9**2)  # uniform on [0, 1]: mean 1/2, quartiles 1/4, 3/4
    assert abs(squares.mean() - 0.5) < 0.02 and abs(squares.quantile(0.25) - 0.25) < 0.03
    assert {id(p) for p in mixer.no_weight_decay()} == {id(mixer.a_param)} | {
        id(p) for m in (mixer.input_gate, mixer.a_gate) for p in m.parameters()
    }


@pytest.mark.parametrize(
    "name,overrides",
    [("hgrn2", ["use_short_conv=true"]), ("mlstm", ["chunk_size=null"]), ("rglru", ["lru_width=48", "n_heads=3"])],
)
def test_forms_agree_with_options_and_deeper_layers(compose, name, overrides):
    """Layer 2 of 3 (HGRN2's lower bound is on there) and the non-default options, in value."""
    cfg = compose([f"model/mixer={name}", *(f"model.mixer.{o}" for o in overrides), "model.n_layers=3"])
    torch.manual_seed(0)
    mixer = instantiate(cfg.model.mixer)(D, max_seq_len=T, layer_idx=2).double()
    x = 2 * torch.randn(B, T, D, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), mixer.recurrent(x), **TOL)


@pytest.mark.parametrize("layer_idx", [0, 1])
def test_hgrn2_layer_equals_fla_hgrn2_attention(compose, monkeypatch, layer_idx):
    """fla's HGRN2Attention (fla/layers/hgrn2.py) with the same weights and lower bound, its Triton pieces replaced
    by their PyTorch equivalents (the recurrence by fla's own naive_recurrent_gla, swish by SiLU, the fused
    norm + linear by RMSNorm then Linear at fla's eps): the layer's glue (gates, bound, k = 1 - f, heads, norm) is
    fla's. float32, as the naive reference computes."""
    hgrn2 = pytest.importorskip("fla.layers.hgrn2")
    from fla.ops.gla.naive import naive_recurrent_gla

    monkeypatch.setattr(hgrn2, "fused_recurrent_gla", lambda q, k, v, gk, **_: naive_recurrent_gla(q, k, v, gk))
    monkeypatch.setattr(hgrn2, "swish", torch.nn.functional.silu)
    monkeypatch.setattr(
        hgrn2,
        "rms_norm_linear",
        lambda x, w, b, lw, lb, eps=1e-5: torch.nn.functional.linear(
            torch.nn.functional.rms_norm(x, x.shape[-1:], w, eps), lw, lb
        ),
    )
    cfg = compose(["model/mixer=hgrn2", "model.mixer.expand_ratio=8", "model.n_layers=2"])
    torch.manual_seed(0)
    mixer = instantiate(cfg.model.mixer)(D, max_seq_len=T, layer_idx=layer_idx)
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ref = hgrn2.HGRN2Attention(hidden_size=D, expand_ratio=8, layer_idx=layer_idx)
    ref.load_state_dict({n: p for n, p in mixer.state_dict().items() if n != "lower_bound"})
    lower_bound = None if mixer.lower_bound is None else torch.sigmoid(mixer.lower_bound)
    x = torch.randn(B, 40, D)  # <= 64 tokens: fla's layer takes its fused_recurrent path
    y_ref = ref(x, lower_bound=lower_bound)[0]
    torch.testing.assert_close(mixer(x), y_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mixer.recurrent(x), y_ref, rtol=1e-4, atol=1e-5)


def _mlstm_inputs(seed=0, b=2, h=3, t=T, dh=8):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, dh, generator=g, dtype=torch.float64) for _ in range(3))
    i_pre = 3 * torch.randn(b, h, t, 1, generator=g, dtype=torch.float64)  # exp(i~) from e^-9 to e^9
    f_pre = 3 * torch.randn(b, h, t, 1, generator=g, dtype=torch.float64)
    return q, k, v, i_pre, f_pre


def test_mlstm_cell_forms_equal_xlstm_backends():
    """NX-AI/xlstm's backends (pip install xlstm): parallel_stabilized_simple against mlstm_parallel, and its
    recurrent_step_stabilized_simple (stabiliser from m = 0) against mlstm_recurrent from m = 0."""
    backends = pytest.importorskip("xlstm.blocks.mlstm.backends")
    from models.mixers.mlstm import mlstm_chunkwise, mlstm_parallel, mlstm_recurrent

    q, k, v, i_pre, f_pre = _mlstm_inputs()
    ref = backends.parallel_stabilized_simple(q, k, v, i_pre, f_pre)
    torch.testing.assert_close(mlstm_parallel(q, k, v, i_pre, f_pre), ref, rtol=1e-12, atol=1e-12)
    for chunk_size in (1, 5, 64):  # the chunkwise form keeps each row's stabiliser: equal to rounding, eps included
        torch.testing.assert_close(mlstm_chunkwise(q, k, v, i_pre, f_pre, chunk_size), ref, rtol=1e-12, atol=1e-12)
    b, h, t, dh = q.shape
    state = (q.new_zeros(b, h, dh, dh), q.new_zeros(b, h, dh, 1), q.new_zeros(b, h, 1, 1))
    steps = []
    for s in range(t):
        y, state = backends.recurrent_step_stabilized_simple(
            *state,
            q[:, :, s : s + 1].clone(),
            k[:, :, s : s + 1].clone(),
            v[:, :, s : s + 1].clone(),
            i_pre[:, :, s : s + 1],
            f_pre[:, :, s : s + 1],
        )
        steps.append(y)
    torch.testing.assert_close(
        mlstm_recurrent(q, k, v, i_pre, f_pre, m0=0.0), torch.cat(steps, 2), rtol=1e-12, atol=1e-12
    )
    # the reference's two forms themselves differ only through eps in the normaliser (m0 = 0 vs the row maximum)
    torch.testing.assert_close(torch.cat(steps, 2), ref, rtol=1e-5, atol=1e-6)  # measured: 1.6e-8 abs


@pytest.mark.parametrize("d_model,n_heads", [(32, 4), (48, 2)])
def test_mlstm_layer_equals_xlstm_mlstm_layer(compose, d_model, n_heads):
    """The whole layer against xlstm's mLSTMLayer with the same weights (its state dict loads unchanged), in value
    and in the gradient with respect to the input; and archbench's init draws from the reference's distributions."""
    pytest.importorskip("xlstm")
    from xlstm.blocks.mlstm.layer import mLSTMLayer, mLSTMLayerConfig

    mixer = build(compose, "mlstm", f"n_heads={n_heads}", d_model=d_model).double()
    torch.manual_seed(1)
    ref = mLSTMLayer(
        mLSTMLayerConfig(
            embedding_dim=d_model,
            num_heads=n_heads,
            context_length=T,
            proj_factor=2.0,
            conv1d_kernel_size=4,
            qkv_proj_blocksize=4,
            bias=False,
        )
    ).double()
    ref_shapes = {n: p.shape for n, p in ref.state_dict().items()}
    assert {n: p.shape for n, p in mixer.state_dict().items()} == ref_shapes
    for name, p in mixer.state_dict().items():  # same init: equal stds and constant parts, not equal draws
        r = ref.state_dict()[name]
        if r.numel() > 64 and r.std() > 0:
            assert abs(p.std() / r.std() - 1) < 0.15, name
        else:
            assert torch.equal(p, r) or "igate.bias" in name or "conv1d" in name, name
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.2 * torch.randn_like(p))  # away from the init's zeros and ones
    ref.load_state_dict(mixer.state_dict())
    x = torch.randn(B, T, d_model, dtype=torch.float64, requires_grad=True)
    y, y_ref = mixer(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def _fox_inputs(seed=0, b=2, h=3, t=T, dh=8):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, dh, generator=g, dtype=torch.float64) for _ in range(3))
    log_f = torch.nn.functional.logsigmoid(2 * torch.randn(b, h, t, generator=g, dtype=torch.float64))
    return q, k, v, log_f


@pytest.mark.parametrize("kernel", ["sdpa", "flex"])
def test_forgetting_attention_equals_fla_naive(compose, kernel):
    """flash-linear-attention's fla/ops/forgetting_attn/naive.py (inputs (batch, seq, heads, dim), log gates g)
    against both kernels of the FoX mixer, in value and in the gradients with respect to q, k, v and the gates.
    The reference computes in float32 whatever its inputs: float32 tolerances (a wrong decay is off by O(1)).
    FlexAttention has no backward on CPU: there the flex kernel is checked in value only (gradients: test_gpu)."""
    naive = pytest.importorskip("fla.ops.forgetting_attn.naive")
    mixer = build(compose, "fox", f"kernel={kernel}", "n_heads=4")
    q, k, v, log_f = (z.float().requires_grad_(kernel == "sdpa") for z in _fox_inputs())
    out = mixer.attend(q, k, v, log_f)
    tr = lambda z: z.transpose(1, 2)
    ref = tr(naive.naive_forgetting_attn(tr(q), tr(k), tr(v), tr(log_f), scale=8**-0.5))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    if kernel == "flex":
        return
    g_out = torch.autograd.grad(out.square().sum(), [q, k, v, log_f])
    g_ref = torch.autograd.grad(ref.square().sum(), [q, k, v, log_f])
    for a, b in zip(g_out, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("position", ["rope", "alibi"])
@pytest.mark.parametrize("options", [[], ["model.mixer.qk_norm=true", "model.mixer.output_gate=true"]])
def test_fox_takes_positions_and_its_pro_options_causally(compose, position, options):
    cfg = compose(
        [
            "model/mixer=fox",
            f"model/position={position}",
            "model.mixer.n_heads=4",
            *options,
            "model.d_model=32",
            "task.vocab_size=50",
            "task.seq_len=16",
            "task.num_kv_pairs=2",
        ]
    )
    torch.manual_seed(0)
    model = instantiate(cfg.model).double()
    fox = model.blocks[0].mixer
    assert (fox.rotation is not None) == (position == "rope") and (fox.score_bias is not None) == (position == "alibi")
    x = torch.randn(B, 16, 32, dtype=torch.float64)
    torch.testing.assert_close(fox(x), fox.recurrent(x), **TOL)
    fox.kernel = "flex"
    with torch.no_grad():  # FlexAttention has no backward on CPU
        torch.testing.assert_close(fox(x), fox.recurrent(x), **TOL)
    fox.kernel = "sdpa"
    idx = torch.randint(0, 50, (B, 16))
    idx2 = idx.clone()
    idx2[:, 8] = (idx2[:, 8] + 1) % 50
    torch.testing.assert_close(model(idx2)[:, :8], model(idx)[:, :8], rtol=0, atol=1e-12)


def test_forget_gates_near_zero_forget_the_past(compose):
    """With f ~ 0 (gate bias -30) each query sees only its own key: the output at t is W_o v_t."""
    mixer = build(compose, "fox").double()
    with torch.no_grad():
        mixer.fgate_proj.bias.fill_(-30.0)
        mixer.fgate_proj.weight.zero_()
    x = torch.randn(B, T, D, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), mixer.o_proj(mixer.v_proj(x)), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("position", [None, "alibi"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fox_flex_kernel_matches_sdpa_on_cuda(position):
    """The compiled FlexAttention path (kernel=auto on CUDA) against the SDPA mask, outputs and gradients, fp32."""
    from models.mixers.fox import ForgettingAttention
    from models.positions import AlibiPosition

    pos = AlibiPosition(256, max_seq_len=512) if position else None
    torch.manual_seed(0)
    ref = ForgettingAttention(256, max_seq_len=512, layer_idx=0, n_heads=4, kernel="sdpa", position=pos).cuda()
    fast = ForgettingAttention(256, max_seq_len=512, layer_idx=0, n_heads=4, kernel="auto", position=pos).cuda()
    fast.load_state_dict(ref.state_dict())
    with torch.no_grad():
        ref.fgate_proj.bias.fill_(2.0), fast.fgate_proj.bias.fill_(2.0)  # decays that matter over 500 steps
    x = torch.randn(2, 500, 256, device="cuda")
    y_ref, y_fast = ref(x), fast(x)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-3, atol=1e-4)
    g_ref = torch.autograd.grad(y_ref.square().mean(), list(ref.parameters()))
    g_fast = torch.autograd.grad(y_fast.square().mean(), list(fast.parameters()))
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_hgrn2_on_flash_linear_attention_matches_the_pytorch_reference():
    """fla's chunk_gla kernel (kernel=auto on CUDA) against HGRN2's own chunked form: outputs and gradients, fp32."""
    pytest.importorskip("fla")
    from models.mixers.hgrn2 import HGRN2

    torch.manual_seed(0)
    ref = HGRN2(256, max_seq_len=512, layer_idx=1, n_layers=2, kernel="torch").cuda()
    fast = HGRN2(256, max_seq_len=512, layer_idx=1, n_layers=2, kernel="fla").cuda()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 500, 256, device="cuda")  # not a multiple of fla's chunk
    y_ref, y_fast = ref(x), fast(x)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-3, atol=1e-3)
    g_ref = torch.autograd.grad(y_ref.square().mean(), list(ref.parameters()))
    g_fast = torch.autograd.grad(y_fast.square().mean(), list(fast.parameters()))
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-4)
