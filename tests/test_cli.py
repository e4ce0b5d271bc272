"""`archbench` as a user runs it: in a subprocess, from a scratch folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.run.cli import main

SMOKE = ["trainer=smoke", "task.num_train=64", "task.num_val=16", "task.num_test=16"]


def archbench(tmp_path: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ARCHBENCH_RESULTS": str(tmp_path / "results"), "WANDB_MODE": "offline", **(env or {})}
    cmd = [sys.executable, "-c", "from harness.run.cli import main; main()", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def in_process(tmp_path: Path, monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """archbench(*args) in this process, where torch is loaded already: for commands refused before any work."""
    monkeypatch.setenv("ARCHBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # main() sets it; put back after the test
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["archbench", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return subprocess.CompletedProcess(sys.argv, code, out.out, out.err)


def records(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "results").rglob("result.json"))]


@pytest.fixture(scope="module")
def run_twice(tmp_path_factory) -> dict:
    """One smoke run, then the same command again: two tests read this one pair of processes (each starts torch)."""
    tmp_path = tmp_path_factory.mktemp("run_twice")
    first = archbench(tmp_path, *SMOKE, "seed=0")
    after_first = records(tmp_path)
    return {"tmp_path": tmp_path, "first": first, "after_first": after_first, "second": archbench(tmp_path, *SMOKE)}


def test_single_run_writes_one_complete_record(run_twice):
    proc, tmp_path = run_twice["first"], run_twice["tmp_path"]
    assert proc.returncode == 0, proc.stderr
    [record] = run_twice["after_first"]
    assert record["status"] == "completed" and record["seed"] == 0
    assert record["labels"] == {
        "model": "transformer",
        "mixer": "attention",
        "norm": "layernorm",
        "ffn": "mlp",
        "position": "learned",
        "task": "mqar",
    }
    assert {"val/accuracy", "test/accuracy", "test/loss", "best/step"} <= set(record["metrics"])
    assert record["cost"]["params"] > 0 and record["cost"]["tokens_per_second"] > 0
    assert (record["cost"]["mfu"] is None) == (record["cost"]["peak_flops"] is None)  # None where the peak is unknown
    assert record["config"]["task"]["vocab_size"] == 128 and record["env"]["torch"]
    assert not list((tmp_path / "results").rglob("*.tmp"))


def test_a_learned_position_table_tested_past_its_training_length_is_said(tmp_path):
    # parity_check trains on sequences of at most 41 tokens and tests at 46 (45 bits, the answer): rows 42-46 of a
    # learned table are random vectors at test time, a handicap the board cannot show; the run says so, and runs
    short = [*SMOKE, "task=parity_check", "task.test_max_length=45", "task.num_test_lengths=2"]
    proc = archbench(tmp_path, "-m", *short, "model/position=learned,none")
    assert proc.returncode == 0, proc.stderr
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "never trained" in line]
    assert len(said) == 1 and "rows 42-46 of the position table are never trained" in said[0]  # learned, not none
    assert len(records(tmp_path)) == 2


def test_sweep_gives_a_record_per_run_and_a_leaderboard_with_the_right_means(tmp_path):
    proc = archbench(tmp_path, "-m", "model/mixer=attention,gqa", "seed=0,1", *SMOKE)
    assert proc.returncode == 0, proc.stderr
    recs = records(tmp_path)
    assert len(recs) == 4 and {r["status"] for r in recs} == {"completed"}
    assert len({r["run_id"] for r in recs}) == 4
    [csv] = list((tmp_path / "results").rglob("leaderboard.csv"))
    board = pd.read_csv(csv).set_index("variant")
    for mixer in ("attention", "gqa"):
        accs = [r["metrics"]["test/accuracy"] for r in recs if r["labels"]["mixer"] == mixer]
        assert board.loc[mixer, "n"] == 2
        assert board.loc[mixer, "mean"] == pytest.approx(sum(accs) / 2, abs=1e-12)
    assert "| attention" in proc.stdout and "| gqa" in proc.stdout


def test_rerunning_a_completed_run_skips_it(run_twice):
    tmp_path = run_twice["tmp_path"]
    assert run_twice["first"].returncode == 0
    proc = run_twice["second"]
    assert proc.returncode == 0 and "already completed" in proc.stdout + proc.stderr
    first, second = records(tmp_path)
    assert first["run_id"] == second["run_id"] and first["metrics"] == second["metrics"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["model.d_model=30", "model.mixer.n_heads=4"], "n_heads=4 must divide d_model=30"),
        (["model/mixer=no_such_mixer"], "no_such_mixer"),
        (["model.mixer.n_haeds=2"], "n_haeds"),
        (["task.seq_len=33"], "task.seq_len=33 must be even"),
        (["trainer.lr=-1"], "trainer.lr=-1: must be a finite number > 0"),
    ],
)
def test_bad_config_gives_one_line_exit_2_and_no_record(tmp_path, monkeypatch, capsys, args, message):
    proc = in_process(tmp_path, monkeypatch, capsys, *SMOKE, *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archbench: error:") and message in lines[0], proc.stderr
    assert records(tmp_path) == []


def test_two_wandb_offline_runs_in_one_multirun_get_distinct_run_folders(tmp_path):
    proc = archbench(tmp_path, "-m", "logger=wandb", "seed=0,1", *SMOKE)
    assert proc.returncode == 0, proc.stderr
    runs = sorted((tmp_path / "results").rglob("offline-run-*"))
    assert len(runs) == 2 and runs[0].name != runs[1].name
    assert all(list(run.glob("*.wandb")) for run in runs)
