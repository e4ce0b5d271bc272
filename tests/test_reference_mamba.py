"""Equivalence of the Mamba block with mamba_ssm's own (state-spaces/mamba, `mamba_ssm/modules/mamba_simple.py`) on its
pure-PyTorch scan `selective_scan_ref`: same inputs and weights -> same outputs and gradients, fp32, at a length
past several of our scan's chunks. Tolerance as in tests/test_reference_fla.py.

mamba_ssm installs on a CPU only as `MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE pip install mamba-ssm
--no-build-isolation --no-deps` (its setup otherwise looks for a prebuilt CUDA wheel and fails parsing torch's CUDA
version, None on a CPU build), and then `selective_scan_interface` still imports the CUDA extension
`selective_scan_cuda` at module level; the reference scan does not use it, so a stand-in module is registered while
mamba_ssm is imported. Skipped where mamba_ssm is not installed.
"""

import importlib.util
import sys
import types
import warnings

import pytest
import torch

from models.mixers.mamba import Mamba

pytestmark = pytest.mark.reference

if importlib.util.find_spec("mamba_ssm") is None:
    pytest.skip("mamba_ssm is not installed", allow_module_level=True)
_stub = "selective_scan_cuda" not in sys.modules and importlib.util.find_spec("selective_scan_cuda") is None
if _stub:
    sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mamba_ssm.modules import mamba_simple
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
except ImportError as e:  # e.g. a mamba_ssm whose import needs more of its CUDA build
    pytest.skip(f"mamba_ssm does not import on this machine: {e}", allow_module_level=True)
finally:
    if _stub:
        del sys.modules["selective_scan_cuda"]

D, T, BATCH = 32, 150, 2
ATOL, RTOL = 2e-5, 1e-4


@pytest.mark.parametrize("chunk_size", [None, 16])
def test_mamba_matches_mamba_ssm_slow_path(monkeypatch, chunk_size):
    torch.manual_seed(0)
    ours = Mamba(D, max_seq_len=T, layer_idx=0, d_state=16, d_conv=4, expand=2, chunk_size=chunk_size)
    ref = mamba_simple.Mamba(D, d_state=16, d_conv=4, expand=2, use_fast_path=False)
    names = {
        "in_proj.weight": "in_proj.weight",
        "conv1d.weight": "conv.conv.weight",
        "conv1d.bias": "conv.conv.bias",
        "x_proj.weight": "x_proj.weight",
        "dt_proj.weight": "dt_proj.weight",
        "dt_proj.bias": "dt_proj.bias",
        "A_log": "A_log",
        "D": "D",
        "out_proj.weight": "out_proj.weight",
    }
    ref_params, our_params = dict(ref.named_parameters()), dict(ours.named_parameters())
    assert set(names) == set(ref_params) and set(names.values()) == set(our_params)
    with torch.no_grad():
        for theirs, mine in names.items():
            ref_params[theirs].copy_(our_params[mine])
    # the slow path without causal_conv1d: nn.Conv1d, then the scan, which on a CPU must be the reference one
    monkeypatch.setattr(mamba_simple, "causal_conv1d_fn", None)
    monkeypatch.setattr(mamba_simple, "selective_scan_fn", selective_scan_ref)

    x = torch.randn(BATCH, T, D)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    torch.testing.assert_close(ya, yb, atol=ATOL, rtol=RTOL)
    probe = torch.randn_like(ya)
    ga = torch.autograd.grad((ya * probe).sum(), [xa, *(our_params[n] for n in names.values())])
    gb = torch.autograd.grad((yb * probe).sum(), [xb, *(ref_params[n] for n in names)])
    for name, a, b in zip(["input", *names], ga, gb, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=lambda m, name=name: f"gradient {name}: {m}")
