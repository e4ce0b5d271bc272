"""What `archbench` checks before anything runs (the Preflight callback: every job's config, the model on the meta
device, the folders writable), how it stops (`Stop`: one line and an exit code), and the count of a sweep's runs at
its end."""

import copy
import logging
import time

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from harness import grammar
from harness.record import results
from harness.run import distributed, paths, search
from harness.run.build import ConfigError, check, check_writable

log = logging.getLogger("archbench")


class Stop(BaseException):
    """Raised by the callbacks to stop before anything runs: a BaseException, so that Hydra (which turns a callback's
    exceptions into warnings) lets it through to `main`, the one place that prints it and exits with `code`."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# exit codes (README, "Exit codes"): 0 every run completed (or was skipped as completed); 1 a run failed or diverged
# (its record is written); 2 bad input: nothing ran, nothing was written
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def _job_config(config: DictConfig) -> DictConfig:
    job = copy.deepcopy(config)
    with read_write(job), open_dict(job):
        job.pop("hydra", None)
    return job


class Preflight(Callback):
    """Everything that can be known before training, checked before it: every field of every job against its schema
    and the model built on the meta device (a bad cell of a sweep stops the sweep before any job has trained), and
    the results folder and the run or sweep folder writable. Any failure is one line and exit code 2; nothing is
    written. At the end of a sweep, says how many of its runs completed, failed or diverged."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check(_job_config(config))
            paths.check_outputs(config, sweep=False)  # before check_writable creates any folder
            check_writable(config.paths.results, "paths.results")
            check_writable(config.hydra.run.dir, "hydra.run.dir")
        except (ConfigError, HydraException, OmegaConfBaseException) as e:
            raise Stop(one_line(e)) from None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            if distributed.size_from_env() > 1:
                raise ConfigError("torchrun runs one run over its processes: drop -m (--multirun)")
            paths.check_outputs(config, sweep=True)  # subdir as job 0 resolves it; per job below where jobs are known
            self._check_jobs(config)
            check_writable(config.paths.results, "paths.results")
            check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")
        except (ConfigError, HydraException, OmegaConfBaseException, ValueError) as e:
            raise Stop(one_line(e)) from None

    def _check_jobs(self, config: DictConfig) -> None:
        if config.hydra.sweeper.get("_target_") == search.OPTUNA_SWEEPER:  # trials come one by one: check the space
            n = search.check(config, GlobalHydra.instance().config_loader())
            log.info(
                "search over %d parameters: options, objectives and fixed overrides checked; a trial that "
                "cannot be built is a failed trial with the worst value",
                n,
            )
            return
        if config.hydra.sweeper.get("_target_") not in (grammar.BASIC_SWEEPER, grammar.RACE_SWEEPER):
            log.info("sweeper %s: jobs are checked as they start", config.hydra.sweeper.get("_target_"))
            return
        loader = GlobalHydra.instance().config_loader()
        params = [f"{k}={v}" for k, v in (config.hydra.sweeper.params or {}).items()]
        jobs = grammar.jobs([*params, *config.hydra.overrides.task], loader)
        swept = [o for o in jobs[0] if any(o not in job for job in jobs)] if len(jobs) > 1 else []
        master, t0 = HydraConfig.instance().cfg, time.perf_counter()
        try:
            for i, job in enumerate(jobs):
                try:
                    job_cfg = loader.load_sweep_config(master_config=config, sweep_overrides=list(job))
                    with read_write(job_cfg), open_dict(job_cfg):
                        job_cfg.hydra.job.num = i  # as the launcher will, for hydra.sweep.subdir
                    HydraConfig.instance().set_config(job_cfg)  # as the launcher will, for ${hydra:...}
                    check(_job_config(job_cfg), memory=_local(config))
                    paths.check_outputs(job_cfg, sweep=True)
                except (ConfigError, HydraException, OmegaConfBaseException) as e:
                    where = " ".join(o for o in job if o.split("=")[0] in {s.split("=")[0] for s in swept})
                    raise ConfigError(f"{one_line(e)} (job {i}{': ' + where if where else ''})") from None
        finally:
            HydraConfig.instance().cfg = master
        log.info("checked the configs of %d jobs in %.1f s", len(jobs), time.perf_counter() - t0)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        """Count the sweep's records by status; a sweep with failed or diverged runs exits 1 (see `main`)."""
        global SWEEP_FAILED
        counts: dict[str, int] = {}
        for r in results.load_records([config.hydra.sweep.dir]):
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        bad = counts.get("failed", 0) + counts.get("diverged", 0)
        in_search = config.hydra.sweeper.get("_target_") == search.OPTUNA_SWEEPER
        SWEEP_FAILED = bad > 0 and not in_search  # failed trials are part of a search
        detail = ", ".join(f"{counts[k]} {k}" for k in results.STATUSES if counts.get(k))
        print(
            f"sweep {config.hydra.sweep.dir}: {sum(counts.values())} runs: {detail or 'none'}"
            + (" (see [k failed] on the board, and each record's error)" if bad else "")
        )


SWEEP_FAILED = False  # set at the end of a sweep; `main` turns it into exit code 1
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher")  # the jobs run on this machine: its memory is theirs


def _local(config: DictConfig) -> bool:
    return str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1] in LOCAL_LAUNCHERS


def one_line(e: BaseException) -> str:
    """Hydra's multi-line messages (missing option with the list of available ones) folded into one line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    if "Config search path:" in lines:
        lines = lines[: lines.index("Config search path:")]
    head = lines[0]
    if len(lines) > 1 and lines[1].startswith("Available options"):
        head += f" (available: {', '.join(lines[2:])})"
    elif len(lines) > 1:
        head += " " + " ".join(lines[1:])
    return head
