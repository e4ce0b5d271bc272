"""Every mixer option learns a tiny MQAR (Zoology's setting in miniature: 2 layers, no feed-forward, d_model 64).

Guessing the value of a random in-context pair scores 1/num_kv_pairs = 0.25 here, and a model that has learned only
which tokens are values gets there without any recall; passing needs at least twice that. Attention reaches ~1.0 in
~600 steps; every mixer gets up to 1500, stopping early at 0.99.
"""

import pytest
from hydra.utils import instantiate

from harness.hybrid import build_model
from harness.train import TrainConfig, seed_everything, train
from tests.conftest import options

NUM_KV_PAIRS = 4
THRESHOLD = 2 / NUM_KV_PAIRS
TASK = ["task=mqar", "task.vocab_size=64", "task.seq_len=32", f"task.num_kv_pairs={NUM_KV_PAIRS}",
        "task.num_train=10000", "task.num_val=256", "task.num_test=256"]
TRAINER = TrainConfig(max_steps=1500, batch_size=32, lr=3e-3, warmup_steps=50, eval_every=100, target_accuracy=0.99,
                      progress=False)


def learn(compose, overrides: list[str], seed: int = 0) -> dict:
    cfg = compose([*TASK, "model/ffn=none", "model.d_model=64", "model.n_layers=2", *overrides])
    seed_everything(seed)
    model, task = build_model(cfg), instantiate(cfg.task)
    return train(model, task.splits(seed), TRAINER, seed=seed)["metrics"]


@pytest.mark.slow
@pytest.mark.parametrize("name", options("model/mixer"))
def test_mixer_learns_mqar_above_chance(compose, name):
    metrics = learn(compose, [f"model/mixer={name}"])
    print(f"\n{name}: test/accuracy {metrics['test/accuracy']:.3f} after {metrics['steps']} steps")
    assert metrics["test/accuracy"] > THRESHOLD, f"{name} reached {metrics['test/accuracy']:.3f}"


@pytest.mark.slow
def test_a_hybrid_learns_mqar_above_chance(compose):
    metrics = learn(compose, ["model.pattern=[hyena,attention]"])
    assert metrics["test/accuracy"] > THRESHOLD
