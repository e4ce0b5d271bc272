"""Trainer overhead: tokens/s of archbench's trainer against a bare PyTorch loop on the same model and data, in
one invocation, plus the time from process start to the first training step of `archbench`.

    python benchmarks/overhead.py [--steps 300] [--repeats 5] [--device cpu|cuda]

Prints the median over repeats of each and their ratio (archbench / bare; goal >= 0.95). Both loops run on the
same device with the same precision (bf16 autocast on CUDA, fp32 on CPU), and a CUDA clock is read after a
synchronisation.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from harness.run.train import TrainConfig, configure_optimizer, lr_lambda, seed_everything, train
from tasks.base import IGNORE

OVERRIDES = [
    "model.d_model=128",
    "model.n_layers=4",
    "model.mixer.n_heads=4",
    "task=mqar",
    "task.seq_len=256",
    "task.vocab_size=512",
    "task.num_kv_pairs=16",
    "task.num_train=4096",
    "task.num_val=64",
    "task.num_test=64",
]


def build():
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=OVERRIDES)
    seed_everything(0)
    return instantiate(cfg.model), instantiate(cfg.task).splits(0)


def bare_loop(model, data, cfg: TrainConfig) -> float:
    """What a researcher would write by hand: same optimizer, schedule, clipping and scored-position loss."""
    device = torch.device(cfg.device)
    model.to(device)
    opt = configure_optimizer(model, cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, cfg.max_steps))
    x, y = data.inputs.to(device), data.targets.to(device)
    g = torch.Generator(device=device).manual_seed(0)
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(cfg.max_steps):
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=g, device=device)
        with autocast:
            h = model(x[idx])
            mask = y[idx] != IGNORE
            loss = F.cross_entropy(model.head(h[mask]).float(), y[idx][mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
    sync()
    return cfg.max_steps * cfg.batch_size * x.shape[1] / (time.perf_counter() - t0)


def startup_seconds() -> float:
    """Wall time from launching `archbench` to its first training step (from the record's timestamp)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ARCHBENCH_RESULTS": tmp}
        t0 = time.time()
        cmd = [sys.executable, "-m", "harness.run.cli", "trainer=smoke"]
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        [record] = [json.loads(p.read_text()) for p in Path(tmp).rglob("result.json")]
        return record["cost"]["first_step_time"] - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu or cuda: both loops run there")
    args = p.parse_args()
    cfg = TrainConfig(
        max_steps=args.steps, batch_size=32, eval_every=args.steps, progress=False, warmup_steps=10, device=args.device
    )
    ours, bare = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine speed hits both alike
        model, splits = build()
        bare.append(bare_loop(model, splits["train"], cfg))
        model, splits = build()
        ours.append(train(model, splits, cfg, seed=0)["cost"]["tokens_per_second"])
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(f"machine: {os.cpu_count()} cpus, torch {torch.__version__}, {args.device} ({where})")
    print("model: d_model 128, 4 layers, 4 heads, seq 256, batch 32 (MQAR, 16 scored positions per sequence)")
    print(f"bare loop      {statistics.median(bare):>10,.0f} tokens/s  (median of {args.repeats})")
    print(f"archbench      {statistics.median(ours):>10,.0f} tokens/s  (median of {args.repeats})")
    print(f"ratio          {statistics.median(ours) / statistics.median(bare):.3f}  (goal >= 0.95)")
    print(f"process start -> first training step: {statistics.median(startup_seconds() for _ in range(3)):.2f} s")


if __name__ == "__main__":
    main()
