"""Saved models (harness/run/weights.py): a completed run keeps its final weights as safetensors beside its record,
named there; loaded into the model its config builds, they give the record's test metrics again."""

import contextlib
import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from safetensors.torch import load_model

from harness.run import weights as saved
from harness.run.build import build
from harness.run.train import evaluate
from tests.test_cli import SMOKE, archbench, records


def rerun_test_split(compose, record: dict, weights: Path) -> dict:
    """The record's test metrics, computed again from its saved weights and its overrides."""
    task, model, _ = build(compose(record["overrides"]))
    load_model(model, str(weights))  # strict: every parameter of the model, no other
    return evaluate(model, task.splits(record["seed"])["test"].to("cpu"), 512, contextlib.nullcontext)


def test_a_completed_run_keeps_its_weights_and_they_give_its_metrics(tmp_path, compose):
    proc = archbench(tmp_path, *SMOKE, "seed=3")
    assert proc.returncode == 0, proc.stderr
    [path] = sorted((tmp_path / "results").rglob("result.json"))
    record = json.loads(path.read_text())
    assert record["files"] == {"weights": "model.safetensors"}
    weights = path.parent / record["files"]["weights"]
    assert not list(path.parent.glob(".model.safetensors.*")), "no temporary file left"
    got = rerun_test_split(compose, record, weights)
    assert got["loss"] == pytest.approx(record["metrics"]["test/loss"], rel=1e-6)
    assert got["accuracy"] == record["metrics"]["test/accuracy"]


def test_save_model_false_keeps_none(tmp_path):
    proc = archbench(tmp_path, *SMOKE, "save_model=false")
    assert proc.returncode == 0, proc.stderr
    [record] = records(tmp_path)
    assert record["files"] == {} and not list((tmp_path / "results").rglob("*.safetensors"))


@pytest.mark.parametrize("tied", [False, True])
def test_weights_given_whole_make_the_file_the_plain_model_makes(tmp_path, composed_once, tied):
    """An FSDP run's model holds shards, so the CLI hands over the whole state dict it gathered (with the model's
    names, each tensor apart): the same file, byte for byte, as the plain model's own, a tied head stored once."""
    model = instantiate(composed_once(["model.d_model=32", "model.n_layers=1", f"model.tie_embeddings={tied}"]).model)
    whole = {name: t.clone() for name, t in model.state_dict().items()}
    saved.save(model, tmp_path / "plain"), saved.save(model, tmp_path / "whole", state=whole)
    plain, got = ((tmp_path / d / saved.FILE).read_bytes() for d in ("plain", "whole"))
    assert got == plain
