"""Canon layers (models/canon.py, the backbone option `model.canon=K`): causal with every mixer option, a no-op at
zero weights (so it is the residual conv it claims to be), and initialised as the reference's nn.Conv1d."""

import pytest
import torch
from hydra.utils import instantiate

from models.canon import Canon
from tests.conftest import options

B, T, V = 2, 16, 50


def build_model(compose, overrides, seed=0):
    cfg = compose([*overrides, "model.d_model=32", "task.vocab_size=50", "task.seq_len=16", "task.num_kv_pairs=2"])
    torch.manual_seed(seed)
    return instantiate(cfg.model)


@pytest.mark.parametrize("name", options("model/mixer"))
def test_canon_before_every_mixer_keeps_the_model_causal(compose, name):
    model = build_model(compose, [f"model/mixer={name}", "model.canon=4"])
    assert all(b.canon is not None and b.canon.kernel_size == 4 for b in model.blocks)
    idx = torch.randint(0, V, (B, T))
    h = model(idx)
    for t in (0, T // 2, T - 1):
        idx2 = idx.clone()
        idx2[:, t] = (idx2[:, t] + 1) % V
        h2 = model(idx2)
        torch.testing.assert_close(h2[:, :t], h[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(h2[:, t:], h[:, t:])
    h.square().mean().backward()
    assert all(
        b.canon.conv.weight.grad is not None and torch.isfinite(b.canon.conv.weight.grad).all() for b in model.blocks
    )


def test_canon_is_a_residual_causal_depthwise_convolution():
    canon = Canon(3, kernel_size=3)
    x = torch.zeros(1, 8, 3)
    x[0, 4] = 1.0  # an impulse at t = 4 reaches t = 4, 5, 6 only, with taps w[2], w[1], w[0], plus itself at t = 4
    y = canon(x)
    w = canon.conv.weight[:, 0]  # (channels, K); w[:, K-1] multiplies x_t
    torch.testing.assert_close(y[0, 4], 1.0 + w[:, 2])
    torch.testing.assert_close(y[0, 5:7], w[:, :2].flip(-1).T)
    assert y[0, :4].abs().max() == 0 and y[0, 7:].abs().max() == 0
    with torch.no_grad():
        canon.conv.weight.zero_()
    torch.testing.assert_close(canon(x), x)


def test_canon_keeps_pytorchs_conv_init_and_off_adds_nothing(compose):
    """PhysicsLM4's README: Canon weights must keep nn.Conv1d's default init (std ~0.29 at K = 4), not 0.02."""
    model = build_model(compose, ["model.canon=4", "model.d_model=256"])
    w = torch.cat([b.canon.conv.weight.flatten() for b in model.blocks])
    assert 0.26 < w.std() < 0.32 and w.abs().max() <= 0.5
    plain = build_model(compose, ["model.canon=0"])
    assert all(b.canon is None for b in plain.blocks)
    extra = sum(p.numel() for p in build_model(compose, ["model.canon=4"]).parameters()) - sum(
        p.numel() for p in plain.parameters()
    )
    assert extra == len(plain.blocks) * 32 * 4
    with pytest.raises(Exception, match="canon=-1 must be"):  # Hydra wraps the ValueError
        build_model(compose, ["model.canon=-1"])
