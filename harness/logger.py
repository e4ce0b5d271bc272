"""Experiment loggers: wandb (offline unless configured otherwise) or none. Built per run by the CLI."""

import os


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
    """group = sweep or experiment name, job_type = task, tags = labels, name = labels + seed, config = the
    resolved config as a plain dict. `finish()` must run after every run (the CLI calls it in a `finally`), or the
    next run of a multirun would reuse this one's id."""

    def __init__(self, *, project: str, entity: str | None = None, mode: str = "offline", group: str,
                 job_type: str, tags: list[str], name: str, config: dict, dir: str, **_):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=project, entity=entity, mode=mode, group=group, job_type=job_type,
                              tags=tags, name=name, config=config, dir=dir, reinit="finish_previous")

    def log(self, row: dict, step: int) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def summary(self, values: dict) -> None:
        for key, value in values.items():
            if value is not None:
                self.run.summary[key] = value

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)
