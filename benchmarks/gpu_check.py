"""One command for a lent GPU: everything the CUDA path claims, checked and timed in under five minutes, into
OUT/summary.json and OUT/summary.md (docs/gpu.md).

    python benchmarks/gpu_check.py OUT                      # on a CUDA machine
    python benchmarks/gpu_check.py OUT --tiny               # the same code paths on a CPU, tiny sizes, in seconds
    python benchmarks/gpu_check.py OUT --sections gpt2,mqar # some sections only (pre-flight always runs)

Sections, in order, each with a time budget (seconds; what a section leaves unused goes to the next ones):
  preflight      device, torch/triton/fla versions, every module of harness/ models/ tasks/ imported, every mixer
                 composed through Hydra's compose API and built on the meta device. Stops everything on a failure.
  gpt2           GPT-2 small (12 layers, width 768, sequence 1,024, vocab 50,304): the archbench trainer and the bare
                 nanoGPT-style loop of benchmarks/gpu.py, compiled and eager: tokens/s, MFU, archbench/bare.
  mqar           Zoology's MQAR model (width 64, 2 layers, length 64, vocab 8,192, batch 512) in steps/s: eager,
                 compiled, CUDA graphs (compile_mode=reduce-overhead).
  concurrent     the same MQAR job as 1, 4 and 8 processes at once on the one GPU: aggregate steps/s.
  deterministic  one short `archbench` run twice with trainer.deterministic=true: identical metrics and curves.
  pytest_gpu     `pytest -m gpu` in a subprocess: its pass/fail/skip counts and the failing tests. Last, since its
                 time is the least predictable: it gets what the others left unused.

Every section but the pre-flight runs in its own process (a CUDA error or a hang costs that section only), writes
what it measured as it goes, and is stopped at its budget; the summary is rewritten after every section, so a lease
that ends early still leaves what was measured. Exit code: 0 all sections ok, 1 some failed or ran out of time,
2 stopped at the pre-flight. Only the standard library is imported before the pre-flight, so that a missing package
is reported in one line rather than as a traceback.
"""

import argparse
import contextlib
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / ".gpu-site"  # where `benchmarks/gpu_wheels.sh --install` puts the carried wheels on a GPU machine
# archbench from this tree (installed or not), benchmarks/gpu.py, and the carried packages where they were installed
PATHS = [str(ROOT / "benchmarks"), str(ROOT), *([str(SITE)] if SITE.is_dir() else [])]
sys.path[:0] = [p for p in PATHS if p not in sys.path]

SCHEMA = "archbench-gpu-check/1"
# The measurements first, whose cost is known; pytest last, whose cost is not: it gets whatever the others left.
SECTIONS = ("preflight", "gpt2", "mqar", "concurrent", "deterministic", "pytest_gpu")
# Seconds per section on a GPU: 295 in all, so that the whole check fits in five minutes even if every section runs
# out of time. --tiny allows TINY_SLOWER times as long: a shared CI CPU starts a Python process far more slowly.
BUDGETS = {"preflight": 20, "gpt2": 75, "mqar": 45, "concurrent": 45, "deterministic": 20, "pytest_gpu": 90}
TINY_SLOWER = 4
GRACE = 3  # seconds past its deadline before a section is killed (it saves after every measurement)
CONCURRENCY, CONCURRENCY_TINY = (1, 4, 8), (1, 2)
WHEELS_HINT = (
    "install the packages that travel as wheels first (docs/gpu.md): benchmarks/gpu_wheels.sh --install "
    "(from wheels/ into .gpu-site/, which this script then uses)"
)


class PreflightError(RuntimeError):
    """Something the check needs is missing: reported in one line, and nothing else runs."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: Path, text: str) -> None:
    """harness's atomic write (temporary file, fsync, rename, a plain file's mode), imported when first needed."""
    from harness.record.results import write_text_atomic

    write_text_atomic(path, text)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:400]}" if text else type(e).__name__


# --- pre-flight (in this process) -------------------------------------------------------------------------------


def version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# archbench's modules that need an optional extra (pyproject.toml), with the package each needs: the pre-flight
# imports every other module and lists these as skipped where their package is absent
OPTIONAL = {"harness.run.lmeval": "lm_eval"}


def preflight(tiny: bool, peak_override: float | None, info: dict) -> dict:
    """What the device and this tree are, into `info` (so that a failure keeps what was found before it), or
    PreflightError naming what is missing."""
    info.update(
        python=platform.python_version(),
        executable=sys.executable,
        warnings=[],
        gpu_site=str(SITE) if SITE.is_dir() else None,
    )
    try:
        import torch
    except ImportError as e:
        raise PreflightError(f"cannot import torch ({one_line(e)})") from None
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if not tiny and not torch.cuda.is_available():
        raise PreflightError(
            f"no CUDA device: torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees "
            "none; on a CPU run with --tiny"
        )
    if not tiny:
        props = torch.cuda.get_device_properties(0)
        info.update(
            device=torch.cuda.get_device_name(0),
            device_count=torch.cuda.device_count(),
            capability=".".join(map(str, torch.cuda.get_device_capability(0))),
            memory_gib=round(props.total_memory / 2**30, 1),
        )
        try:  # a broken driver or a device held by someone else shows here, in a second, not inside a section
            (torch.ones(8, device="cuda") * 2).sum().item()
        except Exception as e:
            raise PreflightError(f"the CUDA device does not run a kernel: {one_line(e)}") from None
    else:
        info["device"] = "cpu"
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError as e:
        if not tiny:  # torch.compile's GPU code generation and flash-linear-attention both need it
            raise PreflightError(f"cannot import triton ({one_line(e)}): torch.compile needs it on CUDA") from None
        info["triton"] = None
    info["fla"] = version_of("fla-core") if importlib.util.find_spec("fla") is not None else None
    if info["fla"] is None:
        info["warnings"].append(
            "flash-linear-attention is not installed: GLA runs its PyTorch form and the fla test "
            "skips (" + WHEELS_HINT + ")"
        )
    elif not tiny:
        try:  # what models/mixers/gla.py calls on CUDA
            from fla.ops.gla import chunk_gla  # noqa: F401
        except Exception as e:
            info["warnings"].append(f"fla is installed but its GLA kernel does not import: {one_line(e)}")

    # Every module of archbench, so that a package missing on this machine is named now, not in a section.
    import pkgutil

    failed, modules = [], []
    for package in ("harness", "models", "tasks"):
        try:
            pkg = importlib.import_module(package)
        except Exception as e:  # ImportError mostly; any exception at import time breaks every run
            failed.append((package, e))
            continue
        names = [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, package + ".")]
        for name in names:
            try:
                importlib.import_module(name)
                modules.append(name)
            except ModuleNotFoundError as e:
                if OPTIONAL.get(name) == e.name:  # an extra's module without its extra: named in the summary
                    info.setdefault("modules_skipped", []).append(f"{name} (needs {e.name})")
                else:
                    failed.append((name, e))
            except Exception as e:
                failed.append((name, e))
    if failed:
        missing = sorted({e.name for _, e in failed if getattr(e, "name", None)})
        what = "; ".join(f"{m} ({one_line(e)})" for m, e in failed[:4]) + (" ..." if len(failed) > 4 else "")
        raise PreflightError(
            f"cannot import {what}" + (f"; missing: {', '.join(missing)}" if missing else "") + f"; {WHEELS_HINT}"
        )
    info["modules_imported"] = len(modules)

    # Hydra: the config composes with the GPU preset and every mixer, and each builds (on the meta device).
    try:
        from hydra import compose, initialize_config_module

        from harness.run.build import build

        mixers = sorted(p.stem for p in (ROOT / "conf" / "model" / "mixer").glob("*.yaml"))
        with initialize_config_module(config_module="conf", version_base="1.3"):
            for mixer in mixers:
                build(compose(config_name="config", overrides=[f"model/mixer={mixer}", "trainer=gpu"]), meta=True)
        info["mixers_composed"] = mixers
    except Exception as e:
        raise PreflightError(f"the config does not compose and build: {one_line(e)}") from None

    from harness.run.mfu import peak_of

    info["peak_flops"] = peak_override or (peak_of(info["device"]) if not tiny else None)
    if not tiny and info["peak_flops"] is None:
        info["warnings"].append(
            f"no peak FLOP/s known for {info['device']} (harness/run/mfu.py): MFU is n/a; pass --peak-flops"
        )
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        info["git_sha"] = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_sha"] = None
    return info


# --- the sections (each in its own process) ---------------------------------------------------------------------


class Recorder:
    """A section's results, rewritten to its file after every measurement (so a killed section leaves them)."""

    def __init__(self, path: Path, planned: list[str], deadline: float | None = None):
        self.path, self.deadline = path, deadline
        self.data = {"status": "running", "results": {"runs": {k: {"status": "not reached"} for k in planned}}}
        self.save()

    @property
    def results(self) -> dict:
        return self.data["results"]

    def run(self, key: str, fn) -> dict | None:
        """fn() -> dict of figures; its exception is recorded under `key` and the next measurement goes on."""
        if self.deadline is not None and time.time() > self.deadline:
            self.results["runs"][key] = {"status": "not reached (budget)"}
            self.save()
            return None
        t0 = time.perf_counter()
        try:
            out = {"status": "ok", **fn()}
        except Exception as e:
            traceback.print_exc()
            out = {"status": "failed", "error": one_line(e)}
        finally:
            free_memory()
        out["seconds"] = round(time.perf_counter() - t0, 2)
        self.results["runs"][key] = out
        self.save()
        return out if out["status"] == "ok" else None

    def save(self) -> None:
        write_json(self.path, self.data)


def free_memory() -> None:
    """Between measurements: compiled graphs (and CUDA graphs' memory pools) dropped, the allocator's cache freed."""
    torch = sys.modules.get("torch")
    if "torch._dynamo" in sys.modules:
        torch._dynamo.reset()
    gc.collect()
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def device_of(tiny: bool):
    import torch

    return torch.device("cpu" if tiny else "cuda")


def tiny_compile() -> None:
    """--tiny: torch.compile traces with Dynamo but runs the graphs eagerly (inductor's C++ build would take minutes
    on a CI CPU); the mode (reduce-overhead: CUDA graphs) only means something on a GPU."""
    import torch

    real = torch.compile

    def compile_eagerly(model=None, *, mode=None, **kw):
        return real(model, backend="eager")

    torch.compile = compile_eagerly


def section_gpt2(rec: Recorder, args) -> None:
    import torch
    from gpu import GPT2, GPT2_TINY, archbench_loop, bare_loop, gpt, lm_data

    from harness.run.mfu import mfu, peak_flops
    from harness.run.train import seed_everything

    s = GPT2_TINY if args.tiny else GPT2
    steps, warmup = (3, 1) if args.tiny else (args.gpt2_steps, 10)
    device = device_of(args.tiny)
    with torch.device("meta"):
        model = gpt(s["vocab"], s["d"], s["layers"], s["heads"], s["seq"])
    fpt = model.flops_per_token(s["seq"]) + model.head_flops_per_scored()  # language modelling: every position
    peak = peak_flops(device, args.peak_flops)
    rec.results["config"] = {
        **s,
        "steps": steps,
        "warmup_steps": warmup,
        "flops_per_token": fpt,
        "peak_flops": peak,
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
    }
    data = lm_data(s["batch"] * 8, s["seq"], s["vocab"])

    def measure(loop, compiled):
        def fn():
            seed_everything(0)
            model = gpt(s["vocab"], s["d"], s["layers"], s["heads"], s["seq"])
            tps = loop(model, data, steps, warmup, s["batch"], device, compiled)
            return {"tokens_per_second": tps, "mfu": mfu(fpt, tps, peak)}

        return fn

    for mode, compiled in (("compiled", True), ("eager", False)):  # compiled first: the goals are about it
        for name, loop in (("bare", bare_loop), ("archbench", archbench_loop)):
            rec.run(f"{name}/{mode}", measure(loop, compiled))
    runs, ratio = rec.results["runs"], {}
    for mode in ("compiled", "eager"):
        a, b = runs[f"archbench/{mode}"].get("tokens_per_second"), runs[f"bare/{mode}"].get("tokens_per_second")
        ratio[mode] = a / b if a and b else None
    rec.results["archbench_over_bare"] = ratio


def section_mqar(rec: Recorder, args) -> None:
    from gpu import MQAR_SIZES, MQAR_TINY, mqar_steps_per_second

    s = MQAR_TINY if args.tiny else MQAR_SIZES
    steps, warmup = (3, 1) if args.tiny else (args.mqar_steps, 20)
    device = device_of(args.tiny)
    rec.results["config"] = {**s, "d_model": 64, "n_layers": 2, "steps": steps, "warmup_steps": warmup}
    for key, compiled, mode in (
        ("eager", False, None),
        ("compiled", True, None),
        ("cuda_graphs", True, "reduce-overhead"),
    ):
        rec.run(
            key,
            lambda c=compiled, m=mode: {
                "steps_per_second": mqar_steps_per_second(
                    s["vocab"], s["seq"], s["batch"], steps, warmup, device, c, m
                ),
                "compile_mode": m if c else None,
            },
        )
    runs = rec.results["runs"]
    eager = runs["eager"].get("steps_per_second")
    rec.results["speedup_over_eager"] = {
        k: runs[k]["steps_per_second"] / eager if eager and runs[k].get("steps_per_second") else None
        for k in ("compiled", "cuda_graphs")
    }


def mqar_job(tiny: bool, steps: int) -> list[str]:
    """The MQAR job of the concurrent section as `archbench` overrides: Zoology's model (no MLP) at vocab 8,192."""
    from gpu import MQAR_SIZES, MQAR_TINY

    s = MQAR_TINY if tiny else MQAR_SIZES
    return [
        f"task.vocab_size={s['vocab']}",
        f"task.seq_len={s['seq']}",
        f"task.num_train={s['batch'] * 4}",
        f"task.num_val={s['batch']}",
        f"task.num_test={s['batch']}",
        "model/ffn=none",
        "trainer=default" if tiny else "trainer=gpu",
        "trainer.compile=false",
        f"trainer.batch_size={s['batch']}",
        f"trainer.max_steps={steps}",
        f"trainer.eval_every={steps}",
        "trainer.warmup_steps=10",
        "trainer.progress=false",
        "trainer.checkpoint_every=0",
    ]


def worker(args) -> None:
    """One process of the concurrent section: build the job through Hydra, warm up, say ready, wait for the go file
    (so that all processes train at the same time), train, write when it started and ended."""
    from dataclasses import replace

    from hydra import compose, initialize_config_module

    from harness.run.build import build
    from harness.run.train import seed_everything, train

    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=mqar_job(args.tiny, args.steps))
    seed_everything(0)
    task, model, train_cfg = build(cfg)
    splits = task.splits(0)
    train(model, splits, replace(train_cfg, max_steps=args.warmup, eval_every=args.warmup), seed=0)
    out = Path(args.worker)
    write_atomic(out.with_suffix(".ready"), "")
    go = Path(args.go)
    while not go.exists():
        time.sleep(0.005)
    start = time.time()
    result = train(model, splits, train_cfg, seed=0)
    end = time.time()
    tokens = task.seq_len * train_cfg.batch_size
    write_json(
        out,
        {
            "start": start,
            "end": end,
            "steps": result["metrics"]["steps"],
            "steps_per_second": result["cost"]["tokens_per_second"] / tokens,
            "pid": os.getpid(),
        },
    )


def section_concurrent(rec: Recorder, args) -> None:
    counts = CONCURRENCY_TINY if args.tiny else CONCURRENCY
    steps, warmup = (4, 1) if args.tiny else (args.concurrent_steps, 10)
    rec.results["config"] = {"overrides": mqar_job(args.tiny, steps), "warmup_steps": warmup, "processes": counts}
    base = Path(args.out) / "concurrent"

    def launch(n: int) -> dict:
        folder = base / f"n{n}"
        folder.mkdir(parents=True, exist_ok=True)
        go = folder / "go"
        go.unlink(missing_ok=True)
        files = [folder / f"worker{i}.json" for i in range(n)]
        for f in (*files, *(f.with_suffix(".ready") for f in files)):
            f.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            __file__,
            args.out,
            "--go",
            str(go),
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            *(["--tiny"] if args.tiny else []),
        ]
        logs = [open(f.with_suffix(".log"), "w") for f in files]
        procs = [
            subprocess.Popen([*cmd, "--worker", str(f)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            for f, log in zip(files, logs, strict=True)
        ]
        try:
            while not all(f.with_suffix(".ready").exists() for f in files):
                dead = [i for i, p in enumerate(procs) if p.poll() is not None]
                if dead:
                    raise RuntimeError(
                        f"worker {dead[0]} exited with {procs[dead[0]].returncode} before it was "
                        f"ready: {tail(files[dead[0]].with_suffix('.log'))}"
                    )
                if time.time() > args.deadline:
                    raise TimeoutError("the workers were not ready within the section's budget")
                time.sleep(0.02)
            go.touch()
            for i, p in enumerate(procs):
                if p.wait(timeout=max(1.0, args.deadline - time.time())) != 0:
                    raise RuntimeError(f"worker {i} exited with {p.returncode}: {tail(files[i].with_suffix('.log'))}")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for log in logs:
                log.close()
        done = [json.loads(f.read_text()) for f in files]
        window = max(d["end"] for d in done) - min(d["start"] for d in done)
        return {
            "processes": n,
            "aggregate_steps_per_second": sum(d["steps"] for d in done) / window,
            "per_process_steps_per_second": [round(d["steps_per_second"], 2) for d in done],
            "window_seconds": round(window, 3),
        }

    for n in counts:
        rec.run(str(n), lambda n=n: launch(n))
    runs = rec.results["runs"]
    one = runs[str(counts[0])].get("aggregate_steps_per_second")
    rec.results["over_one"] = {
        str(n): runs[str(n)]["aggregate_steps_per_second"] / one
        if one and runs[str(n)].get("aggregate_steps_per_second")
        else None
        for n in counts[1:]
    }


def deterministic_overrides(tiny: bool) -> list[str]:
    task = [
        "task.vocab_size=256",
        "task.seq_len=128",
        "task.num_kv_pairs=8",
        "task.num_train=4096",
        "task.num_val=256",
        "task.num_test=256",
    ]
    trainer = ["trainer=gpu", "trainer.compile=false", "trainer.max_steps=60", "trainer.eval_every=20"]
    if tiny:
        task = [
            "task.vocab_size=64",
            "task.seq_len=32",
            "task.num_kv_pairs=4",
            "task.num_train=64",
            "task.num_val=16",
            "task.num_test=16",
        ]
        trainer = ["trainer.max_steps=6", "trainer.eval_every=3", "trainer.batch_size=16"]
    return [
        *task,
        *trainer,
        "model.mixer.n_heads=2",
        "trainer.deterministic=true",
        "trainer.progress=false",
        "trainer.checkpoint_every=0",
        "logger=none",
    ]


def section_deterministic(rec: Recorder, args) -> None:
    """The same `archbench` run in two processes at once (the device's time is short; determinism must not depend on
    what else runs), then every metric and the whole curve compared exactly."""
    base = Path(args.out) / "deterministic"
    base.mkdir(parents=True, exist_ok=True)
    overrides = deterministic_overrides(args.tiny)
    rec.results["config"] = {"overrides": overrides}
    procs, logs = [], []
    for i in (0, 1):
        cmd = [
            sys.executable,
            "-m",
            "harness.run.cli",
            *overrides,
            f"paths.results={base / f'results{i}'}",
            f"hydra.run.dir={base / f'results{i}' / 'run'}",  # inside the results root, as every run folder
        ]
        logs.append(open(base / f"run{i}.log", "w"))
        procs.append(
            subprocess.Popen(cmd, cwd=ROOT, stdout=logs[-1], stderr=subprocess.STDOUT, env=child_env(args.tiny))
        )
    records = []

    def finish(i: int) -> dict:
        rc = procs[i].wait(timeout=max(1.0, args.deadline - time.time()))
        logs[i].close()
        if rc != 0:
            raise RuntimeError(f"archbench exited with {rc}: {tail(base / f'run{i}.log')}")
        record = json.loads((base / f"results{i}" / "run" / "result.json").read_text())
        if record["status"] != "completed":
            raise RuntimeError(f"the run {record['status']}: {record['error']}")
        records.append(record)
        return {k: record["metrics"][k] for k in ("val/loss", "val/accuracy", "test/loss") if k in record["metrics"]}

    for i in (0, 1):
        rec.run(f"run{i}", lambda i=i: finish(i))
    if len(records) == 2:
        a, b = records
        diff = sorted(k for k in set(a["metrics"]) | set(b["metrics"]) if a["metrics"].get(k) != b["metrics"].get(k))
        if a["history"] != b["history"]:
            diff.append("history")
        rec.results["identical"] = not diff
        rec.results["differences"] = diff
        if diff:
            rec.data["status"] = "failed"
            rec.data["error"] = f"two runs with trainer.deterministic=true differ in: {', '.join(diff)}"


def section_pytest_gpu(rec: Recorder, args) -> None:
    """`pytest -m gpu` over the test files that hold gpu tests; counts from its JUnit XML, or, if it runs out of
    time, from its verbose lines so far."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if "mark.gpu" in p.read_text())
    xml = Path(args.out) / "pytest_gpu.xml"
    xml.unlink(missing_ok=True)
    log_path = Path(args.out) / "logs" / "pytest_gpu.out"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-o",
        "addopts=",
        "-m",
        "gpu",
        "--strict-markers",
        "-v",
        "-rfE",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        f"--junitxml={xml}",
        *files,
    ]
    rec.results.update(command=" ".join(cmd[1:]), files=files)
    rec.results.pop("runs")
    timed_out = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=child_env(args.tiny))
        try:
            rc = proc.wait(timeout=max(1.0, args.deadline - time.time() - 1))
        except subprocess.TimeoutExpired:  # what pytest started goes with this section's process group
            timed_out = True
            proc.kill()
            proc.wait()
            rc = None
    counts, failures = ({}, [])
    if xml.exists():
        counts, failures = parse_junit(xml)
    else:
        counts, failures = parse_verbose(log_path.read_text(errors="replace"))
    rec.results.update(returncode=rc, counts=counts, failures=failures)
    if timed_out:
        rec.data.update(
            status="timeout", error="pytest ran past the section's budget; counts are of the tests that finished"
        )
    elif counts.get("failed") or counts.get("errors") or rc not in (0, 5):  # 5: no test selected
        rec.data["status"] = "failed"
        rec.data["error"] = (
            f"{counts.get('failed', 0)} failed, {counts.get('errors', 0)} errors"
            if counts
            else f"pytest exited with {rc}: {tail(log_path)}"
        )


def parse_junit(path: Path) -> tuple[dict, list]:
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures = []
    for case in root.iter("testcase"):
        module, test = case.get("classname") or "", case.get("name") or ""
        name = f"{module.replace('.', '/')}.py::{test}" if module else f"{test.replace('.', '/')}.py (collection)"
        outcome = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            counts["passed"] += 1
        elif outcome.tag == "skipped":
            counts["skipped"] += 1
        else:
            counts["failed" if outcome.tag == "failure" else "errors"] += 1
            failures.append({"test": name, "message": " ".join((outcome.get("message") or "").split())[:300]})
    return counts, failures


def parse_verbose(text: str) -> tuple[dict, list]:
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures = []
    for test, outcome in re.findall(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)", text, re.M):
        key = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "ERROR": "errors"}.get(outcome, "skipped")
        counts[key] += 1
        if key in ("failed", "errors"):
            failures.append({"test": test, "message": ""})
    return counts, failures


RUNNERS = {
    "pytest_gpu": section_pytest_gpu,
    "gpt2": section_gpt2,
    "mqar": section_mqar,
    "concurrent": section_concurrent,
    "deterministic": section_deterministic,
}
PLANNED = {
    "pytest_gpu": [],
    "gpt2": ["bare/compiled", "archbench/compiled", "bare/eager", "archbench/eager"],
    "mqar": ["eager", "compiled", "cuda_graphs"],
    "concurrent": None,
    "deterministic": ["run0", "run1"],
}


def run_section(args) -> None:
    """The child process of one section."""
    planned = PLANNED[args.section]
    if planned is None:
        planned = [str(n) for n in (CONCURRENCY_TINY if args.tiny else CONCURRENCY)]
    rec = Recorder(Path(args.section_file), planned, args.deadline)
    if args.tiny:
        import torch

        tiny_compile()
        torch.set_num_threads(1)
    else:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    RUNNERS[args.section](rec, args)
    if rec.data["status"] == "running":
        runs = rec.results.get("runs", {})
        rec.data["status"] = "partial" if any(r["status"] != "ok" for r in runs.values()) else "ok"
        if rec.data["status"] == "partial":
            rec.data["error"] = "; ".join(
                f"{k}: {r.get('error', r['status'])}" for k, r in runs.items() if r["status"] != "ok"
            )
    rec.save()


# --- the parent: runs the sections, writes the summary ------------------------------------------------------------


def child_env(tiny: bool) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*PATHS[1:], *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("HYDRA_FULL_ERROR", "1")
    env.setdefault("WANDB_MODE", "disabled")
    env.setdefault("ARCHBENCH_NO_CACHE", "1")  # the splits here are small; write nothing under ~/.cache
    if tiny:
        env["CUDA_VISIBLE_DEVICES"] = ""  # --tiny is the CPU path, on any machine
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def kill_group(proc: subprocess.Popen) -> None:
    """Stop a section (and the processes it started: pytest, workers) by its own process group."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, n: int = 1) -> str:
    """The last line(s) of a log that say something (a traceback's last line names the error)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[:400]


def launch_section(name: str, out: Path, args, budget: float) -> dict:
    section_file = out / "sections" / f"{name}.json"
    log_path = out / "logs" / f"{name}.log"
    deadline = time.time() + budget
    cmd = [
        sys.executable,
        __file__,
        str(out),
        "--section",
        name,
        "--section-file",
        str(section_file),
        "--deadline",
        repr(deadline),
        *(["--tiny"] if args.tiny else []),
        *(["--peak-flops", repr(args.peak_flops)] if args.peak_flops else []),
        "--gpt2-steps",
        str(args.gpt2_steps),
        "--mqar-steps",
        str(args.mqar_steps),
        "--concurrent-steps",
        str(args.concurrent_steps),
    ]
    result = launch(cmd, section_file, log_path, budget, child_env(args.tiny))
    return {**result, "log": str(log_path.relative_to(out))}


def launch(cmd: list[str], section_file: Path, log_path: Path, budget: float, env: dict) -> dict:
    """Run one section's process for at most `budget` (+ GRACE) seconds, stopping it and all it started past that;
    what it wrote to `section_file` before is kept either way."""
    section_file.unlink(missing_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    timed_out = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=budget + GRACE)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(proc)
            rc = proc.returncode
        with contextlib.suppress(ProcessLookupError, PermissionError):  # anything it left running holds the GPU
            os.killpg(proc.pid, signal.SIGKILL)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    try:
        data = json.loads(section_file.read_text())
    except (OSError, ValueError):
        data = {"status": "failed", "results": {}}
    if timed_out:
        data["status"] = "timeout"
        data["error"] = f"ran past its budget of {budget:.0f} s and was stopped; what it measured is kept"
    elif rc != 0:
        data["status"] = "failed"
        data["error"] = f"the section's process exited with {rc}: {tail(log_path)}"
    for run in data.get("results", {}).get("runs", {}).values():
        if run.get("status") == "not reached":
            run["status"] = "not reached (budget)" if timed_out else "not reached"
    return {
        "status": data["status"],
        "error": data.get("error"),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "budget_seconds": round(budget, 1),
        "results": data.get("results", {}),
    }


def cpu_seconds() -> float:
    """User and system CPU time of the finished child processes (a section and all it started)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def goals(sections: dict, tiny: bool) -> dict:
    def get(*path):
        node = sections
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    measured = {
        "gpt2_mfu": (
            get("gpt2", "results", "runs", "archbench/compiled", "mfu"),
            0.50,
            "GPT-2 small MFU of the archbench trainer, compiled",
        ),
        "archbench_over_bare": (
            get("gpt2", "results", "archbench_over_bare", "compiled"),
            1.0,
            "GPT-2 small tokens/s, archbench trainer / bare nanoGPT-style loop, compiled",
        ),
        "concurrent_8_over_1": (
            get("concurrent", "results", "over_one", "8"),
            4.0,
            "MQAR aggregate steps/s, 8 concurrent processes / 1",
        ),
    }
    return {
        k: {
            "what": what,
            "goal": f">= {goal:g}",
            "value": value,
            "met": None if tiny or value is None else value >= goal,
        }
        for k, (value, goal, what) in measured.items()
    }


def summarise(out: Path, args, started: str, t0: float, info: dict, sections: dict) -> dict:
    summary = {
        "schema": SCHEMA,
        "tiny": args.tiny,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": started,
        "finished": now_iso(),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "env": info,
        "goals": goals(sections, args.tiny),
        "sections": sections,
    }
    write_json(out / "summary.json", summary)
    write_atomic(out / "summary.md", markdown(summary))
    return summary


def fmt(x, spec: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(s: dict) -> str:
    env, sec = s["env"] or {}, s["sections"]
    lines = [
        "# archbench GPU check" + (" (--tiny: CPU, tiny sizes; no figure here is a GPU figure)" if s["tiny"] else ""),
        "",
    ]
    if env:
        lines.append(
            f"{env.get('device')} · torch {env.get('torch')} (CUDA {env.get('torch_cuda')}) · triton "
            f"{env.get('triton')} · fla {env.get('fla')} · Python {env.get('python')} · git "
            f"{(env.get('git_sha') or '?')[:10]}"
        )
    lines += [f"started {s['started']}, {s['wall_seconds']} s in all", ""]
    if sec.get("preflight", {}).get("status") == "failed":
        lines += [f"**Stopped at the pre-flight**: {sec['preflight']['error']}", ""]
    for w in env.get("warnings", []):
        lines.append(f"- warning: {w}")
    lines += ["", "## Goals", "", "| goal | measured | target | met |", "|---|---|---|---|"]
    for g in s["goals"].values():
        met = "n/a" if g["met"] is None else ("yes" if g["met"] else "**no**")
        lines.append(f"| {g['what']} | {fmt(g['value'], '.3f')} | {g['goal']} | {met} |")
    lines += ["", "## Sections", "", "| section | status | seconds | budget | error |", "|---|---|---|---|---|"]
    for name, r in sec.items():
        lines.append(
            f"| {name} | {r['status']} | {r.get('seconds', '')} | {r.get('budget_seconds', '')} | "
            f"{(r.get('error') or '').replace('|', '/')} |"
        )
    res = {k: v.get("results") or {} for k, v in sec.items()}
    if "pytest_gpu" in res and res["pytest_gpu"].get("counts"):
        c = res["pytest_gpu"]["counts"]
        lines += [
            "",
            "## pytest -m gpu",
            "",
            f"{c['passed']} passed, {c['failed']} failed, {c['errors']} errors, {c['skipped']} skipped",
        ]
        lines += [f"- {f['test']}: {f['message']}" for f in res["pytest_gpu"].get("failures", [])]
    if res.get("gpt2", {}).get("runs"):
        g = res["gpt2"]
        cfg = g.get("config", {})
        lines += [
            "",
            "## GPT-2 small",
            "",
            f"{cfg.get('layers')} layers, width {cfg.get('d')}, sequence "
            f"{cfg.get('seq')}, vocab {cfg.get('vocab')}, batch {cfg.get('batch')}, {cfg.get('steps')} timed "
            f"steps after {cfg.get('warmup_steps')}; {cfg.get('precision')}",
            "",
            "| loop | mode | tokens/s | MFU | status |",
            "|---|---|---|---|---|",
        ]
        for key, r in g["runs"].items():
            loop, mode = key.split("/")
            lines.append(
                f"| {loop} | {mode} | {fmt(r.get('tokens_per_second'))} | {fmt(r.get('mfu'), '.1%')} | {r['status']} |"
            )
        ratio = g.get("archbench_over_bare", {})
        lines += [
            "",
            f"archbench / bare: compiled {fmt(ratio.get('compiled'), '.3f')}, eager {fmt(ratio.get('eager'), '.3f')}",
        ]
    if res.get("mqar", {}).get("runs"):
        m = res["mqar"]
        lines += ["", "## MQAR (Zoology's model)", "", "| mode | steps/s | × eager | status |", "|---|---|---|---|"]
        up = m.get("speedup_over_eager", {})
        for key, r in m["runs"].items():
            lines.append(
                f"| {key} | {fmt(r.get('steps_per_second'), ',.1f')} | "
                f"{fmt(up.get(key, 1.0 if key == 'eager' else None), '.2f')} | {r['status']} |"
            )
    if res.get("concurrent", {}).get("runs"):
        c = res["concurrent"]
        lines += [
            "",
            "## Concurrent MQAR runs on one device",
            "",
            "| processes | aggregate steps/s | × one | per process | status |",
            "|---|---|---|---|---|",
        ]
        for key, r in c["runs"].items():
            over = 1.0 if key == "1" else c.get("over_one", {}).get(key)
            lines.append(
                f"| {key} | {fmt(r.get('aggregate_steps_per_second'), ',.1f')} | {fmt(over, '.2f')} | "
                f"{', '.join(map(str, r.get('per_process_steps_per_second', [])))} | {r['status']} |"
            )
    if res.get("deterministic", {}).get("runs"):
        d = res["deterministic"]
        verdict = (
            "not compared"
            if "identical" not in d
            else "identical metrics and curves"
            if d["identical"]
            else f"**differ** in {', '.join(d['differences'])}"
        )
        lines += [
            "",
            "## Deterministic repeat",
            "",
            f"{verdict} (" + ", ".join(f"{k}: {r['status']}" for k, r in d["runs"].items()) + ")",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("out", help="folder for summary.json, summary.md and the sections' logs")
    p.add_argument("--tiny", action="store_true", help="CPU, tiny sizes: the same code paths in seconds")
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS[1:]),
        help=f"comma-separated, from {', '.join(SECTIONS[1:])} (pre-flight always runs)",
    )
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply every section's time budget")
    p.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="SECTION=SECONDS",
        help="one section's budget, e.g. --budget pytest_gpu=200 (repeatable); defaults: "
        + ", ".join(f"{k}={v}" for k, v in BUDGETS.items()),
    )
    p.add_argument(
        "--peak-flops",
        type=float,
        default=None,
        help="the device's peak bf16 FLOP/s where harness/run/mfu.py does not know it",
    )
    p.add_argument("--gpt2-steps", type=int, default=50, help="timed GPT-2 steps per measurement (after 10)")
    p.add_argument("--mqar-steps", type=int, default=300, help="timed MQAR steps per mode (after 20)")
    p.add_argument("--concurrent-steps", type=int, default=400, help="timed MQAR steps per concurrent process")
    for hidden in ("--section", "--section-file", "--worker", "--go"):  # the children of this script
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.section:
        run_section(args)
        return 0

    chosen = [s.strip() for s in args.sections.split(",") if s.strip() and s.strip() != "preflight"]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS[1:])}")
    scale = args.budget_scale * (TINY_SLOWER if args.tiny else 1)
    budgets, explicit = {k: v * scale for k, v in BUDGETS.items()}, set()
    for item in args.budget:
        name, _, value = item.partition("=")
        if name not in SECTIONS[1:] or not re.fullmatch(r"\d+(\.\d*)?", value):
            p.error(f"--budget {item}: give SECTION=SECONDS, SECTION one of {', '.join(SECTIONS[1:])}")
        budgets[name] = float(value)
        explicit.add(name)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started, t0 = now_iso(), time.perf_counter()
    if args.tiny:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    sections: dict = {}
    info: dict = {}

    def too_long(signum, frame):
        raise PreflightError(f"the pre-flight took more than {limit} s (a CUDA driver or an import that hangs?)")

    limit = 300 if args.tiny else int(max(60, 3 * budgets["preflight"]))  # a target, not a limit: this stops a hang
    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(limit)
    try:
        preflight(args.tiny, args.peak_flops, info)
        sections["preflight"] = {
            "status": "ok",
            "error": None,
            "seconds": round(time.perf_counter() - t0, 1),
            "budget_seconds": BUDGETS["preflight"],
            "results": info,
        }
    except PreflightError as e:
        sections["preflight"] = {
            "status": "failed",
            "error": str(e),
            "seconds": round(time.perf_counter() - t0, 1),
            "budget_seconds": BUDGETS["preflight"],
            "results": info,
        }
        summarise(out, args, started, t0, info, sections)
        print(f"gpu_check: stopped at the pre-flight: {e}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
    print(
        f"gpu_check: pre-flight ok in {sections['preflight']['seconds']} s: {info['device']}, torch "
        f"{info['torch']}, triton {info['triton']}, fla {info['fla']}",
        flush=True,
    )
    for w in info["warnings"]:
        print(f"gpu_check: warning: {w}", flush=True)
    summarise(out, args, started, t0, info, sections)

    slack = max(0.0, budgets["preflight"] - (time.perf_counter() - t0))
    for name in SECTIONS[1:]:
        if name not in chosen:
            continue
        budget = budgets[name] + (0.0 if name in explicit else slack)
        print(f"gpu_check: {name} (budget {budget:.0f} s) ...", flush=True)
        sections[name] = launch_section(name, out, args, budget)
        slack = max(0.0, budget - sections[name]["seconds"])
        r = sections[name]
        print(
            f"gpu_check: {name}: {r['status']} in {r['seconds']} s" + (f": {r['error']}" if r["error"] else ""),
            flush=True,
        )
        summarise(out, args, started, t0, info, sections)
    summary = summarise(out, args, started, t0, info, sections)
    for g in summary["goals"].values():
        print(f"gpu_check: goal {g['what']}: {fmt(g['value'], '.3f')} (target {g['goal']})", flush=True)
    print(f"gpu_check: {summary['wall_seconds']} s; wrote {out / 'summary.json'} and {out / 'summary.md'}")
    return 0 if all(r["status"] == "ok" for r in sections.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
