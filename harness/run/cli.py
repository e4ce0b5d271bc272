"""`archbench`: the Hydra app. One run reads top to bottom in `run`: config -> record -> build -> train -> record
written (the board reads the records); the checks before any work are harness/run/preflight.py's. One run, or a sweep
with `-m`; `archbench suite=quick` is the main job."""

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
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.record import code, results
from harness.record.keys import labels_of
from harness.run import distributed, preflight, search, weights
from harness.run.build import ConfigError, build, layer_names, untrained_positions
from harness.run.checkpoint import FILE as CHECKPOINT
from harness.run.checkpoint import Checkpointer
from harness.run.identity import identify
from harness.run.preflight import EXIT_BAD_INPUT, EXIT_FAILED, Stop, one_line
from harness.run.train import Diverged, seed_everything, train

log = logging.getLogger("archbench")


def run(cfg: DictConfig) -> dict:
    """Train one run and write its record (harness/record/results.py); returns the record as written (status None
    if interrupted, which writes none). The steps, in order: config -> record -> build -> train -> record written
    (the board reads the records: harness/report/board.py)."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    results_root = Path(cfg.paths.results)
    world = distributed.current()
    record = new_record(cfg)
    seed_everything(cfg.seed, deterministic=cfg.trainer.deterministic)  # before the model draws its weights
    try:
        task, model, train_cfg = build(cfg)
        identify(record, model, task)  # the model's code and kernels join the run id
    except code.StaleCode as e:  # a sweep worker whose loaded code was edited since: recorded, and the sweep goes on
        return _not_started(record, out_dir, f"StaleCode: {e}", "run %s not started: %s")
    except ConfigError as e:
        if not search.active(cfg):
            raise
        # in a search, a combination that cannot be built (rope with a mixer that takes no positions) is a failed
        # trial with the worst value: the sampler learns to avoid it, and the study goes on
        return _not_started(record, out_dir, f"ConfigError: {e}", "trial %s cannot be built: %s")
    if cfg.skip_completed and (prior := results.find_completed(results_root, record.run_id)) is not None:
        log.info(
            "run %s already completed in %s: skipping (skip_completed=false reruns it)", record.run_id, prior["path"]
        )
        prior.pop("path")
        if world.main:
            results.write_json_atomic(out_dir / results.RECORD, prior)
        return prior
    record.cost = model_costs(model, task)
    _log_start(record, cfg.seed)
    if (untrained := untrained_positions(model, task)) is not None:  # said, not refused: MHA-Abs does it on purpose
        log.warning(untrained)
    checkpointer = Checkpointer(  # found by config; resumed only if its run id (config, code, kernels) is this one's
        out_dir / CHECKPOINT,
        resume_from=results.find_checkpoint(results_root, record.config_id) if cfg.resume else None,
        on_save=lambda path: results.mark_in_progress(results_root, record.config_id, path),
        run_id=record.run_id,
    )
    if not world.main:
        return follow(record, (task, model, train_cfg), cfg.seed, checkpointer)
    logger = None
    t0 = time.perf_counter()
    try:
        logger = open_logger(cfg, record, out_dir, checkpointer)
        _train(cfg, record, (task, model, train_cfg), checkpointer, logger, out_dir)
    except Exception as e:  # a failing run is recorded, and the sweep goes on
        record.status, record.error = _outcome(record.run_id, e)
    finally:  # after Ctrl-C (status None) nothing is written: the checkpoint resumes the run
        written = record.status is not None and _write_record(out_dir, record, results_root, checkpointer, t0)
        _close_logger(logger, record)  # after the record: a logger that fails to close costs no result
    _log_end(record, written, out_dir / results.RECORD)
    if not written:
        record.status, record.error = "failed", record.error or "the record could not be written"
    return record.to_dict()


def new_record(cfg: DictConfig) -> results.Record:
    """The record of the run `cfg` (status None until it ends): its resolved config, labels, overrides, environment
    and start time; its run id from the config until the model is built."""
    hc = HydraConfig.get()
    config = OmegaConf.to_container(cfg, resolve=True)
    try:
        layers = layer_names(config["model"], hc.runtime.choices.get("model/mixer"))
    except ValueError as e:  # a plan the build check refuses too: the same one line
        raise ConfigError(f"model.{e}") from None
    return results.Record(
        run_id=results.run_id(config),
        labels=labels_of(hc.runtime.choices, layers),
        overrides=list(hc.overrides.task),
        config=config,
        derived=derived_keys(cfg),
        seed=cfg.seed,
        env={**results.environment(), "world_size": distributed.current().size},  # how, not what: docs/distributed.md
        timestamps={"started": _now()},
    )


def _not_started(record: results.Record, out_dir: Path, error: str, message: str) -> dict:
    """A run that could not be built, recorded as failed (a search's trial, a stale sweep worker)."""
    record.status, record.error = "failed", error
    record.timestamps["finished"] = _now()
    results.write_json_atomic(out_dir / results.RECORD, record.to_dict())
    log.error(message, record.run_id, error.partition(": ")[2])
    return record.to_dict()


def model_costs(model: Any, task: Any) -> dict:
    """What the model costs before it trains: its parameters and training FLOPs per token (harness/run/mfu.py)."""
    return {
        "params": model.num_params(),
        "params_non_embedding": model.num_params(non_embedding=True),  # Kaplan et al.'s N: no vocabulary matrices
        "params_embedding": model.num_embedding_params(),  # token embedding, head (tied once), position table
        "flops_per_token": model.flops_per_token(task.seq_len),  # the backbone's; the head is charged per target
        "head_flops_per_scored": model.head_flops_per_scored(),
    }


def _log_start(record: results.Record, seed: int) -> None:
    labels = " ".join(f"{k}={v}" for k, v in record.labels.items())
    log.info("run %s  %s  seed=%s  params=%s", record.run_id, labels, seed, f"{record.cost['params']:,}")


def open_logger(cfg: DictConfig, record: results.Record, out_dir: Path, checkpointer: Checkpointer) -> Any:
    """The run's metrics logger (cfg.logger: wandb or none), named and tagged by the run's labels."""
    labels = record.labels
    name = [*(labels[k] for k in ("mixer", "norm", "ffn", "position") if k in labels), labels.get("task", "")]
    return instantiate(cfg.logger)(
        group=cfg.name,
        job_type=labels.get("task", "task"),
        tags=sorted(set(labels.values())),
        name="-".join([*name, f"s{cfg.seed}"]),
        config=record.config,
        dir=str(out_dir),
        labels=labels,
        overrides=record.overrides,
        run_id=record.run_id,
        resume_from=checkpointer.resume_from,  # a resumed attempt continues the same wandb run
    )


def _train(
    cfg: DictConfig, record: results.Record, built: tuple, checkpointer: Checkpointer, logger: Any, out_dir: Path
) -> None:
    """Train the built (task, model, trainer config), keep the weights, and fill the record as completed."""
    task, model, train_cfg = built
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
        record.files["weights"] = weights.save(model, out_dir, {"run_id": record.run_id}, out.get("weights"))
    record.status, record.metrics, record.history = "completed", out["metrics"], out["history"]
    record.cost.update(out["cost"])  # with MFU where the device's peak is known (harness/run/mfu.py), else None
    logger.summary({**out["metrics"], **record.cost})


def follow(record: results.Record, built: tuple, seed: int, checkpointer: Checkpointer) -> dict:
    """A process of a data-parallel run other than rank 0: trains its share of every step (and reads rank 0's
    checkpoint to resume); rank 0 logs, saves and writes the one record."""
    task, model, train_cfg = built
    try:
        train(model, task.splits(seed), train_cfg, seed=seed, checkpoint=checkpointer)
        record.status = "completed"
    except Diverged as e:  # every rank sees the same loss: rank 0 records it
        record.status, record.error = "diverged", str(e)
    return record.to_dict()


def _outcome(rid: str, e: Exception) -> tuple[str, str]:
    """The status and error of a run that raised `e`: diverged, or failed (out of memory: the memory is freed after
    the run, by `app`, so the next job can run)."""
    if isinstance(e, Diverged):
        log.error("run %s diverged: %s", rid, e)
        return "diverged", str(e)
    if isinstance(e, torch.cuda.OutOfMemoryError):
        log.error("run %s failed: %s", rid, reason := _oom_reason(e))
        return "failed", reason
    log.error("run %s failed: %s\n%s", rid, reason := f"{type(e).__name__}: {e}", traceback.format_exc())
    return "failed", reason


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


def _close_logger(logger: Any, record: results.Record) -> None:
    """Finish the logger (with why the run ended, for the dashboard and --wandb); a failure to finish is a warning."""
    if logger is None:
        return
    try:
        if record.status not in (None, "completed"):
            logger.summary({"status": record.status, "error": record.error})
        logger.finish(exit_code=0 if record.status == "completed" else 1)
    except Exception as e:
        log.warning(
            "run %s: the logger failed to finish (%s: %s); the record is written", record.run_id, type(e).__name__, e
        )


def _log_end(record: results.Record, written: bool, where: Path) -> None:
    m = record.metrics
    if record.status == "completed" and written:
        log.info(
            "run %s done: val/accuracy %.4f  test/accuracy %.4f  %.0f tokens/s; record: %s",
            record.run_id,
            m["val/accuracy"],
            m["test/accuracy"],
            record.cost["tokens_per_second"] or 0,
            where,
        )
    elif written:
        log.error("run %s %s (%s); record: %s", record.run_id, record.status, record.error, where)


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


def main() -> None:
    """`archbench`: exit 0 when every run completed, 1 when one failed or diverged (its record is written), 2 for bad
    input (nothing ran, nothing was written); one line on stderr for either."""
    preflight.SWEEP_FAILED = False
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
    if preflight.SWEEP_FAILED:
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


if __name__ == "__main__":
    main()
