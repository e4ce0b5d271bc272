"""Fault injection: what a sweep of hundreds of runs meets (a crashing run, a NaN loss, CUDA out of memory, a typo in
one cell, an interrupted sweep, a damaged record, parallel workers), and what each must leave behind.

Most tests run `archbench` in-process (Hydra's basic launcher runs the jobs in this process, which is what lets them
patch the trainer); the joblib test needs real worker processes."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.record import results
from harness.report import cli as board_cli
from harness.run import build, cli
from harness.run.train import seed_everything
from tests.sweeps import SMOKE


@pytest.fixture
def archbench(tmp_path, monkeypatch):
    """archbench(*args): the CLI in this process, writing under tmp_path/results."""
    monkeypatch.setenv("ARCHBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> None:
        monkeypatch.setattr(sys, "argv", ["archbench", *args])
        cli.main()

    return call


def installed(module: str) -> bool:
    """find_spec of a.b raises where a itself is missing (hydra_plugins, with no Hydra plugin installed)."""
    return importlib.util.find_spec(module.split(".")[0]) is not None and importlib.util.find_spec(module) is not None


def records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob(results.RECORD))]


# --- failure isolation ---------------------------------------------------------------------------------------------


def test_exception_nan_and_oom_are_recorded_and_the_sweep_goes_on(archbench, monkeypatch, tmp_path, capsys):
    real_train, real_free, freed = cli.train, cli.free_memory, []

    def faulty(model, splits, cfg, *, seed, **kw):
        if seed == 1:
            raise RuntimeError("injected failure")
        if seed == 2:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                "capacity of 79.11 GiB\nof which 1.2 GiB is free."
            )
        if seed == 3:  # lr 1e30, no clipping or decay: the weights overflow and the real loop meets a NaN loss
            cfg = dataclasses.replace(cfg, lr=1e30, grad_clip=0.0, weight_decay=0.0)
        return real_train(model, splits, cfg, seed=seed, **kw)

    monkeypatch.setattr(cli, "train", faulty)
    monkeypatch.setattr(cli, "free_memory", lambda: (freed.append(True), real_free()))
    with pytest.raises(SystemExit) as e:
        archbench("-m", "seed=0,1,2,3", *SMOKE)
    assert e.value.code == 1  # the sweep went on to the end, then says that some runs failed

    recs = {r["seed"]: r for r in records(tmp_path / "results")}
    assert sorted(recs) == [0, 1, 2, 3] and len(freed) == 4  # every job left a record, and its memory
    assert recs[0]["status"] == "completed"
    assert recs[1]["status"] == "failed" and recs[1]["error"] == "RuntimeError: injected failure"
    assert recs[2]["status"] == "failed"
    assert recs[2]["error"] == "CUDA out of memory: Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.11 GiB"
    assert recs[3]["status"] == "diverged" and recs[3]["error"] == "training loss is nan at step 2"
    assert all(r["metrics"] == {} for r in recs.values() if r["status"] != "completed")
    assert len(list((tmp_path / "results").glob(".completed/*"))) == 1  # only the completed run is marked done
    assert "[3 failed]" in capsys.readouterr().out  # the leaderboard counts them in their cell


def test_a_failed_run_is_run_again_by_a_rerun_and_then_counted_once(archbench, monkeypatch, tmp_path):
    real_train = cli.train
    monkeypatch.setattr(cli, "train", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("flaky node")))
    with pytest.raises(SystemExit) as e:
        archbench(*SMOKE)
    assert e.value.code == 1  # a failed single run exits non-zero, its record written
    monkeypatch.setattr(cli, "train", real_train)
    archbench(*SMOKE)  # not skipped: only completed runs are
    statuses = sorted(r["status"] for r in records(tmp_path / "results"))
    assert statuses == ["completed", "failed"]
    [run] = results.load_records([tmp_path / "results"])
    assert run["status"] == "completed"


def test_a_logger_that_fails_to_finish_costs_no_record(archbench, monkeypatch, tmp_path):
    from harness.run import logger

    monkeypatch.setattr(logger.NullLogger, "finish", lambda self, exit_code=0: 1 / 0)
    archbench(*SMOKE)
    [record] = records(tmp_path / "results")
    assert record["status"] == "completed" and len(list((tmp_path / "results").glob(".completed/*"))) == 1


def test_a_nan_between_evaluations_is_caught_before_a_checkpoint_holds_it(archbench, monkeypatch, tmp_path):
    real_train = cli.train

    def overflowing(model, splits, cfg, *, seed, **kw):
        return real_train(
            model, splits, dataclasses.replace(cfg, lr=1e30, grad_clip=0.0, weight_decay=0.0), seed=seed, **kw
        )

    monkeypatch.setattr(cli, "train", overflowing)
    with pytest.raises(SystemExit) as e:
        archbench(*SMOKE, "trainer.max_steps=8", "trainer.eval_every=8", "trainer.checkpoint_every=2")
    assert e.value.code == 1
    [record] = records(tmp_path / "results")
    assert record["status"] == "diverged" and record["error"] == "training loss is nan at step 2"
    assert not list((tmp_path / "results").rglob("checkpoint.pt"))  # a rerun does not resume into NaN weights


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_real_cuda_oom_is_recorded_and_the_next_job_gets_the_memory(archbench, tmp_path):
    """The first job asks for far more activation memory than any GPU has; the second must still run."""
    archbench(
        "-m",
        "trainer.batch_size=400000,8",
        "trainer=smoke",
        "task.num_train=400000",
        "task.num_val=16",
        "task.num_test=16",
        "model.d_model=1024",
        "task.seq_len=256",
        "task.vocab_size=512",
    )
    recs = {r["config"]["trainer"]["batch_size"]: r for r in records(tmp_path / "results")}
    assert recs[400000]["status"] == "failed" and recs[400000]["error"].startswith("CUDA out of memory")
    assert recs[8]["status"] == "completed"
    assert torch.cuda.memory_allocated() < 2**30


# --- validation before any work ------------------------------------------------------------------------------------

BAD = [
    (["model.d_model=30", "model.mixer.n_heads=4"], "n_heads=4 must divide d_model=30"),
    (["model/mixer=gqa", "model.mixer.n_kv_heads=3"], "n_kv_heads=3"),
    (["model.max_seq_len=32"], "task.seq_len=64 is longer than model.max_seq_len=32"),
    (["task.num_kv_pairs=20"], "num_kv_pairs=20 does not fit"),
    (["model.vocab_size=100"], "task.vocab_size=128 is larger than model.vocab_size=100"),
    (["task.vocab_size=40"], "vocab_size=40 must be greater than seq_len=64"),
    (["trainer.lr=0"], "trainer.lr=0: must be a finite number > 0"),
    (["trainer.lr=-1e-3"], "trainer.lr=-0.001: must be a finite number > 0"),
    (["trainer.max_steps=0"], "trainer.max_steps=0: must be an integer >= 1"),
    (["trainer.epochs=0"], "trainer.epochs=0: must be a finite number > 0 or null"),
    (["trainer.parallel=zero"], "trainer.parallel='zero': must be one of 'ddp', 'fsdp'"),
    (["task=lm_text", "task.data_files=/no/such/file.txt"], "data_files='/no/such/file.txt' does not exist"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m.split()[0] for _, m in BAD])
def test_bad_config_is_refused_with_a_message_naming_the_field(compose, args, message):
    if "task=lm_text" in args and not (Path(__file__).parents[1] / "conf/task/lm_text.yaml").exists():
        pytest.skip("no lm_text task")
    cfg = compose([*SMOKE, *args])
    with pytest.raises(build.ConfigError, match=None) as e:
        build.check(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_sweep_with_one_bad_job_trains_nothing_and_writes_nothing(archbench, monkeypatch, tmp_path, capsys):
    trained = []
    monkeypatch.setattr(cli, "train", lambda *a, **k: trained.append(1))
    with pytest.raises(SystemExit) as e:
        archbench(
            "-m",
            "logger=wandb",
            "model.d_model=64,32,30",
            "model.mixer.n_heads=4",
            "seed=0,1",
            *[a for a in SMOKE if not a.startswith("model.d_model")],
        )
    assert e.value.code == 2 and trained == []
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == "archbench: error: model.mixer.n_heads=4 must divide d_model=30 (job 4: model.d_model=30 seed=0)"
    assert not (tmp_path / "results").exists()  # no record, no sweep folder, no wandb run
    assert not list(tmp_path.rglob("wandb"))


@pytest.mark.parametrize("args,message", BAD, ids=[m.split()[0] for _, m in BAD])
def test_a_single_bad_run_exits_2_in_one_line_and_writes_no_record_and_no_wandb_run(
    archbench, tmp_path, capsys, args, message
):
    if "task=lm_text" in args and not (Path(__file__).parents[1] / "conf/task/lm_text.yaml").exists():
        pytest.skip("no lm_text task")
    with pytest.raises(SystemExit) as e:
        archbench("logger=wandb", *SMOKE, *args)
    [line] = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and line.startswith("archbench: error: ") and message in line
    assert records(tmp_path / "results") == [] and not list(tmp_path.rglob("wandb"))


def test_sweep_validation_builds_on_the_meta_device(compose, monkeypatch):
    """Validating a sweep of large models costs no memory and no weight init: no parameter is materialised."""
    sizes = []
    real = build._instantiate

    def spy(group, node, *rest):
        obj = real(group, node, *rest)
        if group == "model":
            sizes.append({p.device.type for p in obj.parameters()})
        return obj

    monkeypatch.setattr(build, "_instantiate", spy)
    big = ["model.d_model=4096", "model.n_layers=8"]  # ~1.6 B parameters: 6 GB if real
    build.check(compose([*[a for a in SMOKE if not a.startswith("model.d_model")], *big]))
    assert sizes == [{"meta"}]


# --- interrupted sweeps: rerun skips completed runs and resumes the interrupted one ---------------------------------


def test_rerunning_an_interrupted_sweep_skips_completed_and_resumes_interrupted(
    archbench, monkeypatch, tmp_path, capsys
):
    sweep = ["-m", "seed=0,1", *SMOKE, "trainer.max_steps=12", "trainer.checkpoint_every=4"]
    real_train = cli.train

    def interrupted(model, splits, cfg, *, seed, log_fn=None, **kw):
        def log(row, step):
            if seed == 1 and step == 6:  # after the checkpoint at step 4: Ctrl-C, as a user (or a kill) would
                raise KeyboardInterrupt
            log_fn(row, step)

        return real_train(model, splits, cfg, seed=seed, log_fn=log, **kw)

    monkeypatch.setattr(cli, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        archbench(*sweep)
    root = tmp_path / "results"
    [done] = records(root)  # job 0; the interrupted job 1 wrote no record
    assert done["seed"] == 0 and len(list(root.glob(".in_progress/*"))) == 1

    monkeypatch.setattr(cli, "train", real_train)
    capsys.readouterr()
    archbench(*sweep)
    out = capsys.readouterr()
    assert "already completed" in out.out + out.err and "resuming from step 4" in out.out + out.err
    first_sweep, second_sweep = sorted(p.parent for p in root.rglob("multirun.yaml"))
    by_seed = {r["seed"]: r for r in records(second_sweep)}
    assert sorted(by_seed) == [0, 1] and {r["status"] for r in by_seed.values()} == {"completed"}
    assert by_seed[0] == done  # the skipped run's record, copied into the new sweep folder
    assert by_seed[1]["cost"]["resumed_from_step"] == 4
    assert not list(root.glob(".in_progress/*")) and not list(root.rglob("checkpoint.pt"))
    assert len(list(root.rglob(results.RECORD))) == 3
    assert sorted(r["seed"] for r in results.load_records([root])) == [0, 1]  # what the leaderboard counts

    # the resumed run equals one that was never interrupted
    archbench(
        *SMOKE,
        "seed=1",
        "trainer.max_steps=12",
        "trainer.checkpoint_every=4",
        "skip_completed=false",
        "resume=false",
        "paths.results=" + str(tmp_path / "fresh"),
    )
    [fresh] = records(tmp_path / "fresh")
    assert fresh["metrics"] == by_seed[1]["metrics"] and fresh["history"] == by_seed[1]["history"]


# --- safe records --------------------------------------------------------------------------------------------------


def test_damaged_records_are_skipped_with_a_warning_naming_the_file_and_never_counted(tmp_path, caplog, capsys):
    good = {
        "schema": results.SCHEMA,
        "run_id": "a",
        "status": "completed",
        "error": None,
        "labels": {"mixer": "attention", "task": "mqar"},
        "overrides": [],
        "config": {},
        "seed": 0,
        "metrics": {"test/accuracy": 0.5, "val/accuracy": 0.5},
        "cost": {},
        "timestamps": {},
    }
    results.write_json_atomic(tmp_path / "ok" / results.RECORD, good)
    text = json.dumps({**good, "run_id": "b"})
    damaged = {
        "truncated": text[: len(text) // 2],  # a writer killed mid-file (not ours: ours rename atomically)
        "empty": "",
        "binary": "\x00\x01\x02garbage",
        "future": json.dumps({**good, "run_id": "c", "schema": results.SCHEMA + 1}),
        "no_status": json.dumps({k: v for k, v in {**good, "run_id": "d"}.items() if k != "status"}),
        "no_run_id": json.dumps({k: v for k, v in good.items() if k != "run_id"}),
        "a_list": "[1, 2, 3]",
        # valid JSON, wrong types where the board reads them
        "overrides_not_a_list": json.dumps({**good, "run_id": "e", "overrides": 5}),
        "override_not_a_string": json.dumps({**good, "run_id": "f", "overrides": [1]}),
        "label_a_list": json.dumps({**good, "run_id": "g", "labels": {"mixer": ["attention"]}}),
        "finished_a_number": json.dumps({**good, "run_id": "a", "timestamps": {"finished": 5}}),
        "seed_a_string": json.dumps({**good, "run_id": "h", "seed": "0"}),
    }
    for name, content in damaged.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / results.RECORD).write_text(content)
    assert [r["run_id"] for r in results.load_records([tmp_path])] == ["a"]  # only the good record is counted
    board_cli.main([str(tmp_path)])  # and the leaderboard does not crash on the others
    assert "0.500" in capsys.readouterr().out
    for name in damaged:
        assert f"{name}/{results.RECORD}" in caplog.text, name


# --- global state and parallel workers ------------------------------------------------------------------------------


def test_seed_everything_switches_deterministic_kernels_off_again():
    """A joblib worker that ran a deterministic job must not carry the switch into the next job."""
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        seed_everything(0, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.slow  # three processes start torch: ~15 s on 2 cores
@pytest.mark.skipif(
    not installed("hydra_plugins.hydra_joblib_launcher"),
    reason="hydra-joblib-launcher is not installed (pip install -e '.[parallel]')",
)
def test_four_jobs_on_two_joblib_workers_leave_four_intact_records_equal_to_serial_runs(tmp_path, compose):
    env = {**os.environ, "ARCHBENCH_RESULTS": str(tmp_path / "results"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-c",
        "from harness.run.cli import main; main()",
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "model/mixer=attention,gqa",
        "seed=0,1",
        *SMOKE,
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    [sweep] = [p.parent for p in (tmp_path / "results").rglob("multirun.yaml")]
    recs = records(sweep)
    assert len(recs) == 4 and len({r["run_id"] for r in recs}) == 4
    assert {r["status"] for r in recs} == {"completed"} and {r["cost"]["threads"] for r in recs} == {1}
    assert (sweep / "leaderboard.md").exists()
    assert not list(sweep.rglob("*.tmp"))

    # Reused workers reset everything per job: each record equals the same run done alone, serially, here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for r in recs:
            cfg = compose([*r["overrides"]])
            seed_everything(cfg.seed)
            task, model, train_cfg = build.build(cfg)
            out = cli.train(model, task.splits(cfg.seed), train_cfg, seed=cfg.seed)
            assert out["metrics"] == {k: v for k, v in r["metrics"].items() if k in out["metrics"]}, r["overrides"]
    finally:
        torch.set_num_threads(threads)


def test_the_slurm_preset_composes(compose):
    if not installed("hydra_plugins.hydra_submitit_launcher"):
        pytest.skip("hydra-submitit-launcher is not installed (pip install -e '.[slurm]')")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = hydra_compose(
            config_name="config",
            return_hydra_config=True,
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.max_num_timeout > 0 and launcher.gpus_per_node == 1
