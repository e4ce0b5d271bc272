"""Disk cache for large generated splits: one Arrow file per (task parameters, split, seed, size).

Files live under $ARCHBENCH_CACHE (default ~/.cache/archbench/tasks), are written atomically (a temporary file, then
a rename), and are in Arrow's streaming format with columns `inputs` and `targets` (fixed-size lists of int16, or
int32 for vocabularies beyond int16), so `datasets.Dataset.from_file(path)` opens them too. Only splits of at least
`task.cache_min_tokens` tokens are cached (ARCHBENCH_CACHE_MIN_TOKENS overrides it for every task; tests set it with
a temporary ARCHBENCH_CACHE); ARCHBENCH_NO_CACHE=1 turns the cache off. The key leaves out what does not change the
data (split sizes of other splits, labels such as `setting`), and includes the task's `version`, which a generator
bumps when its output changes.
"""

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

MIN_TOKENS = 1 << 25  # ~33M tokens: about a second or more of generation for the vectorized generators


class Cached(Protocol):
    """What the cache reads of a task (tasks/base.py's Task): its fields (the key), its threshold and its version."""

    cache_min_tokens: int | None
    version: int


def cache_dir() -> Path:
    return Path(os.environ.get("ARCHBENCH_CACHE") or Path.home() / ".cache" / "archbench") / "tasks"


def min_tokens(task: Cached) -> int | None:
    """The smallest split (in tokens) to cache, or None for none: a task that is never cached says None."""
    if task.cache_min_tokens is None or os.environ.get("ARCHBENCH_NO_CACHE", "") not in ("", "0"):
        return None
    env = os.environ.get("ARCHBENCH_CACHE_MIN_TOKENS")
    return int(env) if env else task.cache_min_tokens


def key(task: Cached, split: str, seed: int, n: int) -> str:
    # which fields change no example is declared with every other config key's role; imported here, not at the top:
    # importing harness runs its resolvers, which import tasks (the one import of harness in tasks/)
    from harness.record.keys import NOT_DATA

    params = dataclasses.asdict(task) if dataclasses.is_dataclass(task) else dict(vars(task))
    params = {k: v for k, v in params.items() if k not in NOT_DATA}
    cls = type(task)
    blob = json.dumps(
        {
            "task": f"{cls.__module__}.{cls.__qualname__}",
            "version": task.version,
            "params": params,
            "split": split,
            "seed": seed,
            "n": n,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def path_for(task: Cached, split: str, seed: int, n: int) -> Path:
    safe_split = "".join(c if c.isalnum() else "_" for c in split)
    return cache_dir() / f"{type(task).__name__}-{safe_split}-{key(task, split, seed, n)}.arrow"


def load_or_make(
    task: Cached, split: str, seed: int, n: int, make: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """The split's (inputs, targets): from the cache if it holds them, else made (and cached if large)."""
    threshold = min_tokens(task)
    if threshold is None or n * task.max_seq_len < threshold:
        return make()
    import pyarrow as pa  # here, not at the top: a run whose splits are too small to cache never needs it

    path = path_for(task, split, seed, n)
    if path.exists():
        try:
            return read(path)
        except (OSError, pa.ArrowException, ValueError) as e:
            log.warning("cached split %s is unreadable (%s): generating it again", path, e)
    inputs, targets = make()
    try:
        write(path, inputs, targets)
    except OSError as e:  # a read-only or full disk costs the cache, not the run
        log.warning("could not cache split to %s: %s", path, e)
    return inputs, targets


def write(path: Path, inputs: np.ndarray, targets: np.ndarray) -> None:
    import pyarrow as pa

    n, width = inputs.shape
    big = max(int(inputs.max(initial=0)), int(targets.max(initial=0))) > np.iinfo(np.int16).max
    dtype = np.int32 if big else np.int16
    columns = {
        name: pa.FixedSizeListArray.from_arrays(pa.array(a.astype(dtype).reshape(-1)), width)
        for name, a in (("inputs", inputs), ("targets", targets))
    }
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # a shared cache folder: readable by the group where the umask says so
    try:
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    out = []
    for name in ("inputs", "targets"):
        column = table.column(name).combine_chunks()
        width = column.type.list_size
        out.append(column.flatten().to_numpy().astype(np.int64).reshape(-1, width))
    return out[0], out[1]
