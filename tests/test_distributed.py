"""Data-parallel training (harness/run/distributed.py): 2 gloo processes on this CPU train what 1 process trains with
the same global batch, within fp32 rounding; gradient accumulation likewise; a SIGKILL of a torchrun run resumes to
the metrics of an uninterrupted one; a global batch the processes cannot share is refused before anything runs."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from harness.run import distributed
from harness.run.batches import Batches
from harness.run.checkpoint import Checkpointer
from harness.run.train import TrainConfig, seed_everything, train
from tasks.base import IGNORE, Split
from tasks.lm_shards import TokenWindows
from tests.test_resume import records
from tests.test_weights import rerun_test_split

TINY = ["model/ffn=none", "model.d_model=32", "model.n_layers=1", "task.num_train=256", "task.num_val=32"]
SETTINGS = {"max_steps": 12, "eval_every": 3, "batch_size": 16, "warmup_steps": 2, "progress": False}
TOLERANCE = {"rel": 1e-5, "abs": 1e-6}  # fp32: the sums over a batch are added in another order


def fit(overrides: list[str], settings: dict, rows: list | None = None, checkpoint: Checkpointer | None = None) -> dict:
    from hydra import compose, initialize_config_module

    import harness  # noqa: F401  (the config resolvers)

    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    seed_everything(0)
    model, task = instantiate(cfg.model), instantiate(cfg.task)
    splits = task.splits(0)
    if not splits["train"].random_windows:  # MQAR scores 4 targets in every row: unscore some, so that rows, ranks
        targets = splits["train"].targets  # and micro batches score different counts
        targets[torch.rand(targets.shape, generator=torch.Generator().manual_seed(1)) < 0.5] = IGNORE
    log_fn = None if rows is None else lambda row, step: rows.append(row)
    return train(model, splits, TrainConfig(**settings), seed=0, log_fn=log_fn, checkpoint=checkpoint)


def _worker(
    rank: int, world: int, port: int, overrides: list[str], settings: dict, out: str, paths: tuple | None
) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank)})
    os.environ.update({"WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    distributed.init("cpu")
    try:
        rows = []
        result = fit(overrides, settings, rows, paths and Checkpointer(Path(paths[0]), paths[1]))
        if rank == 0:
            Path(out).write_text(json.dumps({"history": result["history"], "metrics": result["metrics"], "rows": rows}))
    finally:
        distributed.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(world: int, overrides: list[str], settings: dict, tmp_path: Path, checkpoint: tuple | None = None) -> dict:
    """Rank 0's result of `fit` in `world` forked processes; `checkpoint`: (path, resume_from) of its Checkpointer."""
    out = tmp_path / "rank0.json"
    args = (world, free_port(), overrides, settings, str(out), checkpoint)
    torch.multiprocessing.start_processes(_worker, args, nprocs=world, start_method="fork")  # torch loaded once
    return json.loads(out.read_text())


def assert_same_curve(got: dict, expected: dict) -> float:
    """Equal steps and lr exactly, losses and accuracies within fp32 tolerance; returns the largest loss difference."""
    assert [r["step"] for r in got["history"]] == [r["step"] for r in expected["history"]]
    worst = 0.0
    for a, b in zip(got["history"], expected["history"], strict=True):
        assert a["lr"] == b["lr"] and a["tokens"] == b["tokens"]
        for key in ("train/loss", "val/loss", "val/accuracy"):
            assert a[key] == pytest.approx(b[key], **TOLERANCE), (a["step"], key)
            worst = max(worst, abs(a[key] - b[key]))
    for key, value in expected["metrics"].items():
        exact = value is None or key in ("steps", "best/step", "steps_to_target")
        assert got["metrics"][key] == (value if exact else pytest.approx(value, **TOLERANCE)), key
    return worst


LM = ["task=lm_text", "task.seq_len=32", "task.num_val=8", "task.num_test=8", *TINY[:3]]


@pytest.mark.parametrize("task", ["mqar", "lm_shards"])
def test_two_processes_of_batch_b_train_as_one_process_of_batch_2b(tmp_path, task):
    """MQAR's rows score different numbers of targets (fit): the loss is divided by the global batch's count. Token
    shards on disk: each rank reads its own windows of the step's global batch."""
    overrides = TINY if task == "mqar" else [*LM, f"task.shards={tmp_path / 'shards'}"]
    one = fit(overrides, SETTINGS, rows := [])  # prepares the byte shards the two processes then read
    two = spawn(2, overrides, SETTINGS, tmp_path)
    assert_same_curve(two, one)
    assert one["history"][-1]["train/loss"] < one["history"][0]["train/loss"]  # it trained: the curve means something
    # the dashboard's rows: interval means of the loss (reduced over ranks) and of the gradient norm, equal too
    for a, b in zip(two["rows"], rows, strict=True):
        for key in ("train/loss_mean", "grad_norm"):
            assert a[key] == pytest.approx(b[key], **TOLERANCE)


FSDP = {**SETTINGS, "parallel": "fsdp", "micro_batch_size": 4}  # 2 micro batches per rank: gradients reduced once


def test_two_fsdp_processes_of_batch_b_train_as_one_process_of_batch_2b(tmp_path):
    """FSDP2 (trainer.parallel=fsdp): each rank holds a shard of every parameter; the curve is a plain run's."""
    one = fit(TINY, SETTINGS)
    assert_same_curve(spawn(2, TINY, FSDP, tmp_path), one)


def test_an_fsdp_checkpoint_is_one_whole_file_that_resumes_to_the_uninterrupted_metrics(tmp_path, compose):
    """Rank 0 writes the whole (unsharded) model and optimizer, keyed as a plain run keys them: an FSDP run resumed
    from its step-6 checkpoint finishes bitwise as the run that wrote it, and a plain run resumes it too."""
    first = tmp_path / "first" / "checkpoint.pt"
    settings = {**FSDP, "checkpoint_every": 6}
    uninterrupted = spawn(2, TINY, settings, tmp_path, (str(first), None))
    state = torch.load(first, weights_only=True)
    assert state["step"] == 6
    plain = instantiate(compose(TINY).model)
    assert {k: v.shape for k, v in state["model"].items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert all(isinstance(k, int) for k in state["optimizer"]["state"])
    resumed = spawn(2, TINY, settings, tmp_path, (str(tmp_path / "again" / "checkpoint.pt"), str(first)))
    assert resumed["metrics"] == uninterrupted["metrics"] and resumed["history"] == uninterrupted["history"]
    alone = fit(TINY, settings, checkpoint=Checkpointer(tmp_path / "alone.pt", first))
    assert_same_curve(alone, uninterrupted)


@pytest.mark.parametrize("micro", [1, 4, 8])
def test_gradient_accumulation_over_micro_batches_trains_as_the_whole_batch(compose, micro):
    whole = fit(TINY, SETTINGS)
    accumulated = fit(TINY, {**SETTINGS, "micro_batch_size": micro})
    assert_same_curve(accumulated, whole)


def test_the_default_micro_batch_is_bitwise_the_whole_batch():
    assert fit(TINY, SETTINGS)["history"] == fit(TINY, {**SETTINGS, "micro_batch_size": 16})["history"]


def in_memory(tmp_path: Path) -> Split:
    inputs = torch.arange(40 * 3).reshape(40, 3)
    return Split(inputs, inputs + 1)


def token_shard(tmp_path: Path) -> TokenWindows:
    """A train shard on disk (tasks/lm_shards.py): windows at offsets drawn from (seed, step), read per step."""
    np.arange(500, dtype=np.uint16).tofile(tmp_path / "train.bin")
    return TokenWindows(tmp_path / "train.bin", "uint16", seq_len=3)


@pytest.mark.parametrize("make", [in_memory, token_shard])
@pytest.mark.parametrize(("world", "micro"), [(2, 8), (2, 4), (4, 2), (4, 4)])
def test_the_ranks_micro_batches_together_are_the_global_batch_of_one_process(
    tmp_path, monkeypatch, make, world, micro
):
    split = make(tmp_path)
    rows_read = []
    if split.random_windows:  # count the windows read from the file
        window = TokenWindows.window
        monkeypatch.setattr(
            TokenWindows, "window", lambda self, start: (rows_read.append(start), window(self, start))[1]
        )
    for step in (0, 1, 2, 5):  # across epochs too (2 steps of 16 rows per epoch in memory)
        [expected] = Batches(split, 7, 16, 0, 1, 16).at(step)
        for rank in range(world):
            rows_read.clear()
            parts = Batches(split, 7, 16, rank, world, micro).at(step)
            assert len(parts) == 16 // world // micro
            assert len(rows_read) == (16 // world if split.random_windows else 0)  # only its own windows
            for got, want in zip(zip(*parts, strict=True), expected, strict=True):
                share = 16 // world
                assert torch.equal(torch.cat(got), want[rank * share : (rank + 1) * share])


@pytest.mark.parametrize(
    ("batch", "world", "micro", "why"),
    [
        (15, 2, None, "not divisible by the number of processes (2)"),
        (16, 2, 3, "processes x trainer.micro_batch_size (2 x 3)"),
        (16, 4, 8, "(4 x 8)"),
    ],
)
def test_a_global_batch_the_processes_cannot_share_is_refused(batch, world, micro, why):
    with pytest.raises(ValueError, match=rf"^trainer.batch_size={batch} \(the global batch\) .*{re.escape(why)}$"):
        TrainConfig(batch_size=batch, micro_batch_size=micro).check(64, world)
    TrainConfig(batch_size=16, micro_batch_size=micro if micro != 3 else 2).check(64, 2)  # these divide


# --- as a user meets it: torchrun, kill -9 and the same command again ----------------------------------------------

BASE = [*TINY, "trainer=smoke", "task.num_test=32", "trainer.batch_size=16", "trainer.micro_batch_size=4"]
RUN = [*BASE, "trainer.max_steps=40", "trainer.eval_every=10", "trainer.checkpoint_every=5"]
SLOWED = (  # each training step sleeps 50 ms (numerics untouched), so that the kill lands mid-run
    "import time, harness.run.train as t; f = t.scored_loss; "
    "t.scored_loss = lambda *a: (time.sleep(0.05) if a[0].training else None, f(*a))[1]\n"
)


def torchrun(results: Path, *args: str, slowed: bool = False, nproc: int = 2) -> subprocess.Popen:
    """`torchrun --standalone --nproc_per_node=2 -m harness.run.cli ARGS` (docs/distributed.md), as a script that
    first slows each step where `slowed`."""
    target = ["-m", "harness.run.cli"]
    if slowed:
        script = results.parent / f"{results.name}_cli.py"
        script.write_text(SLOWED + "from harness.run.cli import main\nmain()\n")
        target = [str(script)]
    env = {**os.environ, "ARCHBENCH_RESULTS": str(results), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.Popen(
        [*command, *target, *args],
        cwd=results.parent,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def kill_tree(pid: int) -> None:
    """SIGKILL to `pid` and all its descendants (torchrun starts each worker in a session of its own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grown = {pid}, True
    while grown:
        more = {p for p, parent in parents.items() if parent in tree} - tree
        tree, grown = tree | more, bool(more)
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def saved_step(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["step"]
    except (OSError, RuntimeError):  # superseded while read
        return -1


@pytest.mark.slow  # three torchrun launches of 2 processes each: ~20 s on 2 cores
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_sigkill_of_a_torchrun_run_then_the_same_command_resumes_to_identical_metrics(tmp_path, parallel):
    run = [*RUN, f"trainer.parallel={parallel}"]
    reference = torchrun(tmp_path / "reference", *run)
    results = tmp_path / "results"
    doomed = torchrun(results, *run, slowed=True)
    deadline = time.monotonic() + 180
    rng = np.random.default_rng()
    wanted = int(rng.integers(1, 7)) * 5  # a random checkpoint (steps 5 .. 30) to be past when the kill lands
    while not any(saved_step(p) >= wanted for p in results.rglob("checkpoint.pt")):
        assert doomed.poll() is None, doomed.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    kill_tree(doomed.pid)  # as a lost node: the launcher and every worker at once
    doomed.wait()
    assert records(results) == []

    again = torchrun(results, *run)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "resuming from step" in out, out
    assert reference.wait(timeout=300) == 0, reference.communicate()[0]
    [expected], [resumed] = records(tmp_path / "reference"), records(results)
    assert resumed["cost"]["resumed_from_step"] >= wanted and resumed["env"]["world_size"] == 2
    assert resumed["run_id"] == expected["run_id"]
    assert resumed["metrics"] == expected["metrics"] and resumed["history"] == expected["history"]
    assert not list(results.rglob("checkpoint.pt"))


@pytest.mark.slow  # torchrun and a plain run side by side: ~17 s on 2 cores (the fork test above covers train())
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_writes_one_record_with_the_metrics_of_one_process(tmp_path, compose, parallel):
    """The CLI under torchrun (2 processes, 2 micro batches each) against the CLI in one process: one record, its
    run id the same (world size, micro batch and ddp or fsdp are how, not what), its numbers within fp32 rounding,
    its saved weights the whole model's (under FSDP, gathered from the shards)."""
    args = [*BASE, "trainer.max_steps=10", "trainer.eval_every=5", "trainer.checkpoint_every=0"]
    args.append(f"trainer.parallel={parallel}")
    two = torchrun(tmp_path / "two", *args)
    env = {**os.environ, "ARCHBENCH_RESULTS": str(tmp_path / "one"), "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "harness.run.cli", *args],
        env=env,
        capture_output=True,
        text=True,
    )
    out, _ = two.communicate(timeout=300)
    assert two.returncode == 0 and one.returncode == 0, out + one.stderr
    [got], [expected] = records(tmp_path / "two"), records(tmp_path / "one")  # one record: rank 0's
    assert got["run_id"] == expected["run_id"] and got["env"]["world_size"] == 2 and expected["env"]["world_size"] == 1
    assert_same_curve(got, expected)
    [weights] = (tmp_path / "two").rglob("model.safetensors")  # loaded strictly: every parameter, whole
    assert rerun_test_split(compose, got, weights)["loss"] == pytest.approx(got["metrics"]["test/loss"], rel=1e-6)


def test_a_batch_the_processes_cannot_share_stops_before_training_with_one_line(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "ARCHBENCH_RESULTS": str(results), "WORLD_SIZE": "2", "RANK": "0", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "harness.run.cli", *RUN, "trainer.batch_size=18"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("archbench: error: trainer.batch_size=18 (the global batch) is not a multiple")
    assert records(results) == []


# --- SLURM: the preset and the environment it gives each task -------------------------------------------------------


def test_slurm_tasks_get_torch_distributed_variables_from_submitit(monkeypatch):
    pytest.importorskip("submitit")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    slurm = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1"}
    slurm |= {"SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert not distributed.from_slurm()  # not a submitit job: nothing to map
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert distributed.from_slurm()
    env = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")}
    assert env == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "gpu07"}
    assert distributed.size_from_env() == 4 and distributed.rank_from_env() == 3 and int(os.environ["MASTER_PORT"])
    assert not distributed.from_slurm()  # set once: a launcher's (torchrun's) variables are never overwritten


def test_the_slurm_ddp_preset_asks_for_one_task_per_gpu():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(
            config_name="config",
            return_hydra_config=True,
            overrides=["hydra/launcher=slurm_ddp", "resources.gpus=4", "hydra.launcher.nodes=2"],
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.max_num_timeout > 0
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4 and launcher.nodes == 2


def test_the_memory_check_counts_the_rows_a_process_runs_at_once(compose, monkeypatch):
    """A global batch too large for the memory trains in micro batches that fit: refused without them only."""
    from harness.run import build

    model, task = instantiate(compose(TINY).model), instantiate(compose(TINY).task)
    whole, micro = TrainConfig(batch_size=64), TrainConfig(batch_size=64, micro_batch_size=8)
    weights, residual = build.training_bytes(model, task, whole)
    assert build.training_bytes(model, task, micro) == (weights, residual // 8)
    monkeypatch.setattr(build, "available_memory", lambda device: (weights + residual // 2, "of a pretend machine"))
    build.check_fits(model, task, micro)
    with pytest.raises(build.ConfigError, match="trainer.batch_size=64: training needs"):
        build.check_fits(model, task, whole)
    monkeypatch.setenv("WORLD_SIZE", "16")  # 4 rows per process
    build.check_fits(model, task, whole)
    monkeypatch.setenv("WORLD_SIZE", "2")
    have = weights // 2 + residual // 2
    monkeypatch.setattr(build, "available_memory", lambda device: (have, "of a pretend machine"))
    with pytest.raises(build.ConfigError, match="AdamW's two moments = "):  # under DDP each process holds them all
        build.check_fits(model, task, whole)
    build.check_fits(model, task, TrainConfig(batch_size=64, parallel="fsdp"))  # under FSDP, half of them
    monkeypatch.setattr(build, "available_memory", lambda device: (weights // 4, "of a pretend machine"))
    with pytest.raises(build.ConfigError, match="AdamW's two moments / 2 shards = "):
        build.check_fits(model, task, TrainConfig(batch_size=64, parallel="fsdp"))
