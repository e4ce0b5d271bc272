"""Checkpoint and exact resume: a run interrupted after a checkpoint and resumed finishes bitwise as if never
interrupted, in-process (fast) and as a user meets it: a subprocess killed with SIGKILL and the same command again."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from harness.run import checkpoint as ckpt
from harness.run.checkpoint import Checkpointer
from harness.run.train import TrainConfig, seed_everything, train

TINY = ["model/ffn=none", "model.d_model=32", "task.num_train=256", "task.num_val=32", "task.num_test=32"]
SETTINGS = {
    "max_steps": 12,
    "eval_every": 4,
    "batch_size": 16,
    "warmup_steps": 2,
    "progress": False,
    "checkpoint_every": 3,
}


class Crash(Exception):
    """Stands in for a kill: raised by the logger at an evaluation after a checkpoint was saved."""


def noisy(module, inputs, output):
    """Makes every RNG matter: each training forward draws from python, numpy and torch (a dropout)."""
    if not module.training:
        return output
    scale = 1 + 1e-3 * (random.random() + float(np.random.rand()))
    return torch.nn.functional.dropout(output, 0.1) * scale


def fit(compose, checkpoint=None, crash_at=None, seed=0, before=None):
    seed_everything(seed)
    cfg = compose(TINY)
    model, task = instantiate(cfg.model), instantiate(cfg.task)
    model.embedding.register_forward_hook(noisy)
    if before is not None:
        before()

    def log_fn(row, step):
        if step == crash_at:
            raise Crash(step)

    return train(model, task.splits(seed), TrainConfig(**SETTINGS), seed=seed, log_fn=log_fn, checkpoint=checkpoint)


def test_resume_after_a_crash_is_bitwise_identical_to_an_uninterrupted_run(compose, tmp_path):
    reference = fit(compose)
    saved = []
    first = Checkpointer(tmp_path / "a" / ckpt.FILE, on_save=saved.append)
    with pytest.raises(Crash):
        fit(compose, first, crash_at=8)  # checkpoints at steps 3 and 6, then the crash at step 8
    assert saved == [first.path, first.path]
    state = torch.load(first.path, weights_only=True)
    assert state["step"] == 6 and len(state["history"]) == 1 and set(state["rng"]) >= {"python", "numpy", "torch"}

    second = Checkpointer(tmp_path / "b" / ckpt.FILE, resume_from=first.path)
    resumed = fit(compose, second, before=lambda: [random.random(), np.random.rand(), torch.rand(1)])
    assert resumed["cost"]["resumed_from_step"] == 6
    assert resumed["metrics"] == reference["metrics"] and resumed["history"] == reference["history"]
    assert not first.path.exists() and second.path.exists()  # the new checkpoint superseded the old
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_rng_states_matter_here(compose):
    """Without restoring them, the noisy model above would train differently: the resume test can fail."""
    assert fit(compose)["history"] != fit(compose, before=lambda: torch.rand(1))["history"]


def test_a_damaged_checkpoint_is_ignored_with_a_warning(compose, tmp_path, caplog):
    bad = tmp_path / "old" / ckpt.FILE
    bad.parent.mkdir()
    bad.write_bytes(b"PK\x03\x04 truncated")
    out = fit(compose, Checkpointer(tmp_path / "new" / ckpt.FILE, resume_from=bad))
    assert "cannot resume from" in caplog.text and out["cost"]["resumed_from_step"] is None
    assert out["history"] == fit(compose)["history"]


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(5)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt.save(tmp_path / "c.pt", {"rng": ckpt.rng_state(gen)})
    expected = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen))
    random.seed(9), np.random.seed(9), torch.manual_seed(9), gen.manual_seed(9)
    ckpt.set_rng_state(torch.load(tmp_path / "c.pt", weights_only=True)["rng"], gen)
    assert (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen)) == expected


# --- as a user meets it: kill -9 and the same command again ---------------------------------------------------

RUN = [
    "trainer=smoke",
    "model/ffn=none",
    "model.d_model=32",
    "model.n_layers=1",
    "task.num_train=256",
    "task.num_val=32",
    "task.num_test=32",
    "trainer.max_steps=60",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=5",
]
# Each training step sleeps 20 ms (numerics untouched), so that the kill lands mid-run even on a fast machine.
SLOWED = (
    "import time, harness.run.train as t; f = t.scored_loss; "
    "t.scored_loss = lambda *a: (time.sleep(0.02) if a[0].training else None, f(*a))[1]; "
)


def start(results: Path, *args: str, slowed: bool = False) -> subprocess.Popen:
    env = {**os.environ, "ARCHBENCH_RESULTS": str(results), "OMP_NUM_THREADS": "1"}
    code = (SLOWED if slowed else "") + "from harness.run.cli import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=results.parent,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"exited before the kill:\n{proc.communicate()[0]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("result.json"))]


@pytest.mark.slow  # three processes start torch: ~10 s on 2 cores (the CLI-level resume in test_faults is fast)
def test_sigkill_then_the_same_command_resumes_to_identical_metrics(tmp_path):
    reference = start(tmp_path / "reference", *RUN)  # runs alongside the doomed one
    results = tmp_path / "results"
    doomed = start(results, *RUN, slowed=True)
    kill_when(doomed, lambda: list(results.glob(".in_progress/[!.]*")))  # not a marker's temporary file
    assert records(results) == [] and len(list(results.rglob(ckpt.FILE))) == 1

    again = start(results, *RUN)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "resuming from step" in out, out
    assert reference.wait(timeout=300) == 0
    [expected], [resumed] = records(tmp_path / "reference"), records(results)
    assert resumed["cost"]["resumed_from_step"] >= 5 and resumed["status"] == "completed"
    assert resumed["run_id"] == expected["run_id"]
    assert resumed["metrics"] == expected["metrics"] and resumed["history"] == expected["history"]
    assert not list(results.rglob(ckpt.FILE)) and not list(results.glob(".in_progress/*"))  # cleaned up
