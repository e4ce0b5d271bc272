"""Every task suite (conf/suite/) runs end to end at smoke size: one short run per task setting, each completed,
with what a leaderboard needs in its record (MAD's family and setting, one metric per extrapolation length)."""

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import options
from tests.test_cli import records

# Command-line values win over a suite's trainer fields and sweep parameters: one run per task setting. Batches of
# one keep suite=mamba's length-4,096 attention to a few seconds a step on a CPU.
SMOKE = [
    "trainer=smoke",
    "trainer.max_steps=4",
    "trainer.eval_every=2",
    "trainer.epochs=null",
    "trainer.lr=1e-3",
    "trainer.weight_decay=0.0",
    "trainer.batch_size=1",
    "trainer.eval_batch_size=2",
    "task.num_train=16",
    "task.num_val=2",
    "task.num_test=2",
]


def archbench(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """As tests/test_cli.py runs it, with room for suite=mad_full's 66 runs, and a private task cache."""
    env = {
        **os.environ,
        "ARCHBENCH_RESULTS": str(tmp_path / "results"),
        "ARCHBENCH_CACHE": str(tmp_path / "cache"),
        "WANDB_MODE": "offline",
    }
    cmd = [sys.executable, "-c", "from harness.run.cli import main; main()", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)


def swept_tasks(suite: str) -> list[str]:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"suite={suite}"], return_hydra_config=True)
    return [t.strip() for t in str(cfg.hydra.sweeper.params.task).split(",")]


@pytest.mark.slow
@pytest.mark.parametrize("suite", [s for s in options("suite") if s != "quick"])  # quick: tests/test_suites.py
def test_every_suite_runs_one_smoke_step_per_task(tmp_path, suite):
    tasks = swept_tasks(suite)
    proc = archbench(tmp_path, f"suite={suite}", *SMOKE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = records(tmp_path)
    assert sorted(r["labels"]["task"] for r in recs) == sorted(tasks)
    assert all(r["status"] == "completed" for r in recs), [r["error"] for r in recs if r["status"] != "completed"]
    if suite.startswith("mad"):
        cells = {(r["config"]["task"]["family"], r["config"]["task"]["setting"]) for r in recs}
        assert len(cells) == len(tasks) and {f for f, _ in cells} == {
            "in_context_recall",
            "fuzzy_recall",
            "noisy_recall",
            "selective_copying",
            "compression",
            "memorization",
        }
    for r in recs:
        for length in r["config"]["task"].get("test_lengths") or []:
            assert 0 <= r["metrics"][f"test@{length}/accuracy"] <= 1
