"""Memory of training from token shards (tasks/lm_shards.py) as the corpus grows: peak RSS of a process that trains
the same model a few steps on a 100 MB and on a 1 GB shard set (random uint16 tokens written into train.bin, small
val.bin and test.bin), each size in its own process, and the ratio 1 GB / 100 MB (flat: about 1).

    python benchmarks/lm_memory.py [--sizes-mb 100 1000] [--steps 20] [--folder /tmp/archbench-lm-memory]

The shard files are made once and kept in --folder (delete it afterwards). Peak RSS is the process's high-water mark
(getrusage): it would grow with the corpus if a path loaded it, or mapped the pages its windows touch.
"""

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

VOCAB, SEQ_LEN, BATCH = 8192, 256, 16
HELD_OUT_TOKENS = 1 << 20


def make_shards(folder: Path, size_mb: int) -> Path:
    out = folder / f"{size_mb}mb"
    if (out / "train.bin").is_file() and (out / "train.bin").stat().st_size == size_mb * 10**6:
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n, chunk = size_mb * 10**6 // 2, 1 << 24
    with open(out / "train.bin", "wb") as f:
        for i in range(0, n, chunk):
            rng.integers(0, VOCAB, size=min(chunk, n - i), dtype=np.uint16).tofile(f)
    for name in ("val", "test"):
        rng.integers(0, VOCAB, size=HELD_OUT_TOKENS, dtype=np.uint16).tofile(out / f"{name}.bin")
    return out


def train_once(folder: Path, steps: int) -> dict:
    """Train in this process; returns its peak RSS."""
    import torch
    from hydra import compose, initialize_config_module

    import harness  # noqa: F401 (config resolvers)
    from harness.run.build import build_model
    from harness.run.train import TrainConfig, train
    from tasks.lm_shards import TokenWindows, fixed_starts

    torch.set_num_threads(1)
    with initialize_config_module(version_base="1.3", config_module="conf"):
        cfg = compose(
            "config",
            overrides=["task=lm_text", f"task.vocab_size={VOCAB}", f"task.seq_len={SEQ_LEN}", "model.d_model=128"],
        )
    torch.manual_seed(0)
    model = build_model(cfg)
    splits = {"train": TokenWindows(folder / "train.bin", "uint16", SEQ_LEN)}
    for name in ("val", "test"):
        splits[name] = TokenWindows(
            folder / f"{name}.bin", "uint16", SEQ_LEN, fixed_starts(HELD_OUT_TOKENS, SEQ_LEN, 64)
        )
    train_cfg = TrainConfig(
        max_steps=steps, batch_size=BATCH, eval_every=steps, eval_batch_size=BATCH, device="cpu", progress=False
    )
    out = train(model, splits, train_cfg, seed=0)
    return {
        "train_tokens": splits["train"].n_tokens,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "val_loss": out["metrics"]["val/loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/archbench-lm-memory"))
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(train_once(args.child, args.steps)))
        return
    rows = []
    for size in args.sizes_mb:
        folder = make_shards(args.folder, size)
        cmd = [sys.executable, __file__, "--child", str(folder), "--steps", str(args.steps)]
        row = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        )
        rows.append(row)
        print(f"{size:>6} MB shard ({row['train_tokens']:,} tokens): peak RSS {row['peak_rss_mb']:.0f} MB")
    if len(rows) > 1:
        print(f"ratio largest / smallest: {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
