"""`archbench`: the Hydra app. Validates the config before any work, builds model and task, trains, writes the
record. One run, or a sweep with `-m`; `archbench suite=quick` is the main job."""

import copy
import gc
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from harness import grammar
from harness.record import code, results
from harness.record.keys import labels_of
from harness.run import distributed, paths, search, weights
from harness.run.build import ConfigError, build, check, check_writable, layer_names, untrained_positions
from harness.run.checkpoint import FILE as CHECKPOINT
from harness.run.checkpoint import Checkpointer
from harness.run.identity import identify
from harness.run.train import Diverged, seed_everything, train

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


def run(cfg: DictConfig) -> dict:
    """Train one run and write its record (harness/record/results.py); returns the record as written (status None
    if interrupted, which writes none)."""
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    try:
        layers = layer_names(config["model"], hc.runtime.choices.get("model/mixer"))
    except ValueError as e:  # a plan the build check refuses too: the same one line
        raise ConfigError(f"model.{e}") from None
    labels = labels_of(hc.runtime.choices, layers)
    results_root = Path(cfg.paths.results)
    world = distributed.current()

    seed_everything(cfg.seed, deterministic=cfg.trainer.deterministic)  # before the model draws its weights
    # status stays None only if the run is interrupted (Ctrl-C): then no record, and the checkpoint resumes it.
    record = results.Record(
        run_id=results.run_id(config),  # until the model is built: then its code and kernels join the id
        labels=labels,
        overrides=list(hc.overrides.task),
        config=config,
        derived=derived_keys(cfg),
        seed=cfg.seed,
        env={**results.environment(), "world_size": world.size},  # processes: how, not what (docs/distributed.md)
        timestamps={"started": _now()},
    )
    try:
        task, model, train_cfg = build(cfg)
        identify(record, model, task)
    except code.StaleCode as e:  # a sweep worker whose loaded code was edited since: recorded, and the sweep goes on
        record.status, record.error = "failed", f"StaleCode: {e}"
        record.timestamps["finished"] = _now()
        results.write_json_atomic(out_dir / results.RECORD, record.to_dict())
        log.error("run %s not started: %s", record.run_id, e)
        return record.to_dict()
    except ConfigError as e:
        if not search.active(cfg):
            raise
        # in a search, a combination that cannot be built (rope with a mixer that takes no positions) is a failed
        # trial with the worst value: the sampler learns to avoid it, and the study goes on
        record.status, record.error = "failed", f"ConfigError: {e}"
        record.timestamps["finished"] = _now()
        results.write_json_atomic(out_dir / results.RECORD, record.to_dict())
        log.error("trial %s cannot be built: %s", record.run_id, e)
        return record.to_dict()
    rid = record.run_id

    if cfg.skip_completed and (prior := results.find_completed(results_root, rid)) is not None:
        log.info("run %s already completed in %s: skipping (skip_completed=false reruns it)", rid, prior["path"])
        prior.pop("path")
        if world.main:
            results.write_json_atomic(out_dir / results.RECORD, prior)
        return prior

    record.cost = {
        "params": model.num_params(),
        "params_non_embedding": model.num_params(non_embedding=True),  # Kaplan et al.'s N: no vocabulary matrices
        "params_embedding": model.num_embedding_params(),  # token embedding, head (tied once), position table
        "flops_per_token": model.flops_per_token(task.seq_len),  # the backbone's; the head is charged per target
        "head_flops_per_scored": model.head_flops_per_scored(),
    }
    log.info(
        "run %s  %s  seed=%s  params=%s",
        rid,
        " ".join(f"{k}={v}" for k, v in labels.items()),
        cfg.seed,
        f"{record.cost['params']:,}",
    )
    if (untrained := untrained_positions(model, task)) is not None:  # said, not refused: MHA-Abs does it on purpose
        log.warning(untrained)
    checkpointer = Checkpointer(  # found by config; resumed only if its run id (config, code, kernels) is this one's
        out_dir / CHECKPOINT,
        resume_from=results.find_checkpoint(results_root, record.config_id) if cfg.resume else None,
        on_save=lambda path: results.mark_in_progress(results_root, record.config_id, path),
        run_id=rid,
    )
    if not world.main:
        return follow(record, model, task, train_cfg, cfg.seed, checkpointer)
    logger = None
    t0 = time.perf_counter()
    try:
        logger = instantiate(cfg.logger)(
            group=cfg.name,
            job_type=labels.get("task", "task"),
            tags=sorted(set(labels.values())),
            name="-".join(
                [
                    *(labels[k] for k in ("mixer", "norm", "ffn", "position") if k in labels),
                    labels.get("task", ""),
                    f"s{cfg.seed}",
                ]
            ),
            config=config,
            dir=str(out_dir),
            labels=labels,
            overrides=record.overrides,
            run_id=rid,
            resume_from=checkpointer.resume_from,  # a resumed attempt continues the same wandb run
        )
        out = train(
            model,
            task.splits(cfg.seed),
            train_cfg,
            seed=cfg.seed,
            log_fn=logger.log,
            checkpoint=checkpointer,
            flops_per_token=record.cost["flops_per_token"],
            head_flops_per_scored=record.cost["head_flops_per_scored"],
        )
        out["metrics"].update(task.derived_metrics(out["metrics"]))
        if cfg.get("save_model", True):  # before the record says completed: a run that cannot keep them fails
            record.files["weights"] = weights.save(model, out_dir, {"run_id": rid})
        record.status, record.metrics, record.history = "completed", out["metrics"], out["history"]
        record.cost.update(out["cost"])  # with MFU where the device's peak is known (harness/run/mfu.py), else None
        logger.summary({**out["metrics"], **record.cost})
    except Diverged as e:
        record.status, record.error = "diverged", str(e)
        log.error("run %s diverged: %s", rid, e)
    except torch.cuda.OutOfMemoryError as e:  # the memory is freed after the run (app), so the next job can run
        record.status, record.error = "failed", _oom_reason(e)
        log.error("run %s failed: %s", rid, record.error)
    except Exception as e:  # a failing run is recorded, and the sweep goes on
        record.status, record.error = "failed", f"{type(e).__name__}: {e}"
        log.error("run %s failed: %s\n%s", rid, record.error, traceback.format_exc())
    finally:
        written = record.status is not None and _write_record(out_dir, record, results_root, checkpointer, t0)
        if logger is not None:  # after the record: a logger that fails to close costs no result
            try:
                if record.status not in (None, "completed"):  # why it ended, for the dashboard and --wandb
                    logger.summary({"status": record.status, "error": record.error})
                logger.finish(exit_code=0 if record.status == "completed" else 1)
            except Exception as e:
                log.warning(
                    "run %s: the logger failed to finish (%s: %s); the record is written", rid, type(e).__name__, e
                )
    m = record.metrics
    where = out_dir / results.RECORD
    if record.status == "completed" and written:
        log.info(
            "run %s done: val/accuracy %.4f  test/accuracy %.4f  %.0f tokens/s; record: %s",
            rid,
            m["val/accuracy"],
            m["test/accuracy"],
            record.cost["tokens_per_second"] or 0,
            where,
        )
    elif written:
        log.error("run %s %s (%s); record: %s", rid, record.status, record.error, where)
    if not written:
        record.status, record.error = "failed", record.error or "the record could not be written"
    return record.to_dict()


def follow(
    record: results.Record, model: torch.nn.Module, task: Any, train_cfg: Any, seed: int, checkpointer: Checkpointer
) -> dict:
    """A process of a data-parallel run other than rank 0: trains its share of every step (and reads rank 0's
    checkpoint to resume); rank 0 logs, saves and writes the one record."""
    try:
        train(model, task.splits(seed), train_cfg, seed=seed, checkpoint=checkpointer)
        record.status = "completed"
    except Diverged as e:  # every rank sees the same loss: rank 0 records it
        record.status, record.error = "diverged", str(e)
    return record.to_dict()


def _write_record(
    out_dir: Path, record: results.Record, results_root: Path, checkpointer: Checkpointer, t0: float
) -> bool:
    """Write the record (then, for a completed run, its marker, and drop its checkpoint). If the file system refuses,
    keep the checkpoint and the in-progress marker, save the record to the temporary folder instead, and say how to
    recover. Returns whether the record is where it belongs."""
    rid = record.run_id
    record.cost["wall_seconds"] = time.perf_counter() - t0
    record.timestamps["finished"] = _now()
    try:
        results.write_json_atomic(out_dir / results.RECORD, record.to_dict())
        if record.status == "completed":  # a failed run keeps its checkpoint: rerunning it resumes from there
            results.mark_completed(results_root, rid, out_dir / results.RECORD)
            results.clear_in_progress(results_root, record.config_id)
            checkpointer.remove()
        return True
    except OSError as e:
        fallback = Path(tempfile.gettempdir()) / f"archbench-{rid}-{results.RECORD}"
        try:
            results.write_json_atomic(fallback, record.to_dict())
            saved = (
                f"the record is saved to {fallback}: copy it to {out_dir / results.RECORD} when the folder is writable"
            )
        except OSError:
            saved = "the record could not be saved anywhere"
        kept = checkpointer.resume_from or checkpointer.path
        log.error(
            "run %s: could not write its record to %s (%s: %s); %s; its checkpoint, if any (%s), is kept, so "
            "rerunning the same command resumes from it",
            rid,
            out_dir,
            type(e).__name__,
            e,
            saved,
            kept,
        )
        return False


def derived_keys(cfg: DictConfig) -> list[str]:
    """The config fields whose value is an interpolation of another (model.vocab_size: ${task.vocab_size}): the board
    does not count their differences between tasks as another variant."""
    out = []

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif isinstance(v, str) and "${" in v:
                out.append(f"{prefix}{k}")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return sorted(out)


def _oom_reason(e: BaseException) -> str:
    """ "CUDA out of memory" and the first line of torch's message (what it tried to allocate)."""
    lines = str(e).strip().splitlines()
    detail = lines[0].removeprefix("CUDA out of memory.").strip() if lines else ""
    return "CUDA out of memory" + (f": {detail}" if detail else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def app(cfg: DictConfig) -> float | tuple[float, ...] | None:
    distributed.from_slurm()  # a SLURM job of several tasks: torch.distributed's variables from SLURM's
    try:
        distributed.init(cfg.trainer.device)  # under torchrun: join the run's process group
        record = run(cfg)
    except ConfigError as e:  # Hydra would add its own lines around an exception
        raise Stop(str(e)) from None
    finally:
        distributed.close()
        free_memory()
    if HydraConfig.get().mode == RunMode.RUN and record["status"] != "completed":
        raise Stop(f"the run {record['status']}: {record['error']}", EXIT_FAILED)  # a script can tell
    return search.returned(cfg, record)


def free_memory() -> None:
    """Release what a finished or failed job held (its model, optimizer, activations of an out-of-memory step), so
    that the next job of a sweep in this process (basic launcher, joblib worker) starts with the whole device."""
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


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


def main() -> None:
    """`archbench`: exit 0 when every run completed, 1 when one failed or diverged (its record is written), 2 for bad
    input (nothing ran, nothing was written); one line on stderr for either."""
    global SWEEP_FAILED
    SWEEP_FAILED = False
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's composition errors reach us: one line and exit code 2
    if (rank := distributed.rank_from_env()) > 0:  # under torchrun: rank 0 alone writes the run's folder and logs
        sys.argv += [
            f"hydra.run.dir=${{paths.results}}/.ranks/{rank}",
            "hydra.output_subdir=null",
            "hydra.job_logging.root.level=WARNING",
        ]
    try:
        app()
    except Stop as e:
        print(f"archbench: {'error' if e.code == EXIT_BAD_INPUT else 'failed'}: {e}", file=sys.stderr)
        sys.exit(e.code)
    except (HydraException, OmegaConfBaseException) as e:
        print(f"archbench: error: {one_line(e)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as e:  # a launcher's job lost to the cluster (submitit's UncompletedJobError after scancel)
        if type(e).__name__ != "UncompletedJobError":
            raise
        print(
            f"archbench: failed: a job did not complete ({one_line(e)}); rerun the same command: completed runs "
            "are skipped and interrupted ones resume from their checkpoints",
            file=sys.stderr,
        )
        sys.exit(EXIT_FAILED)
    if SWEEP_FAILED:
        sys.exit(EXIT_FAILED)


def or_exit(prog: str, fn: Callable[[], Any]) -> Any:
    """fn(), or, for bad input (a ConfigError, or Hydra's own errors), one line `<prog>: error: ...` on stderr and exit
    code 2: the convention of archbench's console scripts (archbench-prepare, archbench-eval)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return fn()
    except (ConfigError, HydraException, OmegaConfBaseException) as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # python -m harness.run.cli, torchrun -m harness.run.cli: the module's own classes, as
    from harness.run.cli import main as run_main  # the callbacks import it (not __main__'s copies of Stop)

    run_main()
