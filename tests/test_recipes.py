"""The papers' recipes: the trainer's schedule, decay and dropout options do what the reference trainers do, the
defaults are unchanged, and every reproduction's full scale composes to its paper's recipe."""

import math
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torch import nn

from harness.report.reproduce import cards
from harness.run.train import TrainConfig, configure_optimizer, lr_lambda
from models.backbone import LanguageModel
from models.mixers.attention import Attention
from tests.conftest import examples

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


@settings(max_examples=examples(50), deadline=None)
@given(total=st.integers(1, 400), warmup=st.integers(0, 500), ratio=st.floats(0, 1))
def test_the_default_schedule_is_the_former_warmup_and_cosine(total, warmup, ratio):
    f = lr_lambda(TrainConfig(warmup_steps=warmup, min_lr_ratio=ratio), total, steps_per_epoch=7)
    w = min(warmup, total)
    for step in range(total):  # the closed form the trainer had before schedule/schedule_unit/min_lr existed
        progress = min((step - w) / max(1, total - w), 1.0)
        expected = (step + 1) / w if step < w else ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        assert f(step) == expected


def _torch_lrs(scheduler_factory, lr: float, steps: int, steps_per_epoch: int) -> list[float]:
    """The lr of every step when torch's scheduler is stepped once per epoch, as Zoology's and MAD's trainers do."""
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler, lrs = scheduler_factory(opt), []
    for step in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        if (step + 1) % steps_per_epoch == 0:
            opt.step()  # (no gradients: a no-op, in the order torch expects)
            scheduler.step()
    return lrs


@pytest.mark.parametrize(("epochs", "steps_per_epoch", "floor"), [(64, 5, 0.0), (10, 3, 1e-6), (3, 1, 0.0)])
def test_the_per_epoch_cosine_is_torchs_cosine_annealing_stepped_per_epoch(epochs, steps_per_epoch, floor):
    lr = 1e-3
    cfg = TrainConfig(lr=lr, epochs=epochs, warmup_steps=0, schedule_unit="epoch", min_lr=floor)
    total = epochs * steps_per_epoch
    f = lr_lambda(cfg, total, steps_per_epoch)
    expected = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs, eta_min=floor), lr, total, steps_per_epoch
    )
    assert [lr * f(s) for s in range(total)] == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_min_lr_is_an_absolute_floor_and_constant_holds_after_warmup():
    cfg = TrainConfig(lr=5e-4, warmup_steps=0, min_lr=1e-6, min_lr_ratio=0.5)  # min_lr wins over min_lr_ratio
    assert 5e-4 * lr_lambda(cfg, 1000)(1000) == pytest.approx(1e-6, rel=1e-9)  # the end of the cosine
    f = lr_lambda(TrainConfig(warmup_steps=4, schedule="constant"), 100)
    assert [f(s) for s in range(8)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0] and f(99) == 1.0
    with pytest.raises(ValueError, match="trainer.min_lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3).check(num_train=100)


def _model(**kwargs) -> LanguageModel:
    from functools import partial

    from models.ffn import MLP
    from models.positions import LearnedPosition

    return LanguageModel(
        vocab_size=32,
        d_model=16,
        n_layers=2,
        max_seq_len=12,
        mixer=partial(Attention, n_heads=2, bias=True, dropout=kwargs.pop("attention_dropout", 0.0)),
        norm=nn.LayerNorm,
        ffn=MLP,
        position=LearnedPosition,
        tie_embeddings=True,
        **kwargs,
    )


def test_decay_all_decays_every_parameter_once_and_the_default_keeps_norms_biases_embeddings_out():
    model = _model()
    params = {id(p) for p in model.parameters()}  # the tied head counts once
    [group] = configure_optimizer(model, TrainConfig(decay_all=True, weight_decay=0.1), CPU).param_groups
    assert {id(p) for p in group["params"]} == params and len(group["params"]) == len(params)
    assert group["weight_decay"] == 0.1
    decay, no_decay = configure_optimizer(model, TrainConfig(weight_decay=0.1), CPU).param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and no_decay["weight_decay"] == 0.0
    assert id(model.embedding.weight) in {id(p) for p in no_decay["params"]}


@pytest.mark.parametrize("where", [{"dropout_embedding": 0.3}, {"dropout_residual": 0.3}, {"attention_dropout": 0.3}])
def test_dropout_acts_in_training_only_and_repeats_with_the_seed(where):
    idx = torch.randint(0, 32, (4, 12))
    torch.manual_seed(0)
    plain = _model()
    torch.manual_seed(0)
    dropped = _model(**where)
    assert torch.equal(plain.eval()(idx), dropped.eval()(idx))  # same weights; evaluation drops nothing
    dropped.train()
    torch.manual_seed(1)
    a = dropped(idx)
    torch.manual_seed(1)
    assert torch.equal(a, dropped(idx))  # seeded like everything else
    assert not torch.allclose(a, plain.train()(idx))


def test_zero_dropout_adds_no_module_and_draws_no_random_numbers():
    model = _model()
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    idx = torch.randint(0, 32, (2, 12))
    state = torch.get_rng_state()
    model.train()(idx)
    assert torch.equal(state, torch.get_rng_state())


# What each paper's code (or, where none was released, its text) trains with: docs/fidelity.md gives the sources.
PAPER_RECIPES = {
    "zoology_mqar": {
        "trainer": {
            "epochs": 64,
            "betas": [0.9, 0.999],
            "weight_decay": 0.1,
            "decay_all": True,
            "warmup_steps": 0,
            "schedule": "cosine",
            "schedule_unit": "epoch",
            "min_lr_ratio": 0.0,
            "min_lr": None,
            "grad_clip": 0.0,
            "target_accuracy": 0.99,
        },
        "model": {"dropout_embedding": 0.1, "dropout_residual": 0.0, "tie_embeddings": True},
    },
    "mad": {
        "trainer": {
            "epochs": 200,
            "batch_size": 128,
            "betas": [0.9, 0.999],
            "decay_all": True,
            "warmup_steps": 0,
            "schedule": "constant",
            "grad_clip": 0.0,
        },
        "model": {"d_model": 128, "n_layers": 2, "dropout_embedding": 0.0},
    },
    "mamba_selective_copying": {
        "trainer": {"max_steps": 400000, "batch_size": 64, "warmup_steps": 0, "schedule": "constant"},
        "model": {"d_model": 64, "n_layers": 2},
    },
    "mamba_induction": {
        "trainer": {
            "max_steps": 204800,
            "batch_size": 8,
            "betas": [0.9, 0.999],
            "weight_decay": 0.0,
            "warmup_steps": 0,
            "schedule": "constant",
            "grad_clip": 0.0,
        },
        "model": {"d_model": 64, "n_layers": 2},
    },
}
PAPER_GRIDS = {
    "zoology_mqar": {"trainer.lr": [1e-4, 4.64e-4, 2.15e-3, 1e-2]},
    "mad": {"trainer.lr": [1e-4, 5e-4, 1e-3], "trainer.weight_decay": [0.0, 0.1]},
    "mamba_induction": {"trainer.lr": [2e-4, 1e-3]},
    "mamba_selective_copying": {"trainer.lr": [3e-5, 1e-4, 3e-4]},  # the paper's one lr, 1e-4, x1/3 and x3 (tuned)
}


def _sweep(name: str) -> tuple[str, dict[str, list[str]]]:
    """The experiment of card `name` and its full scale's sweep, {key: [values]} (full adds no overrides)."""
    from hydra import compose, initialize_config_module

    card = cards.load(name)
    assert cards.overrides(card, "full") == []
    experiment = f"experiment={card['experiment']}"
    with initialize_config_module(config_module="conf", version_base="1.3"):
        params = compose(config_name="config", overrides=[experiment], return_hydra_config=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return experiment, {
        o.key_or_group: [str(v) for v in o.sweep_iterator()]
        if o.is_sweep_override()
        else [o.get_value_element_as_str()]
        for o in parsed
    }


def _jobs(name: str, compose, vary: tuple[str, ...] = ("model", "model/mixer", "task")) -> list:
    """One composed job per value of the `vary` keys of the sweep (each other key at its first value): enough to see
    every model and task without composing all of a 320-run grid."""
    experiment, sweep = _sweep(name)
    jobs = []
    for key in [k for k in vary if k in sweep] or [next(iter(sweep))]:
        for value in sweep[key]:
            job = {k: v[0] for k, v in sweep.items()} | {key: value}
            jobs.append(compose([experiment, *(f"{k}={v}" for k, v in job.items())]))
    return jobs


@pytest.mark.parametrize("name", sorted(PAPER_RECIPES))
def test_each_full_scale_composes_to_its_papers_recipe(name, compose):
    for cfg in _jobs(name, compose):
        for section, expected in PAPER_RECIPES[name].items():
            actual = OmegaConf.to_container(cfg[section], resolve=True)
            assert {k: actual[k] for k in expected} == expected, f"{name}: {section}"
        TrainConfig(**OmegaConf.to_container(cfg.trainer)).check(num_train=cfg.task.num_train)
    sweep = _sweep(name)[1]
    for key, grid in PAPER_GRIDS.get(name, {}).items():
        assert sorted(float(v) for v in sweep[key]) == pytest.approx(grid, rel=1e-2)


def test_zoologys_models_are_its_figure_2_configs(compose):
    """1 attention head with dropout 0.1 and biases, H3 with d_state = the length and head_dim 2, BaseConv's
    [3, -1, 3, -1], every block's state mixer the identity (configs.py of iclr24_zoology_figure2)."""
    seen = set()
    for cfg in _jobs("zoology_mqar", compose):
        mixer, length = cfg.model.mixer, cfg.task.seq_len
        seen.add(mixer._target_.rsplit(".", 1)[1])
        assert cfg.model.ffn._target_ == "torch.nn.Identity"
        if mixer._target_.endswith("Attention"):
            assert (mixer.n_heads, mixer.bias, mixer.dropout) == (1, True, 0.1)
            assert cfg.model.position._target_.endswith("LearnedPosition")
        else:
            assert cfg.model.position._target_.endswith("none")
        if mixer._target_.endswith("H3"):
            assert (OmegaConf.to_container(mixer, resolve=True)["d_state"], mixer.head_dim) == (length, 2)
        if mixer._target_.endswith("BaseConv"):
            assert list(mixer.kernel_size) == [3, -1, 3, -1]
    assert seen == {"Attention", "BaseConv", "H3", "Hyena", "RWKVTimeMix"}


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "model" / "zoology").glob("*.yaml")))
def test_every_zoology_preset_builds_a_causal_model_with_its_dropout(compose, name):
    from harness.run.build import build_model

    cfg = compose(
        [
            f"model=zoology/{name}",
            "task=zoology/mqar_64",
            "task.vocab_size=32",
            "model.d_model=16",
            "model.dropout_embedding=0.1",
        ]
    )
    model = build_model(cfg).eval()
    idx = torch.randint(0, 32, (2, 64))
    idx2 = idx.clone()
    idx2[:, 40] = (idx2[:, 40] + 1) % 32
    torch.testing.assert_close(model(idx2)[:, :40], model(idx)[:, :40], rtol=0, atol=1e-5)
    model.train()
    torch.manual_seed(0)
    a = model(idx)
    torch.manual_seed(0)
    assert torch.equal(a, model(idx)) and not torch.allclose(a, model.eval()(idx))
