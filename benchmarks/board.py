"""How long `archbench-board` takes on 10,000 result records: writes synthetic records shaped like real ones (a
resolved config, 13 metrics, 11 costs, a 10-row eval history; ~5 KB each) into a temporary folder, then times
load_records + the board (with --select trainer.lr), median of a few repeats. Target: under 3 s.

    python benchmarks/board.py [--records 10000] [--repeats 3]
"""

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.record.results import SCHEMA, load_records, run_id
from harness.report import board

MIXERS = ("attention", "gqa", "mqa", "hyena", "based")
POSITIONS = ("learned", "rope", "alibi", "none", "sinusoidal")
TASKS = ("mqar", "induction_heads", "selective_copying", "listops")


def record(mixer: str, position: str, task: str, d_model: int, lr: float, seed: int, rng) -> dict:
    config = {
        "seed": seed,
        "name": "bench",
        "skip_completed": True,
        "paths": {"results": "results"},
        "model": {
            "mixer": {"_target_": f"models.mixers.{mixer}.Mixer", "_partial_": True, "n_heads": 1},
            "norm": {"_target_": "models.norms.layernorm", "_partial_": True, "eps": 1e-05},
            "ffn": {"_target_": "models.ffn.none", "_partial_": True},
            "position": {"_target_": f"models.positions.{position}", "_partial_": True},
            "_target_": "models.backbone.LanguageModel",
            "vocab_size": 128,
            "max_seq_len": 64,
            "d_model": d_model,
            "n_layers": 2,
            "norm_placement": "pre",
            "tie_embeddings": False,
        },
        "task": {"_target_": f"tasks.{task}.Task", "vocab_size": 128, "seq_len": 64, "num_train": 20000},
        "trainer": {
            "max_steps": 1000,
            "batch_size": 64,
            "lr": lr,
            "weight_decay": 0.1,
            "betas": [0.9, 0.98],
            "warmup_steps": 100,
            "eval_every": 100,
            "device": "auto",
            "progress": False,
        },
        "logger": {"_target_": "harness.run.logger.NullLogger", "_partial_": True},
    }
    acc = float(rng.uniform(0, 1))
    history = [
        {
            "step": s,
            "train/loss": float(rng.uniform(0, 5)),
            "val/loss": float(rng.uniform(0, 5)),
            "val/accuracy": float(rng.uniform(0, 1)),
            "lr": lr,
            "tokens": s * 4096,
        }
        for s in range(100, 1001, 100)
    ]
    return {
        "schema": SCHEMA,
        "run_id": run_id(config),
        "status": "completed",
        "error": None,
        "labels": {
            "model": "transformer",
            "mixer": mixer,
            "norm": "layernorm",
            "ffn": "none",
            "position": position,
            "task": task,
        },
        "overrides": [
            f"model/mixer={mixer}",
            f"model/position={position}",
            f"task={task}",
            f"model.d_model={d_model}",
            f"trainer.lr={lr}",
            f"seed={seed}",
        ],
        "config": config,
        "seed": seed,
        "metrics": {
            "train/loss": 1.0,
            "val/loss": 1.0,
            "val/accuracy": acc,
            "test/loss": 1.0,
            "test/accuracy": acc + float(rng.normal(0, 0.01)),
            "best/val_accuracy": acc,
            "best/step": 900,
            "steps": 1000,
            "steps_to_target": None,
        },
        "cost": {
            "params": 1000 * d_model,
            "params_non_embedding": 800 * d_model,
            "flops_per_token": 6000 * d_model,
            "tokens_seen": 4_096_000,
            "train_seconds": 10.0,
            "wall_seconds": 12.0,
            "tokens_per_second": 4e5,
            "peak_memory_bytes": None,
            "device": "cpu",
            "threads": 2,
            "first_step_time": 0.0,
        },
        "env": {"torch": "2.13.0", "python": "3.11", "platform": "linux", "git_sha": "0" * 40, "cuda": None},
        "timestamps": {"started": "2026-01-01T00:00:00", "finished": "2026-01-01T00:01:00"},
        "history": history,
    }


def write_records(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    grid = itertools.product(MIXERS, POSITIONS, TASKS, (32, 64, 128, 256), (1e-4, 3e-4, 1e-3, 3e-3, 1e-2), range(5))
    for i, combo in enumerate(itertools.islice(itertools.cycle(grid), n)):
        path = root / str(i) / "result.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record(*combo, rng), indent=2))  # the writer's format, without its fsync


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_records(Path(tmp), args.records)
        times, load_times = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            records = load_records([tmp])
            t1 = time.perf_counter()
            result = board.build(records, select=["trainer.lr"])
            times.append(time.perf_counter() - t0)
            load_times.append(t1 - t0)
    print(
        f"{len(records):,} records -> {len(result.table)} rows x {result.long['column'].nunique()} columns: "
        f"{statistics.median(times):.2f} s (median of {args.repeats}; load_records "
        f"{statistics.median(load_times):.2f} s, board {statistics.median(times) - statistics.median(load_times):.2f}"
        f" s)"
    )


if __name__ == "__main__":
    main()
