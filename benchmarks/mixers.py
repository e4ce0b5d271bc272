"""Forward+backward time and peak memory of every mixer option in conf/model/mixer/, one layer at d_model 64,
batch 8, sequence lengths 256, 1024 and 4096, on the machine it runs on.

    python benchmarks/mixers.py [--lengths 256 1024 4096] [--mixers hyena mamba ...] [--repeats 5] [--device cuda]

Each (mixer, length) runs in a fresh subprocess, so no mixer's memory or allocator cache counts against another.
- time: median over `repeats` forward+backward passes (loss = mean of the squared output) after one warm-up pass,
  wall clock, with torch.cuda.synchronize on CUDA; CPU runs use torch's default thread count.
- memory: the peak during the first forward+backward above what was held before it (the mixer and its input).
  CUDA: torch.cuda.max_memory_allocated (tensor bytes). CPU: the process's peak resident set size (VmHWM in
  /proc/self/status, reset just before the pass through /proc/self/clear_refs) minus its resident size then: it
  counts pages the allocator takes from the OS, so it includes allocator slack, and it is an upper bound on the
  tensor bytes at the peak; where the peak cannot be reset it falls back on ru_maxrss (a lower bound if the
  process had peaked higher before).
A mixer whose layers differ by index (BaseConv stripes short and long convolutions) gets a row per layer index.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
D_MODEL, BATCH = 64, 8


def mixer_names() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "model" / "mixer").glob("*.yaml"))


def build(name: str, seq_len: int, layer_idx: int):
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model/mixer={name}"])
    return instantiate(cfg.model.mixer)(D_MODEL, max_seq_len=seq_len, layer_idx=layer_idx)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(name: str, seq_len: int, layer_idx: int, repeats: int, device: str) -> dict:
    """One (mixer, length) in this process: {"ms": median ms, "mb": peak MB, "params": n, "memory": how}."""
    import torch

    torch.manual_seed(0)
    mixer = build(name, seq_len, layer_idx).to(device)
    x = torch.randn(BATCH, seq_len, D_MODEL, device=device, requires_grad=True)
    cuda = device.startswith("cuda")

    def step():
        mixer(x).square().mean().backward()
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        peak, how = torch.cuda.max_memory_allocated() - before, "cuda max_memory_allocated"
    elif _reset_peak_rss():
        before = _status_kb("VmRSS")
        step()
        peak, how = (_status_kb("VmHWM") - before) * 1024, "peak RSS (VmHWM) increase"
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        peak, how = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, "ru_maxrss increase"
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {
        "ms": 1000 * statistics.median(times),
        "mb": peak / 2**20,
        "memory": how,
        "params": sum(p.numel() for p in mixer.parameters()),
    }


def layer_variants(name: str) -> list[int]:
    """[0], or [0, 1] if layer 1 is built differently (a mixer that stripes its own kinds over depth)."""
    return [0] if repr(build(name, 256, 0)) == repr(build(name, 256, 1)) else [0, 1]


def run_case(name: str, seq_len: int, layer_idx: int, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        name,
        str(seq_len),
        str(layer_idx),
        "--repeats",
        str(args.repeats),
        "--device",
        args.device,
        *(["--threads", str(args.threads)] if args.threads else []),
    ]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {args.timeout}s"}
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": "out of memory" if "out of memory" in proc.stderr.lower() else last[:60]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--mixers", nargs="+", default=None, help="default: every option in conf/model/mixer/")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's own)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per (mixer, length)")
    p.add_argument("--worker", nargs=3, metavar=("MIXER", "SEQ_LEN", "LAYER_IDX"), help=argparse.SUPPRESS)
    args = p.parse_args()

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        name, seq_len, layer_idx = args.worker
        print(json.dumps(worker(name, int(seq_len), int(layer_idx), args.repeats, args.device)))
        return

    names = args.mixers or mixer_names()
    unknown = sorted(set(names) - set(mixer_names()))
    if unknown:
        sys.exit(f"benchmarks/mixers.py: no mixer option {', '.join(unknown)} (available: {', '.join(mixer_names())})")
    machine = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, {torch.get_num_threads()} threads")
    )
    print(
        f"# mixers: forward+backward of one layer, d_model {D_MODEL}, batch {BATCH}, fp32; median of "
        f"{args.repeats} after a warm-up"
    )
    print(
        f"# device: {args.device} ({machine}), torch {torch.__version__}; load average at start "
        f"{os.getloadavg()[0]:.1f} (other processes on the machine slow CPU timings)"
    )
    header = "| mixer | params | " + " | ".join(f"L={n} ms | L={n} MB" for n in args.lengths) + " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1), flush=True)
    how = set()
    for name in names:
        layers = layer_variants(name)
        for layer_idx in layers:
            cells, params = [], ""
            for seq_len in args.lengths:
                r = run_case(name, seq_len, layer_idx, args)
                if "error" in r:
                    cells += [r["error"], ""]
                    continue
                params = f"{r['params']:,}"
                how.add(r["memory"])
                cells += [f"{r['ms']:.1f}", f"{r['mb']:.1f}"]
            label = name if len(layers) == 1 else f"{name} (layer {layer_idx})"
            print(f"| {label} | {params} | " + " | ".join(cells) + " |", flush=True)
    print(f"# memory: {', '.join(sorted(how))} over the first forward+backward, in MiB")


if __name__ == "__main__":
    main()
