"""benchmarks/gpu_check.py, the one command for a lent GPU, on its CPU path (--tiny): the summary it writes, the
one line it stops with when a package is missing, a section stopped at its budget keeping what it measured; and the
packages a run does not need (wandb, datasets, pyarrow), which therefore need not travel to a GPU as wheels."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def check(out: Path, *args: str, prelude: str = "pass") -> subprocess.CompletedProcess:
    code = (
        f"import runpy, sys; {prelude}; sys.argv = [{str(SCRIPT)!r}, {str(out)!r}, *{list(args)!r}]; "
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900
    )


def assert_summary_shape(summary: dict, sections: list[str]) -> None:
    assert summary["schema"] == gpu_check.SCHEMA and summary["tiny"] is True
    assert list(summary["sections"]) == ["preflight", *sections]
    e = summary["env"]
    assert e["device"] == "cpu" and e["torch"] and e["python"] and "triton" in e and "fla" in e
    assert e["modules_imported"] > 20 and "attention" in e["mixers_composed"]
    for r in summary["sections"].values():
        assert set(r) >= {"status", "error", "seconds", "budget_seconds", "results"}
    assert set(summary["goals"]) == {"gpt2_mfu", "archbench_over_bare", "concurrent_8_over_1"}
    assert all(g["met"] is None for g in summary["goals"].values())  # no verdict from a CPU


@pytest.mark.slow  # five Python processes, torch.compile traced: not in README's `pytest`; CI runs it (.ci/run)
def test_tiny_check_writes_both_summaries(tmp_path):
    proc = check(tmp_path, "--tiny", "--sections", "gpt2,mqar")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert_summary_shape(summary, ["gpt2", "mqar"])
    gpt2, mqar = summary["sections"]["gpt2"], summary["sections"]["mqar"]
    assert gpt2["status"] == mqar["status"] == "ok"
    assert set(gpt2["results"]["runs"]) == {"bare/compiled", "archbench/compiled", "bare/eager", "archbench/eager"}
    assert all(r["tokens_per_second"] > 0 for r in gpt2["results"]["runs"].values())
    assert gpt2["results"]["archbench_over_bare"]["compiled"] > 0
    assert set(mqar["results"]["runs"]) == {"eager", "compiled", "cuda_graphs"}
    assert all(r["steps_per_second"] > 0 for r in mqar["results"]["runs"].values())
    md = (tmp_path / "summary.md").read_text()
    for heading in ("## Goals", "## Sections", "## GPT-2 small", "## MQAR"):
        assert heading in md
    assert not list(tmp_path.rglob("*.tmp"))  # every file written whole


@pytest.mark.slow
def test_every_section_runs_on_the_cpu_path(tmp_path):
    proc = check(tmp_path, "--tiny")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert_summary_shape(summary, list(gpu_check.SECTIONS[1:]))
    s = summary["sections"]
    assert all(r["status"] == "ok" for r in s.values()), {k: r["error"] for k, r in s.items()}
    counts = s["pytest_gpu"]["results"]["counts"]
    assert counts["skipped"] > 0 and counts["passed"] == counts["failed"] == counts["errors"] == 0  # no CUDA here
    assert [r["processes"] for r in s["concurrent"]["results"]["runs"].values()] == list(gpu_check.CONCURRENCY_TINY)
    assert s["deterministic"]["results"]["identical"] is True


@pytest.mark.parametrize("blocked", ["hydra"])
def test_a_missing_package_stops_the_check_with_one_line(tmp_path, blocked):
    proc = check(tmp_path, "--tiny", prelude=f"sys.modules[{blocked!r}] = None")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("gpu_check: stopped at the pre-flight: cannot import") and blocked in line
    assert "gpu_wheels.sh --install" in line
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["sections"]) == ["preflight"] and summary["sections"]["preflight"]["status"] == "failed"


def test_a_section_past_its_budget_is_stopped_and_keeps_what_it_measured(tmp_path):
    """The section (here a stand-in that hangs after one measurement, with a child of its own) is killed with what
    it started, shortly after its budget, and its first measurement survives."""
    section_file, child_pid = tmp_path / "section.json", tmp_path / "child.pid"
    hang = textwrap.dedent(f"""
        import json, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(child_pid)!r}, "w").write(str(child.pid))
        json.dump({{"status": "running", "results": {{"runs": {{"a": {{"status": "ok", "x": 1}},
                   "b": {{"status": "not reached"}}}}}}}}, open({str(section_file)!r}, "w"))
        time.sleep(60)
    """)
    t0 = time.perf_counter()
    r = gpu_check.launch([sys.executable, "-c", hang], section_file, tmp_path / "log", 1.0, env())
    assert time.perf_counter() - t0 < 1.0 + gpu_check.GRACE + 6
    assert r["status"] == "timeout" and "budget" in r["error"]
    assert r["results"]["runs"] == {"a": {"status": "ok", "x": 1}, "b": {"status": "not reached (budget)"}}
    assert not alive(int(child_pid.read_text()))  # nothing it started is left holding the device


def alive(pid: int) -> bool:
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.1)
    return True


def test_pytest_counts_come_from_its_junit_xml(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text("""<testsuites><testsuite name="pytest" tests="4">
      <testcase classname="tests.test_gpu" name="test_a"/>
      <testcase classname="tests.test_gpu" name="test_b"><failure message="assert 1 == 2">trace</failure></testcase>
      <testcase classname="tests.test_gpu" name="test_c"><skipped message="needs a CUDA device"/></testcase>
      <testcase classname="tests.test_mfu" name="test_d"><error message="fixture broke"/></testcase>
      <testcase classname="" name="tests.test_faults"><error message="collection failure"/></testcase>
    </testsuite></testsuites>""")
    counts, failures = gpu_check.parse_junit(xml)
    assert counts == {"passed": 1, "failed": 1, "errors": 2, "skipped": 1}
    assert failures == [
        {"test": "tests/test_gpu.py::test_b", "message": "assert 1 == 2"},
        {"test": "tests/test_mfu.py::test_d", "message": "fixture broke"},
        {"test": "tests/test_faults.py (collection)", "message": "collection failure"},
    ]
    verbose = "tests/test_gpu.py::test_a PASSED [ 50%]\ntests/test_gpu.py::test_b[x] FAILED [100%]\n"
    assert gpu_check.parse_verbose(verbose) == (
        {"passed": 1, "failed": 1, "errors": 0, "skipped": 0},
        [{"test": "tests/test_gpu.py::test_b[x]", "message": ""}],
    )


def test_a_run_needs_neither_wandb_nor_datasets_nor_pyarrow():
    """The CLI imported, a model and task built from the config, the trainer run: none of the three is imported,
    so none of them has to travel to a GPU machine (docs/gpu.md)."""
    code = textwrap.dedent("""
        import sys
        from hydra import compose, initialize_config_module
        import harness.run.build
        from harness.run.train import train
        with initialize_config_module(config_module="conf", version_base="1.3"):
            cfg = compose(config_name="config", overrides=["trainer=smoke", "task.num_train=64", "task.num_val=16",
                          "task.num_test=16", "model.d_model=16"])
        task, model, train_cfg = harness.run.build.build(cfg)
        train(model, task.splits(0), train_cfg, seed=0)
        print(sorted(m for m in ("wandb", "datasets", "pyarrow") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
