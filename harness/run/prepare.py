"""`archbench-prepare`: tokenize a corpus once into token shards (tasks/lm_shards.py), ahead of the runs that read
them. Takes the same task overrides as `archbench` (the task is lm_text unless one is named), prints the folder:

    archbench-prepare task.data_files=corpus/ task.tokenizer=bpe task.vocab_size=8192 task.shards=data/corpus-bpe8k
    archbench task=lm_text task.data_files=corpus/ task.tokenizer=bpe task.vocab_size=8192 \\
        task.shards=data/corpus-bpe8k model=...

A folder that already holds shards for the same settings is reused; one made with another tokenizer or other data is
refused. Bad input: one line on stderr, exit code 2, nothing written.
"""

import argparse
import os
import sys
from pathlib import Path

from hydra import compose, initialize_config_module

import harness  # noqa: F401 (registers the config resolvers, e.g. ${python_stdlib:})
from harness.run.build import ConfigError, _check, _instantiate
from harness.run.cli import or_exit
from tasks import lm_shards
from tasks.lm_text import LMText


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="archbench-prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="task overrides, as for archbench: task.data_files=... ")
    parser.add_argument(
        "--num-proc", type=int, default=min(8, os.cpu_count() or 1), help="processes that tokenize (datasets.map)"
    )
    return parser.parse_args(argv)


def task_of(overrides: list[str]) -> LMText:
    """The lm_text task the overrides describe, every field checked (ConfigError naming the field)."""
    if not any(o.split("=")[0].lstrip("+~") == "task" for o in overrides):
        overrides = ["task=lm_text", *overrides]
    with initialize_config_module(version_base="1.3", config_module="conf"):
        cfg = compose("config", overrides=overrides)
    task = _instantiate("task", cfg.task)
    if not isinstance(task, LMText):
        raise ConfigError(
            f"task={type(task).__name__} has no token shards to prepare: archbench-prepare is for lm_text"
        )
    _check("task", task.check)
    return task


def prepare(args: argparse.Namespace) -> tuple[Path, dict]:
    if args.num_proc < 1:
        raise ConfigError(f"--num-proc={args.num_proc} must be at least 1")
    task = task_of(args.overrides)
    folder = task.shards_folder()
    try:
        return folder, lm_shards.prepare(task, folder, num_proc=args.num_proc)
    except ValueError as e:
        raise ConfigError(f"task.{e}") from None


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    folder, meta = or_exit("archbench-prepare", lambda: prepare(args))
    counts = ", ".join(f"{k} {v['tokens']:,} tokens / {v['bytes']:,} bytes" for k, v in meta["splits"].items())
    print(f"{Path(folder)}: {meta['dtype']}, vocab {meta['vocab_size']}; {counts}")


if __name__ == "__main__":
    main()
