"""A live SLURM cluster: sweeps through `hydra/launcher=slurm` on a single-node cluster that scripts/slurm-local.sh
starts on this machine (Debian's slurm-wlm and munge, as root), and the four things a cluster does to a sweep: runs
its jobs side by side, requeues one mid-training (preemption), stops one at its time limit, cancels one.

Run with `pytest -m slurm` (left out of the default run). Skips, with the reason, where the cluster cannot start: not
root, the packages or hydra-submitit-launcher not installed, a daemon that fails. The first test, that the cluster
presets ask for `resources:`, needs no cluster and runs by default."""

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from harness.record import results
from harness.record.keys import board_role
from harness.run import build, cli
from harness.run.train import seed_everything
from tests.sweeps import SMOKE, board, records

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"

# one CPU, no GPU and 1 GB per job: the node takes two jobs at once
ON_SLURM = [
    "hydra/launcher=slurm",
    "resources.gpus=0",
    "resources.cpus=1",
    "resources.mem_gb=1",
    "resources.time_min=5",
]
LONG = [*SMOKE, "trainer.max_steps=600", "trainer.eval_every=300", "trainer.checkpoint_every=20"]
# Each training step of a job sleeps (launch's `slow` seconds; numerics untouched, as in test_resume.py), so that a
# requeue, a cancel or a time limit lands mid-run on a fast machine too: harness.run.train.scored_loss is wrapped when
# it is first imported.
SLOW_STEPS = """
import importlib.abc, importlib.util, os, sys, time

SLEEP = float(os.environ.get("SLOW_STEP_S", "0.02"))

class _Slow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "harness.run.train":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            loss = module.scored_loss
            module.scored_loss = lambda *a: (time.sleep(SLEEP) if a[0].training else None, loss(*a))[1]

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Slow())
"""


@pytest.mark.filterwarnings(r"ignore:\s*'hydra/launcher/ray' is validated")  # as harness/__init__.py, undone here
@pytest.mark.parametrize("preset", ["slurm", "ray"])
def test_the_cluster_presets_ask_for_what_resources_says_and_run_id_ignores_it(preset, compose):
    plugin = {"slurm": "hydra_submitit_launcher", "ray": "hydra_ray_launcher"}[preset]
    if importlib.util.find_spec(f"hydra_plugins.{plugin}") is None:
        pytest.skip(f"{plugin} is not installed (pip install -e '.[{preset}]')")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    resources = ["resources.gpus=2", "resources.cpus=3", "resources.mem_gb=5", "resources.time_min=7"]
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = hydra_compose(
            config_name="config", return_hydra_config=True, overrides=[f"hydra/launcher={preset}", *resources]
        )
    launcher = cfg.hydra.launcher
    if preset == "slurm":
        assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.mem_gb, launcher.timeout_min) == (2, 3, 5, 7)
    else:
        assert dict(launcher.ray.remote) == {"num_cpus": 3, "num_gpus": 2, "memory": 5 * 2**30, "max_retries": 0}
    plain = OmegaConf.to_container(compose(), resolve=True)
    asked = OmegaConf.to_container(compose(resources), resolve=True)
    assert plain["resources"] != asked["resources"] and results.run_id(plain) == results.run_id(asked)
    # nor does the board tell runs apart by it (a cell rerun with more memory is the same cell)
    assert {board_role(o.split("=")[0]) for o in resources} == {"none"}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The environment in which sbatch, squeue and archbench reach the local cluster; stopped after the module."""
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher is not installed (pip install -e '.[slurm]')")
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (scripts/slurm-local.sh runs the daemons as root)")
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sinfo", "sbatch") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found: apt-get install -y slurm-wlm munge")
    where = tmp_path_factory.mktemp("slurm")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "ARCHBENCH_"))}
    env["SLURM_LOCAL_DIR"] = str(where)
    t0 = time.perf_counter()
    started = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=240)
    if started.returncode != 0:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        pytest.skip(f"the local SLURM cluster did not start: {started.stderr.strip()[-400:]}")
    print(f"\nlocal SLURM cluster up in {time.perf_counter() - t0:.1f} s")
    hooks = where / "hooks"
    hooks.mkdir()
    (hooks / "slow_steps.py").write_text(SLOW_STEPS)
    env.update(
        SLURM_CONF=str(where / "slurm.conf"),
        PATH=f"{where / 'bin'}:{env['PATH']}",
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]),
        OMP_NUM_THREADS="1",
        HYDRA_FULL_ERROR="1",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
    )
    env["SLOW_HOOKS"] = str(hooks)
    try:
        yield env
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


def launch(env: dict, root: Path, *args: str, slow: float = 0, log: str = "archbench.log") -> subprocess.Popen:
    """`archbench -m ARGS paths.results=ROOT` in the background, its output in ROOT/../LOG."""
    root.mkdir(parents=True, exist_ok=True)
    env = dict(env)
    if slow:  # sitecustomize is imported by every python, the jobs' included, that finds it on the path
        (root.parent / "hooks").mkdir(exist_ok=True)
        (root.parent / "hooks" / "sitecustomize.py").write_text("import slow_steps  # noqa: F401\n")
        env["PYTHONPATH"] = os.pathsep.join([str(root.parent / "hooks"), env.pop("SLOW_HOOKS"), env["PYTHONPATH"]])
        env["SLOW_STEP_S"] = str(slow)
    out = open(root.parent / log, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "harness.run.cli", "-m", *args, f"paths.results={root}"],
        cwd=root.parent,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 480) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def wait_for(what, timeout: float = 180, poll: float = 0.2):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if value := what():
            return value
        time.sleep(poll)
    raise TimeoutError(f"waited {timeout} s")


def squeue(env: dict, *args: str) -> str:
    return subprocess.run(["squeue", "-h", *args], env=env, capture_output=True, text=True, check=True).stdout


def running_jobs(env: dict) -> list[str]:
    return squeue(env, "-t", "RUNNING", "-o", "%i").split()


def job_field(env: dict, job: str, field: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv).get(field, "")


def sweeps(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("multirun.yaml"))


def in_progress(root: Path) -> list[Path]:
    return sorted((root / ".in_progress").glob("*"))


def uninterrupted(compose, record: dict) -> dict:
    """The metrics of the record's run trained here, in one go, on one thread: what every resumed run must equal."""
    cfg = compose(record["overrides"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seed_everything(cfg.seed, deterministic=cfg.trainer.deterministic)
        task, model, train_cfg = build.build(cfg)
        out = cli.train(model, task.splits(cfg.seed), train_cfg, seed=cfg.seed)
    finally:
        torch.set_num_threads(threads)
    out["metrics"].update(task.derived_metrics(out["metrics"]))
    return out["metrics"]


def intact(root: Path) -> None:
    """Nothing written half anywhere: no temporary file left, every record parses."""
    assert not list(root.rglob("*.tmp")) and not list(root.rglob(".*.tmp"))
    for p in root.rglob(results.RECORD):
        assert results.load_record(p) is not None, p


# --- the tests -----------------------------------------------------------------------------------------------------


@pytest.mark.slurm
def test_a_four_job_sweep_on_slurm_ends_as_on_the_local_launcher(slurm, tmp_path):
    sweep = ["model/mixer=attention,gqa", "seed=0,1", *SMOKE]
    t0 = time.perf_counter()
    on_slurm = launch(slurm, tmp_path / "slurm" / "results", *ON_SLURM, *sweep)
    seen = wait_for(lambda: squeue(slurm, "-o", "%i %T"), timeout=120)  # submitted as one array of four
    local = launch(slurm, tmp_path / "local" / "results", *sweep)  # the basic launcher, one job after another
    assert finish(local) == 0, (tmp_path / "local" / "archbench.log").read_text()[-3000:]
    assert finish(on_slurm) == 0, (tmp_path / "slurm" / "archbench.log").read_text()[-3000:]
    print(f"\nsqueue while it ran:\n{seen}4 jobs on SLURM in {time.perf_counter() - t0:.0f} s")

    [slurm_sweep], [local_sweep] = sweeps(tmp_path / "slurm" / "results"), sweeps(tmp_path / "local" / "results")
    got, expected = records(slurm_sweep), records(local_sweep)
    assert len(got) == 4 and got.keys() == expected.keys()  # the same four runs (run_id leaves resources out)
    for rid, r in got.items():
        assert r["status"] == "completed" and r["cost"]["threads"] == 1
        assert r["metrics"] == expected[rid]["metrics"], r["overrides"]  # bitwise: floats through JSON exactly
        assert r["history"] == expected[rid]["history"]
    assert board(slurm_sweep) == board(local_sweep)
    assert (slurm_sweep / "leaderboard.md").exists() and not in_progress(tmp_path / "slurm" / "results")
    intact(tmp_path / "slurm" / "results")


@pytest.mark.slurm
def test_a_job_requeued_mid_training_resumes_from_its_checkpoint_bitwise(slurm, tmp_path, compose):
    root = tmp_path / "results"
    t0 = time.perf_counter()
    proc = launch(slurm, root, *ON_SLURM, *LONG, slow=0.02)
    wait_for(lambda: in_progress(root))  # its first checkpoint is written: mid-training
    [job] = running_jobs(slurm)
    subprocess.run(["scontrol", "requeue", job], env=slurm, check=True)  # what preemption does
    assert finish(proc) == 0, (tmp_path / "archbench.log").read_text()[-3000:]
    wall = time.perf_counter() - t0

    [rec] = records(root).values()
    resumed = rec["cost"]["resumed_from_step"]
    assert rec["status"] == "completed" and int(job_field(slurm, job, "Restarts")) == 1
    assert resumed is not None and 0 < resumed < 600 and resumed % 20 == 0
    assert rec["metrics"] == uninterrupted(compose, rec)
    assert not in_progress(root) and not list(root.rglob("checkpoint.pt"))
    intact(root)
    print(
        f"\njob {job} requeued by scontrol, resumed from step {resumed} of 600, metrics bitwise equal to an "
        f"uninterrupted run; {wall:.0f} s"
    )


@pytest.mark.slurm
def test_a_job_at_its_time_limit_is_requeued_by_submitit_and_resumes(slurm, tmp_path):
    # A 1-minute limit; slurmctld checks limits every 30 s and sends SIGUSR1 at the first check within
    # signal_delay_s + 30 s of the limit: 25-55 s into the job. Submitit requeues it and exits; 1,000 steps of 60 ms
    # or more need two attempts or more.
    root = tmp_path / "results"
    limits = ["resources.time_min=1", "hydra.launcher.signal_delay_s=5", "hydra.launcher.max_num_timeout=8"]
    t0 = time.perf_counter()
    proc = launch(
        slurm,
        root,
        *ON_SLURM,
        *limits,
        *SMOKE,
        "trainer.max_steps=1000",
        "trainer.eval_every=500",
        "trainer.checkpoint_every=25",
        slow=0.06,
    )
    [job] = wait_for(lambda: running_jobs(slurm))
    assert finish(proc, timeout=540) == 0, (tmp_path / "archbench.log").read_text()[-3000:]
    wall = time.perf_counter() - t0

    [rec] = records(root).values()
    [log] = root.rglob(f"{job}_0_log.out")
    text = log.read_text()
    restarts = int(job_field(slurm, job, "Restarts"))
    assert rec["status"] == "completed" and restarts >= 1
    assert "Job has timed out" in text and f"Requeued job {job}" in text
    assert rec["cost"]["resumed_from_step"] is not None and rec["cost"]["resumed_from_step"] > 0
    intact(root)
    print(
        f"\njob {job} hit its 1-minute limit and was requeued {restarts} time(s); the last attempt resumed from "
        f"step {rec['cost']['resumed_from_step']} of 1000; {wall:.0f} s"
    )


@pytest.mark.slurm
def test_a_cancelled_job_leaves_no_record_and_rerunning_the_sweep_resumes_it(slurm, tmp_path, compose):
    root = tmp_path / "results"
    t0 = time.perf_counter()
    proc = launch(slurm, root, *ON_SLURM, *LONG, slow=0.02)
    [marker] = wait_for(lambda: in_progress(root))
    [job] = running_jobs(slurm)
    subprocess.run(["scancel", job], env=slurm, check=True)
    assert finish(proc) != 0  # the sweep reports the job it lost
    assert not list(root.rglob(results.RECORD)) and not list(root.rglob(".completed/*"))  # no record, not half one
    intact(root)
    checkpoint = Path(marker.read_text())
    assert checkpoint.exists() and torch.load(checkpoint, weights_only=True)["step"] % 20 == 0

    again = launch(slurm, root, *ON_SLURM, *LONG, slow=0.02, log="rerun.log")  # the same command again
    assert finish(again) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    wall = time.perf_counter() - t0
    first, second = sweeps(root)
    [rec] = records(second).values()
    assert not records(first)
    resumed = rec["cost"]["resumed_from_step"]
    assert rec["status"] == "completed" and resumed is not None and resumed > 0
    assert rec["metrics"] == uninterrupted(compose, rec)
    assert not in_progress(root) and not checkpoint.exists()
    intact(root)
    print(
        f"\njob {job} cancelled; the rerun resumed from step {resumed} of 600, metrics bitwise equal to an "
        f"uninterrupted run; {wall:.0f} s"
    )
