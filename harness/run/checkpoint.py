"""Checkpoints for exact resume: model, optimizer, scheduler, every RNG state and the data position, written
atomically (temporary file, fsync, rename) and loadable with `torch.load(..., weights_only=True)`: every value is a
tensor or a plain Python type, RNG states included."""

import logging
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.record.results import file_mode

log = logging.getLogger(__name__)

FILE = "checkpoint.pt"


def rng_state(*generators: torch.Generator) -> dict:
    """python, numpy, torch CPU, every CUDA device (if initialised) and the given generators."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "generators": [g.get_state() for g in generators],
    }


def set_rng_state(state: dict, *generators: torch.Generator) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    for g, s in zip(generators, state["generators"], strict=True):
        g.set_state(s)


def save(path: Path, state: dict) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename: a kill leaves the old file or the new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, file_mode())  # as a plainly created file: readable by the group where the umask says so
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass
class Checkpointer:
    """Where a run writes its checkpoint (its own folder), where an interrupted earlier attempt of the same config left
    one (`resume_from`, possibly in another folder), and whom to tell after each save (the CLI's in-progress
    marker). With a `run_id`, a checkpoint is resumed only if it was saved by a run of that id: never one trained by
    other code (a changed mixer) or on other kernels."""

    path: Path
    resume_from: Path | None = None
    on_save: Callable[[Path], None] | None = None
    run_id: str | None = None

    def load(self) -> dict | None:
        if self.resume_from is None or not Path(self.resume_from).exists():
            return None
        try:
            state = load(self.resume_from)
        except Exception as e:  # a damaged checkpoint costs the progress it held, never the run
            log.warning("cannot resume from %s (%s: %s): starting from step 0", self.resume_from, type(e).__name__, e)
            return None
        if self.run_id is not None and state.get("run_id") != self.run_id:
            log.warning(
                "not resuming from %s: it was saved by run %s, trained by other code or kernels than this run %s; "
                "starting from step 0",
                self.resume_from,
                state.get("run_id") or "(unknown)",
                self.run_id,
            )
            return None
        return state

    def save(self, state: dict) -> None:
        save(self.path, {**state, "run_id": self.run_id} if self.run_id is not None else state)
        if self.on_save is not None:
            self.on_save(self.path)
        if self.resume_from is not None and Path(self.resume_from).resolve() != Path(self.path).resolve():
            Path(self.resume_from).unlink(missing_ok=True)  # the new one supersedes the earlier attempt's
        self.resume_from = self.path

    def remove(self) -> None:
        for p in {Path(self.path), *([Path(self.resume_from)] if self.resume_from else [])}:
            p.unlink(missing_ok=True)
