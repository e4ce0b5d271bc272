"""Equivalence with flash-linear-attention's own PyTorch references (`pip install 'archbench[reference]'`).

fla's layers call Triton kernels, which need a GPU; its `fla/ops/*/naive.py` references and `fla/modules/norm`'s
`*_ref` functions are plain PyTorch and run on a CPU. Where fla has the layer (GLA, Based's linear branch), the layer
itself is built with our weights and its kernel is swapped for the naive reference, so the projections, head split,
gates, scales and norm are fla's code, not ours; where it has only the kernel (retention, linear attention), our layer
runs with its scan replaced by fla's. Same inputs and weights -> same outputs and gradients (inputs and every
parameter), fp32, at a length past every chunk size (ours: 8 and 64; fla's naive chunked forms: 64) and not a
multiple of any. Tolerance: |ours - fla| <= ATOL + RTOL |fla| elementwise (torch.testing.assert_close); measured
max differences are ~1e-6 (docs/fidelity.md). A mixer whose math changes (a sign, a gate, a scale) fails these.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

with warnings.catch_warnings():  # "Triton is not supported on current platform, roll back to CPU"
    warnings.simplefilter("ignore", UserWarning)
    pytest.importorskip("fla")
    from fla.layers import based as fla_based
    from fla.layers import gla as fla_gla
    from fla.modules.norm.layernorm import rms_norm_ref
    from fla.ops.based.naive import naive_parallel_based
    from fla.ops.gla.naive import naive_recurrent_gla
    from fla.ops.linear_attn.naive import naive_recurrent_linear_attn
    from fla.ops.retention.naive import naive_retention

from models.mixers.based import Based
from models.mixers.gla import GatedLinearAttention
from models.mixers.linear_attention import LinearAttention
from models.mixers.retention import Retention

pytestmark = pytest.mark.reference

D, T, BATCH = 32, 150, 2  # T > 2 * 64 and not a multiple of 8 or 64: several chunks plus a ragged one
ATOL, RTOL = 2e-5, 1e-4


def _check(ours, ours_params, ref, ref_params, x, grad_tol=None):
    """Outputs of ours(x) and ref(x), and gradients of a random projection of them w.r.t. x and every parameter
    (paired by name: ours_params[i] is ref_params[i]'s counterpart), agree within ATOL + RTOL |ref| (gradients:
    within grad_tol = {"atol": ..., "rtol": ...} where given)."""
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    torch.testing.assert_close(ya, yb, atol=ATOL, rtol=RTOL)
    probe = torch.randn_like(ya)
    ga = torch.autograd.grad((ya * probe).sum(), [xa, *ours_params])
    gb = torch.autograd.grad((yb * probe).sum(), [xb, *ref_params])
    tol = grad_tol or {"atol": ATOL, "rtol": RTOL}
    for name, a, b in zip(["input", *range(len(ours_params))], ga, gb, strict=True):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"gradient {name}: {m}")


def _copy(ref: torch.nn.Module, ours: torch.nn.Module, names: dict[str, str]):
    """Copy our weights into fla's layer by name ({fla name: our name}); every parameter of both must be mapped, so a
    parameter added on either side fails the test instead of staying at its own random init."""
    ref_params, our_params = dict(ref.named_parameters()), dict(ours.named_parameters())
    assert set(names) == set(ref_params), f"fla parameters not mapped: {set(ref_params) ^ set(names)}"
    assert set(names.values()) == set(our_params), f"our parameters not mapped: {set(our_params) ^ set(names.values())}"
    with torch.no_grad():
        for theirs, mine in names.items():
            ref_params[theirs].copy_(our_params[mine])
    return [our_params[n] for n in names.values()], [ref_params[n] for n in names]


@pytest.mark.parametrize("chunk_size", [8, 64])
def test_gla_matches_fla_layer(monkeypatch, chunk_size):
    torch.manual_seed(0)
    ours = GatedLinearAttention(D, max_seq_len=T, layer_idx=0, n_heads=4, chunk_size=chunk_size, kernel="torch")
    ref = fla_gla.GatedLinearAttention(
        mode="fused_recurrent",
        hidden_size=D,
        num_heads=4,
        expand_k=0.5,
        gate_low_rank_dim=16,
        gate_logit_normalizer=16,
        fuse_norm=False,
        norm_eps=1e-6,
    )
    ours_params, ref_params = _copy(
        ref,
        ours,
        {
            "q_proj.weight": "q.weight",
            "k_proj.weight": "k.weight",
            "v_proj.weight": "v.weight",
            "g_proj.weight": "r.weight",
            "gk_proj.0.weight": "gate.0.weight",
            "gk_proj.1.weight": "gate.1.weight",
            "gk_proj.1.bias": "gate.1.bias",
            "o_proj.weight": "out.weight",
            "g_norm.weight": "norm.weight",
        },
    )

    # fla's kernel, norm and swish are Triton: swap in fla's own references for them (same signature, same math),
    # and torch's silu for its swish (x sigmoid(x))
    def kernel(q, k, v, gk, initial_state=None, output_final_state=False, **_):
        return naive_recurrent_gla(q, k, v, gk, initial_state, output_final_state)

    monkeypatch.setattr(fla_gla, "fused_recurrent_gla", kernel)
    monkeypatch.setattr(ref.g_norm, "forward", lambda x: rms_norm_ref(x, ref.g_norm.weight, None, eps=ref.g_norm.eps))
    monkeypatch.setattr(ref, "gate_fn", F.silu)
    _check(ours, ours_params, lambda x: ref(x)[0], ref_params, torch.randn(BATCH, T, D))


@pytest.mark.parametrize("n_heads", [1, 2])
def test_based_linear_branch_matches_fla_layer(monkeypatch, n_heads):
    """Based's Taylor-map linear attention against fla's BasedLinearAttention on naive_parallel_based, which computes
    1 + s + s^2/2 (s = q.k / sqrt(d)) directly rather than through a feature map: it checks our Taylor feature map."""
    torch.manual_seed(0)
    ours = Based(D, max_seq_len=T, layer_idx=0, n_heads=n_heads, feature_dim=16, chunk_size=64).linear
    ref = fla_based.BasedLinearAttention(
        D, feature_dim=16, num_heads=n_heads, num_key_value_heads=n_heads, mode="parallel"
    )
    ours_params, ref_params = _copy(
        ref,
        ours,
        {
            "q_proj.weight": "q.weight",
            "k_proj.weight": "k.weight",
            "v_proj.weight": "v.weight",
            "o_proj.weight": "out.weight",
        },
    )
    heads_first = lambda z: z.transpose(1, 2)  # fla's layer: (b, t, h, d); naive_parallel_based: (b, h, t, d)
    monkeypatch.setattr(
        fla_based,
        "parallel_based",
        lambda q, k, v, scale, use_norm: heads_first(
            naive_parallel_based(heads_first(q), heads_first(k), heads_first(v), scale, use_norm)
        ),
    )
    _check(ours, ours_params, ref, ref_params, torch.randn(BATCH, T, D))


@pytest.mark.parametrize("chunk_size", [16, 64])
def test_retention_matches_fla_naive(chunk_size):
    """Our layer with its chunked scan replaced by fla's naive_retention, which builds its own decays
    gamma_h = 1 - 2^(-5-h) and ignores ours: a changed decay fails too. (fla scales q by d^-1/2; ours scales k.)"""
    torch.manual_seed(0)
    ours = Retention(D, max_seq_len=T, layer_idx=0, n_heads=4, chunk_size=chunk_size)
    scale = ours.head_dim**0.5
    params = list(ours.parameters())
    _check(
        ours,
        params,
        lambda x: ours._mix(x, lambda q, k, v, g: naive_retention(q, k * scale, v)),
        params,
        torch.randn(BATCH, T, D),
    )


@pytest.mark.parametrize(("n_heads", "chunk_size"), [(1, 64), (2, 16)])
def test_linear_attention_matches_fla_naive(n_heads, chunk_size):
    """Katharopoulos et al.'s ELU+1 linear attention: fla's naive_recurrent_linear_attn (normalize=True) on phi(q),
    phi(k) written out from the paper, our projections. fla's normaliser eps is 1e-10, ours 1e-6 (within tolerance:
    the denominator is a sum of positive terms, >= 1e-2 here)."""
    torch.manual_seed(0)
    ours = LinearAttention(D, max_seq_len=T, layer_idx=0, n_heads=n_heads, chunk_size=chunk_size)

    def ref(x):
        b, t, _ = x.shape
        heads = lambda z: z.view(b, t, n_heads, -1)  # fla's layout (b, t, h, d)
        q, k = (F.elu(heads(proj(x))) + 1 for proj in (ours.q, ours.k))
        o, _ = naive_recurrent_linear_attn(q, k, heads(ours.v(x)), scale=1.0, normalize=True)
        return ours.out(o.reshape(b, t, -1))

    params = list(ours.parameters())
    _check(ours, params, ref, params, torch.randn(BATCH, T, D))
