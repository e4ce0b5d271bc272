"""Generator speed: examples/s and tokens/s of every task in conf/task/ (its configured sizes), then the check that
100,000 MQAR examples at length 256 take under 2 s.

    python benchmarks/task_generators.py [--examples 10000] [--repeats 3] [--only mqar,listops]

Each generator runs on `--examples` examples (or its task's num_train, if fewer), timed as the median of `--repeats`,
without the disk cache. lm_text times loading its text through `datasets` and cutting all three splits.
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

import harness  # noqa: F401  (registers the config resolvers, e.g. ${task_width:...})
from tasks.lm_text import LMText
from tasks.mqar import MQAR

CONF = Path(__file__).resolve().parents[1] / "conf"


def median_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated task names (default: every task in conf/task/)")
    args = p.parse_args(argv)
    names = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
    if args.only:
        names = [n for n in names if n in args.only.split(",")]

    print(f"{'task':<26}{'seq_len':>8}{'examples':>10}{'seconds':>9}{'examples/s':>12}{'tokens/s':>13}")
    with initialize_config_module(config_module="conf", version_base="1.3"):
        for name in names:
            task = instantiate(compose(config_name="config", overrides=[f"task={name}"]).task)
            task.check()
            if isinstance(task, LMText):
                seconds = median_of(lambda t=task: t.splits(0), args.repeats)
                n = sum(len(s) for s in task.splits(0).values())
            else:
                n = min(args.examples, task.num_train)
                seconds = median_of(
                    lambda t=task, n=n: t.generate_split("train", n, np.random.default_rng(0)), args.repeats
                )
            print(
                f"{name:<26}{task.seq_len:>8}{n:>10,}{seconds:>9.3f}{n / seconds:>12,.0f}"
                f"{n * task.seq_len / seconds:>13,.0f}"
            )

    print("\nMQAR, 100,000 examples at length 256, vocab 8,192 (goal: under 2 s):")
    for kv in (4, 16, 64):
        task = MQAR(vocab_size=8192, seq_len=256, num_kv_pairs=kv)
        seconds = median_of(lambda t=task: t.generate(100_000, np.random.default_rng(0)), args.repeats)
        print(f"  num_kv_pairs={kv:<3} {seconds:.2f} s  {'ok' if seconds < 2 else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
