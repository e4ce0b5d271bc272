"""Experiment loggers: wandb (offline unless configured otherwise) or none. Built per run by the CLI."""

import os
import time
from pathlib import Path

from harness.record.results import write_text_atomic

ID_FILE = "wandb_id"  # in a run's folder: the wandb run its attempts log to


class NullLogger:
    def __init__(self, **_):
        pass

    def log(self, row: dict, step: int) -> None:
        pass

    def summary(self, values: dict) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbLogger(NullLogger):
    """A dashboard with no manual setup: group = sweep or experiment name (group by it), job_type = task, tags =
    label values, name = labels + seed; config = the resolved config plus `labels` (filter or group by
    labels.mixer, labels.task, ...), `run_id` and `overrides`, which `archbench-board --wandb` reads back; history
    = the eval rows at their training step, with the interval's mean training loss and gradient norm, the learning
    rate, tokens seen and tokens/s; summary = final metrics and costs (wall_seconds added at finish). An attempt that
    resumes from a checkpoint (`resume_from`) continues the wandb run of the attempt that saved it (its id, derived
    from the run id, is kept in that attempt's folder); a fresh start, a deliberate rerun of a completed run included,
    opens a new wandb run.
    `finish()` must run after every run (the CLI calls it in a `finally`), or the next run of a multirun would
    reuse this one's id."""

    def __init__(
        self,
        *,
        project: str,
        entity: str | None = None,
        mode: str = "offline",
        group: str,
        job_type: str,
        tags: list[str],
        name: str,
        config: dict,
        dir: str,
        labels: dict,
        overrides: list[str],
        run_id: str,
        resume_from: str | Path | None = None,
        **_,
    ):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.start, self.summary_keys = time.perf_counter(), set()
        self.id = continued_id(run_id, resume_from) or f"{run_id}-{time.time_ns() // 1_000_000:x}"
        write_text_atomic(Path(dir) / ID_FILE, self.id + "\n")  # for the attempt that resumes from this one
        full = {**config, "labels": labels, "run_id": run_id, "overrides": overrides}
        self.run = wandb.init(
            project=project,
            entity=entity,
            mode=mode,
            group=group,
            job_type=job_type,
            tags=tags,
            name=name,
            config=full,
            dir=dir,
            id=self.id,
            resume="allow",
            reinit="finish_previous",
        )

    def log(self, row: dict, step: int) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def summary(self, values: dict) -> None:
        for key, value in values.items():
            if value is not None:
                self.run.summary[key] = value
                self.summary_keys.add(key)

    def finish(self, exit_code: int = 0) -> None:
        if "wall_seconds" not in self.summary_keys:
            self.run.summary["wall_seconds"] = time.perf_counter() - self.start
        self.run.finish(exit_code=exit_code)


def continued_id(run_id: str, resume_from: str | Path | None) -> str | None:
    """The wandb id of the attempt whose checkpoint this one resumes, if it was of this run id (not of other code)."""
    if resume_from is None or not Path(resume_from).exists():
        return None
    path = Path(resume_from).parent / ID_FILE
    found = path.read_text().strip() if path.is_file() else ""
    return found if found.startswith(f"{run_id}-") else None
