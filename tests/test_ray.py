"""A live Ray cluster: a sweep through `hydra/launcher=ray` on a Ray head started here on 127.0.0.1 (`ray start
--head`, stopped after). Run with `pytest -m ray` (left out of the default run); skips where Ray or
hydra-ray-launcher is not installed (pip install -e '.[ray]')."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
pytest.importorskip(
    "hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher is not installed (pip install -e '.[ray]')"
)

from tests.sweeps import SMOKE, board, records  # noqa: E402

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["model/mixer=attention,gqa", "seed=0,1", *SMOKE]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """The address of a 2-CPU Ray head on 127.0.0.1. Its environment sets no OMP_NUM_THREADS: a job's threads are
    what Ray gives it. `ray start --block` in the foreground, so that stopping it stops the processes it started."""
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ARCHBENCH_RESULTS")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]),
        RAY_USAGE_STATS_ENABLED="0",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
    )
    temp = tmp_path_factory.mktemp("ray")
    log = open(temp / "ray-start.log", "w")
    t0 = time.perf_counter()
    head = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.perf_counter() + 120
        while head.poll() is None and "Ray runtime started" not in (temp / "ray-start.log").read_text():
            if time.perf_counter() > deadline:
                break
            time.sleep(0.5)
        if head.poll() is not None or "Ray runtime started" not in (temp / "ray-start.log").read_text():
            pytest.skip(f"ray start did not start a head: {(temp / 'ray-start.log').read_text()[-400:]}")
        print(f"\nRay head on 127.0.0.1:{port} up in {time.perf_counter() - t0:.1f} s")
        yield f"127.0.0.1:{port}", env
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()


def sweep_of(results_root: Path) -> Path:
    [sweep] = [p.parent for p in results_root.rglob("multirun.yaml")]
    return sweep


def archbench(env: dict, cwd: Path, *args: str) -> subprocess.Popen:
    cwd.mkdir(parents=True)
    return subprocess.Popen(
        [sys.executable, "-m", "harness.run.cli", "-m", *args, f"paths.results={cwd / 'results'}"],
        cwd=cwd,
        env=env,
        stdout=open(cwd / "archbench.log", "w"),
        stderr=subprocess.STDOUT,
    )


def test_a_four_job_sweep_on_ray_sets_seeds_and_threads_as_the_local_launcher(ray_head, tmp_path):
    address, env = ray_head
    t0 = time.perf_counter()
    on_ray = archbench(
        env,
        tmp_path / "ray",
        "hydra/launcher=ray",
        f"hydra.launcher.ray.init.address={address}",
        "resources.cpus=1",
        "resources.gpus=0",
        "resources.mem_gb=1",
        *SWEEP,
    )
    local = archbench({**env, "OMP_NUM_THREADS": "1"}, tmp_path / "local", *SWEEP)  # the basic launcher
    assert local.wait(timeout=600) == 0, (tmp_path / "local" / "archbench.log").read_text()[-3000:]
    assert on_ray.wait(timeout=600) == 0, (tmp_path / "ray" / "archbench.log").read_text()[-3000:]
    wall = time.perf_counter() - t0

    got, expected = records(sweep_of(tmp_path / "ray" / "results")), records(sweep_of(tmp_path / "local" / "results"))
    assert len(got) == 4 and got.keys() == expected.keys()
    assert sorted((r["labels"]["mixer"], r["seed"]) for r in got.values()) == [
        ("attention", 0),
        ("attention", 1),
        ("gqa", 0),
        ("gqa", 1),
    ]
    for rid, r in got.items():
        # one thread: Ray's OMP_NUM_THREADS for a task of resources.cpus=1, not the head's two CPUs
        assert r["status"] == "completed" and r["cost"]["threads"] == 1
        assert r["metrics"] == expected[rid]["metrics"] and r["history"] == expected[rid]["history"], r["overrides"]
    assert board(sweep_of(tmp_path / "ray" / "results")) == board(sweep_of(tmp_path / "local" / "results"))
    assert not list((tmp_path / "ray").rglob("*.tmp"))
    print(f"\n4 jobs on Ray, records and board bitwise equal to the basic launcher's: {wall:.0f} s")
