"""The leaderboard on records whose statistics are known because the test builds them."""

import statistics

import pandas as pd
import pytest

from harness import board
from harness.results import SCHEMA, load_records, run_id, write_json_atomic


def record(mixer, task, seed, test, val=None, lr=1e-3, status="completed", rid=None):
    config = {"seed": seed, "trainer": {"lr": lr}, "task": {"name": task}, "model": {"mixer": mixer}}
    return {
        "schema": SCHEMA, "run_id": rid or run_id(config), "status": status, "error": None,
        "labels": {"mixer": mixer, "norm": "layernorm", "task": task},
        "overrides": [f"model/mixer={mixer}", f"seed={seed}", f"trainer.lr={lr}"], "config": config,
        "seed": seed, "metrics": {} if status != "completed" else {
            "test/accuracy": test, "val/accuracy": test if val is None else val, "test/loss": 1 - test,
            "val/loss": 1 - (test if val is None else val)},
        "cost": {"params": 100 if mixer == "attention" else 80, "tokens_per_second": 10.0},
        "timestamps": {"finished": f"2026-01-01T00:00:0{seed}"},
    }


def write_all(tmp_path, recs):
    for i, r in enumerate(recs):
        write_json_atomic(tmp_path / str(i) / "result.json", r)


def test_means_std_and_counts(tmp_path):
    accs = {("attention", "mqar"): [0.9, 1.0, 0.8], ("hyena", "mqar"): [0.5, 0.7, 0.6],
            ("attention", "ih"): [0.2, 0.4, 0.3], ("hyena", "ih"): [0.1, 0.1, 0.1]}
    write_all(tmp_path, [record(m, t, s, a) for (m, t), vals in accs.items() for s, a in enumerate(vals)])
    long, table = board.leaderboard([tmp_path])
    for (m, t), vals in accs.items():
        cell = long[(long.variant == m) & (long.task == t)].iloc[0]
        assert cell["mean"] == pytest.approx(statistics.mean(vals))
        assert cell["std"] == pytest.approx(statistics.stdev(vals))
        assert cell["n"] == 3
    assert list(table.index) == ["attention", "hyena"]
    assert table.loc["attention", "mqar"] == "0.900 ± 0.100 (n=3)"
    assert table.loc["hyena", "params"] == "80"


def test_select_picks_best_on_validation_and_reports_test(tmp_path):
    recs = [record("attention", "mqar", s, test=0.1, val=0.9, lr=1e-2) for s in (0, 1)]
    recs += [record("attention", "mqar", s, test=0.8, val=0.5, lr=1e-3) for s in (0, 1)]
    write_all(tmp_path, recs)
    long, table = board.leaderboard([tmp_path], select=["trainer.lr"])
    [cell] = long.to_dict("records")
    assert cell["mean"] == pytest.approx(0.1) and cell["n"] == 2 and cell["selected"] == "trainer.lr=0.01"


def test_loss_is_lower_is_better(tmp_path):
    write_all(tmp_path, [record("a", "lm", 0, 0.9), record("b", "lm", 0, 0.5)])
    _, table = board.leaderboard([tmp_path], metric="loss")
    assert list(table.index) == ["a", "b"]


def test_failed_runs_are_counted_not_dropped(tmp_path):
    write_all(tmp_path, [record("attention", "mqar", 0, 0.9), record("attention", "mqar", 1, 0, status="failed"),
                         record("hyena", "mqar", 0, 0, status="diverged")])
    long, table = board.leaderboard([tmp_path])
    assert table.loc["attention", "mqar"] == "0.900 (n=1) [1 failed]"
    assert table.loc["hyena", "mqar"] == "failed (1)"


def test_broken_records_are_skipped_with_a_warning(tmp_path, caplog):
    write_all(tmp_path, [record("attention", "mqar", 0, 0.9)])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "result.json").write_text('{"schema": 1, "run_')
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / "result.json").write_text('{"schema": 999, "status": "completed"}')
    assert len(load_records([tmp_path])) == 1
    assert "bad/result.json" in caplog.text and "future/result.json" in caplog.text


def test_a_rerun_is_counted_once(tmp_path):
    write_all(tmp_path, [record("attention", "mqar", 0, 0.9, rid="x"), record("attention", "mqar", 0, 0.9, rid="x")])
    long, _ = board.leaderboard([tmp_path])
    assert long.iloc[0]["n"] == 1


def test_cli_writes_markdown_and_csv(tmp_path, capsys):
    write_all(tmp_path / "runs", [record("attention", "mqar", 0, 0.9)])
    board.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert "0.900 (n=1)" in capsys.readouterr().out
    assert "0.900 (n=1)" in (tmp_path / "out" / "leaderboard.md").read_text()
    assert pd.read_csv(tmp_path / "out" / "leaderboard.csv")["mean"].tolist() == [0.9]


def test_run_id_ignores_where_results_go_and_how_they_are_logged():
    base = {"seed": 0, "model": {"d_model": 64}, "trainer": {"lr": 1e-3, "progress": True}}
    moved = {**base, "paths": {"results": "/elsewhere"}, "logger": {"mode": "online"}, "name": "other",
             "trainer": {"lr": 1e-3, "progress": False}}
    assert run_id(base) == run_id(moved)
    assert run_id(base) != run_id({**base, "seed": 1})
