"""Experiment loggers: wandb (offline unless configured otherwise) or none. Built per run by the CLI."""

import os
import time


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
    = the eval rows at their training step; summary = final metrics and costs (wall_seconds added at finish).
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
        **_,
    ):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.start, self.summary_keys = time.perf_counter(), set()
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
