"""wandb, offline: what a run writes to its offline folder (read back from the .wandb file, the same protobuf
records `wandb sync` uploads), and the leaderboard built from objects shaped like wandb.Api()'s runs."""

import json
import math
import os
import struct
import subprocess
import sys
import time

import pandas as pd
import pytest

from harness.record.results import load_records, write_json_atomic
from harness.report import BoardError, board
from harness.report.wandb_runs import fetch_records, record_from_run, records_from_runs
from harness.run.logger import WandbLogger
from tests.test_board import known_records, record


def read_wandb_file(path) -> list:
    """The protobuf records of a .wandb file: a ':W&B' header, then a LevelDB-style log of 32 KiB blocks whose
    chunks (checksum, length, type: 1 full, 2 first, 3 middle, 4 last) hold wandb_internal_pb2.Record messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, out, buf = 7, [], b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        buf = (b"" if kind in (1, 2) else buf) + data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            message = pb.Record()
            message.ParseFromString(buf)
            out.append(message)
    return out


def _key(item) -> str:
    return item.key or ".".join(item.nested_key)


def offline_contents(run_dir, wait: float = 30.0) -> dict:
    """What the run's .wandb file holds, once wandb's service has written it up to the exit record (finish()
    returns before the file is always flushed)."""
    [data] = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + wait
    while True:
        messages = read_wandb_file(data)
        if any(m.HasField("exit") for m in messages) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    runs = [m.run for m in messages if m.HasField("run")]
    assert len(runs) == 1, (data, len(data.read_bytes()), [m.WhichOneof("record_type") for m in messages])
    run = runs[0]
    history = [{_key(i): json.loads(i.value_json) for i in m.history.item} for m in messages if m.HasField("history")]
    summary = {}
    for m in messages:
        if m.HasField("summary"):
            summary.update({_key(i): json.loads(i.value_json) for i in m.summary.update})
    return {
        "run": run,
        "config": {i.key: json.loads(i.value_json) for i in run.config.update},
        "history": history,
        "summary": summary,
        "file": data,
    }


def test_offline_run_folder_holds_group_tags_config_history_and_summary(tmp_path):
    config = {"seed": 0, "model": {"d_model": 64}, "trainer": {"lr": 1e-3}}
    logger = WandbLogger(
        project="archbench",
        mode="offline",
        group="sweep1",
        job_type="mqar",
        tags=["attention", "mqar"],
        name="attention-mqar-s0",
        config=config,
        dir=str(tmp_path),
        labels={"mixer": "attention", "task": "mqar"},
        overrides=["model/mixer=attention"],
        run_id="0123456789abcdef",
    )
    for step in (50, 100):
        logger.log({"step": step, "train/loss": 2.0 / step, "val/accuracy": step / 200}, step)
    logger.summary({"test/accuracy": 0.9, "params": 1234, "peak_memory_bytes": None})
    logger.finish()
    [run_dir] = (tmp_path / "wandb").glob("offline-run-*")
    got = offline_contents(run_dir)
    run = got["run"]
    assert run_dir.name.endswith(run.run_id) and got["file"].name == f"run-{run.run_id}.wandb"
    assert (run.run_group, run.job_type, run.display_name) == ("sweep1", "mqar", "attention-mqar-s0")
    assert list(run.tags) == ["attention", "mqar"]
    c = got["config"]
    assert c["model"] == {"d_model": 64} and c["trainer"] == {"lr": 1e-3} and c["seed"] == 0
    assert c["labels"] == {"mixer": "attention", "task": "mqar"} and c["run_id"] == "0123456789abcdef"
    assert c["overrides"] == ["model/mixer=attention"]
    rows = [(h["_step"], h["val/accuracy"], h["train/loss"]) for h in got["history"] if "val/accuracy" in h]
    assert sorted(rows) == [(50, 0.25, 0.04), (100, 0.5, 0.02)]
    s = got["summary"]
    assert s["test/accuracy"] == 0.9 and s["params"] == 1234 and s["wall_seconds"] > 0
    assert "peak_memory_bytes" not in s  # None (no GPU) is left out, not logged as null


@pytest.mark.slow
def test_cli_run_logs_labels_and_overrides_from_hydra(tmp_path):
    env = {**os.environ, "ARCHBENCH_RESULTS": str(tmp_path / "results"), "WANDB_MODE": "offline"}
    cmd = [
        sys.executable,
        "-c",
        "from harness.run.cli import main; main()",
        "logger=wandb",
        "trainer=smoke",
        "task.num_train=64",
        "task.num_val=16",
        "task.num_test=16",
        "model/mixer=gqa",
        "name=wb",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    [run_dir] = (tmp_path / "results").rglob("offline-run-*")
    got = offline_contents(run_dir)
    [rec] = load_records([tmp_path / "results"])
    assert got["run"].run_group == "wb" and got["run"].job_type == "mqar" and "gqa" in got["run"].tags
    assert got["config"]["labels"] == rec["labels"] and got["config"]["run_id"] == rec["run_id"]
    assert got["config"]["overrides"] == rec["overrides"]
    assert got["summary"]["test/accuracy"] == rec["metrics"]["test/accuracy"]
    assert [h["_step"] for h in got["history"] if "val/accuracy" in h] == [h["step"] for h in rec["history"]]


class FakeRun:
    """Shaped like wandb.apis.public.Run: what archbench's logger put there, as the API hands it back."""

    def __init__(self, rec: dict, state: str = "finished", logged_by_archbench: bool = True):
        self.id, self.name, self.group = rec["run_id"][:8], f"{rec['labels']['mixer']}-s{rec['seed']}", "sweep1"
        self.job_type, self.state, self.path = rec["labels"]["task"], state, ["me", "archbench", rec["run_id"][:8]]
        self.tags = sorted(set(rec["labels"].values()))
        extra = {"labels": rec["labels"], "run_id": rec["run_id"], "overrides": rec["overrides"]}
        self.config = {**rec["config"], **(extra if logged_by_archbench else {}), "_wandb": {"cli_version": "0"}}
        self.summary = {
            **rec["metrics"],
            **rec["cost"],
            "_runtime": 3.5,
            "_step": 100,
            "_timestamp": 1.7e9,
            "_wandb": {"runtime": 3},
        }
        self._rows = [
            {"_step": h["step"], **{k: v for k, v in h.items() if k != "step"}, "_runtime": 1.0}
            for h in rec.get("history", [])
        ]

    def scan_history(self, keys=None, page_size=1000, min_step=None, max_step=None):
        return iter(self._rows)

    def history(self, samples=500, keys=None, x_axis="_step", pandas=True, stream="default"):
        return list(self._rows)


def test_wandb_runs_give_the_same_leaderboard_as_result_files(tmp_path):
    recs = known_records()
    for i, r in enumerate(recs):
        write_json_atomic(tmp_path / str(i) / "result.json", r)
    from_files = board.build(load_records([tmp_path]))
    runs = [FakeRun(r) for r in recs] + [FakeRun(recs[0], state="running")]  # a live run is not counted
    from_wandb = board.build(records_from_runs(runs))
    cells = ["variant", "column", "mean", "std", "ci_lo", "ci_hi", "n", "tied", "rank", "params_non_embedding"]
    key = ["variant", "column"]
    a = from_files.long[cells].sort_values(key).reset_index(drop=True)
    b = from_wandb.long[cells].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False)  # sums in another order: equal to rounding
    assert from_files.table.equals(from_wandb.table)


def test_runs_logged_without_archbench_fields_are_named_by_their_differing_config(tmp_path):
    recs = [
        record(m, "mqar", s, acc + s / 100, d_model=d)
        for m, d, acc in [("attention", 32, 0.5), ("attention", 64, 0.9)]
        for s in (0, 1)
    ]
    runs = [FakeRun(r, logged_by_archbench=False) for r in recs]
    runs[-1].state = "crashed"
    converted = records_from_runs(runs)
    assert {r["status"] for r in converted} == {"completed", "failed"}
    assert all(r["labels"] == {"task": "mqar"} for r in converted)  # from job_type
    assert converted[0]["overrides"] == ["model.d_model=32"]  # the only model field that differs (seed excluded)
    result = board.build(converted)
    assert sorted(result.table.index) == ["d_model=32", "d_model=64"]
    assert result.table.loc["d_model=64", "mqar"] == "0.900 1/1 ≥ 0.9 n=1 † [1 failed]"  # one seed: untested
    assert converted[0]["cost"]["wall_seconds"] == 3.5  # from wandb's _runtime when the logger did not set it


def test_history_comes_from_scan_history_and_fetch_filters_by_group():
    rec = record(
        "attention",
        "mqar",
        0,
        0.9,
        history=[
            {"step": 50, "train/loss": 1.0, "val/accuracy": 0.5},
            {"step": 100, "train/loss": 0.5, "val/accuracy": 0.9},
        ],
    )

    class FakeApi:
        def runs(self, path, filters=None):
            self.asked = (path, filters)
            return [FakeRun(rec)]

    api = FakeApi()
    [got] = fetch_records("me/archbench", group="sweep1", history=True, api=api)
    assert api.asked == ("me/archbench", {"group": "sweep1"})
    assert got["history"] == [
        {"step": 50, "train/loss": 1.0, "val/accuracy": 0.5},
        {"step": 100, "train/loss": 0.5, "val/accuracy": 0.9},
    ]
    assert got["metrics"]["test/accuracy"] == 0.9 and got["path"] == f"wandb:me/archbench/{rec['run_id'][:8]}"
    assert "_runtime" not in got["metrics"] and "params" not in got["metrics"]
    with pytest.raises(BoardError, match="no finished runs"):
        fetch_records("me/archbench", api=type("Empty", (), {"runs": lambda self, path, filters=None: []})())


def test_a_diverged_run_comes_back_diverged_with_its_reason_and_its_mfu_as_a_cost():
    rec = known_records()[0]
    run = FakeRun(rec, state="failed")
    run.summary.update(status="diverged", error="training loss is nan at step 200")
    back = record_from_run(run)
    assert back["status"] == "diverged" and back["error"] == "training loss is nan at step 200"
    plain = FakeRun(rec, state="crashed")  # a run killed before archbench could log why
    back = record_from_run(plain)
    assert back["status"] == "failed" and back["error"] == "wandb run state: crashed"
    done = record_from_run(FakeRun({**rec, "cost": {**rec["cost"], "mfu": 0.4}}))
    assert done["cost"]["mfu"] == 0.4 and "mfu" not in done["metrics"]


def test_the_dashboard_gets_interval_means_lr_tokens_and_throughput_and_a_resumed_attempt_continues_its_run(
    tmp_path, compose
):
    """Offline: the trainer's rows as wandb stores them; an attempt resuming from the first one's checkpoint logs to
    the same wandb run; a fresh start of the same run id (a deliberate rerun) opens another."""
    from hydra.utils import instantiate

    from harness.run.train import TrainConfig, seed_everything, train

    def logger(folder, resume_from=None):
        (tmp_path / folder).mkdir()
        return WandbLogger(
            project="archbench",
            mode="offline",
            group="g",
            job_type="mqar",
            tags=[],
            name="n",
            config={},
            dir=str(tmp_path / folder),
            labels={},
            overrides=[],
            run_id="0123456789abcdef",
            resume_from=resume_from,
        )

    first = logger("a")
    cfg = compose(["model/ffn=none", "model.d_model=32", "task.num_train=64", "task.num_val=16", "task.num_test=16"])
    seed_everything(0)
    model, task = instantiate(cfg.model), instantiate(cfg.task)
    settings = TrainConfig(max_steps=6, eval_every=3, batch_size=8, warmup_steps=2, progress=False)
    out = train(model, task.splits(0), settings, seed=0, log_fn=first.log)
    first.finish()
    got = offline_contents(next((tmp_path / "a" / "wandb").glob("offline-run-*")))
    rows = [h for h in got["history"] if "val/accuracy" in h]
    assert [r["_step"] for r in rows] == [3, 6]
    for row, exact in zip(rows, out["history"], strict=True):
        assert row["lr"] == exact["lr"] and row["tokens"] == exact["tokens"] == row["_step"] * 8 * task.seq_len
        assert row["grad_norm"] > 0 and row["tokens_per_second"] > 0 and math.isfinite(row["train/loss_mean"])
    assert rows[0]["train/loss_mean"] != rows[0]["train/loss"]  # the mean of 3 steps, not the last one's loss

    (tmp_path / "a" / "checkpoint.pt").write_bytes(b"")  # what the first attempt left to resume from
    second = logger("b", resume_from=tmp_path / "a" / "checkpoint.pt")
    second.finish()
    third = logger("c")
    third.finish()
    assert got["run"].run_id == first.id == second.id != third.id and first.id.startswith("0123456789abcdef-")
    assert offline_contents(next((tmp_path / "b" / "wandb").glob("offline-run-*")))["run"].run_id == first.id
