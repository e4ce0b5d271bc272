"""Saved models (harness/run/weights.py): a completed run keeps its final weights as safetensors beside its record,
named there; loaded into the model its config builds, they give the record's test metrics again."""

import contextlib
import json
from pathlib import Path

import pytest
from safetensors.torch import load_model

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
