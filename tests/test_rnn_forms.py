"""The recurrent mixers of issue 17 (LSTM, GRU, RG-LRU, mLSTM, HGRN2, Forgetting Transformer): the form `forward`
trains with (a fused kernel, a chunked scan or a parallel form) equals the token-by-token `recurrent(x)` form in value
and gradient, and, where the authors' or flash-linear-attention's reference code installs, equals that reference.
tests/test_recurrent_forms.py checks values for every mixer with a `recurrent` form; this file adds gradients and the
references."""

import pytest
import torch
from hydra.utils import instantiate

D, T, B = 32, 37, 2  # T is no multiple of the chunk sizes, so a padded last chunk is exercised
NAMES = ["lstm", "gru"]
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
