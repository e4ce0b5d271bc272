"""Every mixer, norm, feed-forward and position option in conf/ is built and checked for shape, strict causality,
finite gradients and determinism."""

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import options

D, T, B, V = 32, 16, 2, 50


def build_model(compose, overrides, seed=0):
    cfg = compose([*overrides, "model.d_model=32", "task.vocab_size=50", "task.seq_len=16", "task.num_kv_pairs=2"])
    torch.manual_seed(seed)
    return instantiate(cfg.model)


def build_mixer(compose, name, seed=0, seq_len=T):
    cfg = compose([f"model/mixer={name}"])
    torch.manual_seed(seed)
    return instantiate(cfg.model.mixer)(D, max_seq_len=seq_len, layer_idx=0)


# 80 > the default chunk (64) of the chunked linear-attention forms and the sliding window's block (32): the
# multi-chunk and blocked code paths are checked too, not only the single-chunk one
@pytest.mark.parametrize("seq_len", [T, 80])
@pytest.mark.parametrize("name", options("model/mixer"))
def test_mixer_shape_causality_gradients_determinism(compose, name, seq_len):
    T = seq_len
    mixer = build_mixer(compose, name, seq_len=T)
    x = torch.randn(B, T, D, requires_grad=True)
    y = mixer(x)
    assert y.shape == x.shape
    # causality: perturbing position t changes no output at positions < t
    for t in sorted({0, T // 2, T - 1, 33, 65} & set(range(T))):
        x2 = x.detach().clone()
        x2[:, t] += torch.randn(B, D)
        y2 = mixer(x2)
        torch.testing.assert_close(y2[:, :t], y[:, :t].detach(), rtol=0, atol=1e-6)
        assert not torch.allclose(y2[:, t:], y[:, t:].detach()), "the perturbed position should matter"
    y.square().mean().backward()
    grads = [p.grad for p in mixer.parameters()] + [x.grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.equal(build_mixer(compose, name, seq_len=T)(x), y), "same seed, same input, different output"
    assert mixer.flops_per_token(T) >= 0


@pytest.mark.parametrize(
    "group,name",
    [(g, n) for g in ("model/norm", "model/ffn", "model/position", "model/mixer") for n in options(g)]
    + [("model", n) for n in options("model")],
)
def test_every_option_builds_a_causal_model(compose, group, name):
    model = build_model(compose, [f"{group}={name}"])
    idx = torch.randint(0, V, (B, T))
    h = model(idx)
    assert h.shape == (B, T, D)
    idx2 = idx.clone()
    idx2[:, T // 2] = (idx2[:, T // 2] + 1) % V
    torch.testing.assert_close(model(idx2)[:, : T // 2], h[:, : T // 2], rtol=0, atol=1e-6)
    model.head(h).logsumexp(-1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.flops_per_token(T) > 6 * model.num_params(non_embedding=True) - 1


@pytest.mark.parametrize("placement", ["pre", "post", "sandwich"])
def test_norm_placements(compose, placement):
    model = build_model(compose, [f"model.norm_placement={placement}"])
    assert model(torch.randint(0, V, (B, T))).shape == (B, T, D)


def test_gqa_and_mqa_share_key_value_heads(compose):
    params = {n: sum(p.numel() for p in build_mixer(compose, n).parameters()) for n in ("gqa", "mqa")}
    mha = instantiate(compose(["model/mixer=attention", "model.mixer.n_heads=4"]).model.mixer)(
        D, max_seq_len=T, layer_idx=0
    )
    assert params["mqa"] < params["gqa"] < sum(p.numel() for p in mha.parameters())


def test_bad_heads_fail_loudly(compose):
    with pytest.raises(ValueError, match="n_heads=3 must divide d_model=32"):
        instantiate(compose(["model.mixer.n_heads=3"]).model.mixer)(D, max_seq_len=T, layer_idx=0)


def test_gla_refuses_the_fla_kernel_when_flash_linear_attention_is_missing(compose):
    from models.mixers import gla

    if gla.HAVE_FLA:
        pytest.skip("flash-linear-attention is installed")
    with pytest.raises(ValueError, match=r"kernel=fla needs flash-linear-attention: pip install 'archbench\[gpu\]'"):
        instantiate(compose(["model/mixer=gla", "model.mixer.kernel=fla"]).model.mixer)(D, max_seq_len=T, layer_idx=0)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("position", options("model/position"))
def test_non_embedding_params_are_what_the_blocks_and_final_norm_hold(compose, position, tie):
    """Kaplan et al. 2020's N: the token embedding, the output head (tied or not) and a position table are left
    out, and are exactly the embedding count; the head's FLOPs are charged per scored target, not per token."""
    model = build_model(compose, [f"model/position={position}", f"model.tie_embeddings={tie}"])
    inner = {id(p): p for m in (*model.blocks, model.final_norm) for p in m.parameters()}
    assert model.num_params(non_embedding=True) == sum(p.numel() for p in inner.values())
    assert model.num_params() == model.num_params(non_embedding=True) + model.num_embedding_params()
    table = D * model.max_seq_len if position == "learned" else 0
    assert model.num_embedding_params() == V * D * (1 if tie else 2) + table
    assert model.head_flops_per_scored() == 6 * D * V
    mixers = sum(b.mixer.flops_per_token(T) for b in model.blocks)
    assert model.flops_per_token(T) == 6 * model.num_params(non_embedding=True) + mixers
