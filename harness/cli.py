"""`archbench`: the Hydra app. Validates the config before any work, builds model and task, trains, writes the
record. One run, or a sweep with `-m`; `archbench suite=quick` is the main job."""

import contextlib
import copy
import gc
import logging
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import hydra
import torch
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from harness import results, search
from harness.checkpoint import FILE as CHECKPOINT
from harness.checkpoint import Checkpointer
from harness.hybrid import build_model
from harness.train import Diverged, TrainConfig, seed_everything, train
from models.mixers.base import contract_errors

log = logging.getLogger("archbench")

LABELS = ("model", "model/mixer", "model/norm", "model/ffn", "model/position", "task", "suite", "experiment")


class ConfigError(ValueError):
    """A config that cannot run. Reported in one line, exit code 2, and no record is written."""


def build(cfg: DictConfig, meta: bool = False):
    """Instantiate task, model and trainer settings, checking every field a run depends on. `meta` builds the model
    on the meta device: shapes and checks without memory or weight init (for validating sweeps)."""
    task = _instantiate("task", cfg.task)
    _check("task", task.check)
    train_cfg = _instantiate("trainer", cfg.trainer, lambda c: TrainConfig(**OmegaConf.to_container(c)))
    _check("", lambda: train_cfg.check(task.num_train))
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = _instantiate("model", cfg, build_model)  # model.pattern: harness/hybrid.py
    if errors := [e for mixer in {type(b.mixer) for b in model.blocks} for e in contract_errors(mixer)]:
        raise ConfigError(f"model.mixer: {'; '.join(errors)} (models/mixers/base.py)")
    if model.max_seq_len < task.max_seq_len:  # the longest split, e.g. an extrapolation test length
        what = "task.seq_len" if task.max_seq_len == task.seq_len else "task.max_seq_len (longest test split)"
        raise ConfigError(f"{what}={task.max_seq_len} is longer than model.max_seq_len={model.max_seq_len}")
    if model.vocab_size < task.vocab_size:
        raise ConfigError(f"task.vocab_size={task.vocab_size} is larger than model.vocab_size={model.vocab_size}")
    return task, model, train_cfg


def _instantiate(group: str, node: DictConfig, make=instantiate):
    try:
        return make(node)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise ConfigError(f"{group}.{cause}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{group}.{e}") from None


def _check(prefix: str, fn) -> None:
    try:
        fn()
    except ValueError as e:
        raise ConfigError(f"{prefix}.{e}" if prefix else str(e)) from None


def check(cfg: DictConfig) -> None:
    """Raise ConfigError for anything that would stop `run` before training. The model is built on the meta device;
    an error found there is confirmed by a real build, since a mixer may do what meta tensors cannot."""
    OmegaConf.to_container(cfg, resolve=True)
    try:
        build(cfg, meta=True)
    except Exception:
        build(cfg)


class ValidateSweep(Callback):
    """Before a multirun launches its first job, compose and check every job of the sweep: a bad cell stops the
    sweep at once (one line, exit code 2) instead of after the jobs before it have trained."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if config.hydra.sweeper.get("_target_") == search.OPTUNA_SWEEPER:  # trials come one by one: check the space
            try:
                n = search.check(config, GlobalHydra.instance().config_loader())
            except (ValueError, HydraException, OmegaConfBaseException) as e:
                _exit_config_error(one_line(e))
            log.info("search over %d parameters: options, objectives and fixed overrides checked; a trial that "
                     "cannot be built is a failed trial with the worst value", n)
            return
        if config.hydra.sweeper.get("_target_") != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
            log.info("sweeper %s: jobs are checked as they start", config.hydra.sweeper.get("_target_"))
            return
        loader = GlobalHydra.instance().config_loader()
        params = [f"{k}={v}" for k, v in (config.hydra.sweeper.params or {}).items()]
        try:
            overrides = OverridesParser.create(config_loader=loader).parse_overrides(
                [*params, *config.hydra.overrides.task])
            [jobs] = BasicSweeper.split_arguments(overrides, None)
        except (HydraException, OmegaConfBaseException) as e:
            _exit_config_error(one_line(e))
        swept = [o for o in jobs[0] if any(o not in job for job in jobs)] if len(jobs) > 1 else []
        master, t0 = HydraConfig.instance().cfg, time.perf_counter()
        try:
            for i, job in enumerate(jobs):
                try:
                    job_cfg = loader.load_sweep_config(master_config=config, sweep_overrides=list(job))
                    HydraConfig.instance().set_config(job_cfg)  # as the launcher will, for ${hydra:...}
                    job_cfg = copy.deepcopy(job_cfg)
                    with read_write(job_cfg), open_dict(job_cfg):
                        del job_cfg["hydra"]
                    check(job_cfg)
                except (ConfigError, HydraException, OmegaConfBaseException) as e:
                    where = " ".join(o for o in job if o.split("=")[0] in {s.split("=")[0] for s in swept})
                    _exit_config_error(f"{one_line(e)} (job {i}{': ' + where if where else ''})")
        finally:
            HydraConfig.instance().cfg = master
        log.info("checked the configs of %d jobs in %.1f s", len(jobs), time.perf_counter() - t0)


def _exit_config_error(message: str):
    # sys.exit, not an exception: Hydra turns a callback's exceptions into warnings and would launch the sweep.
    print(f"archbench: error: {message}", file=sys.stderr)
    sys.exit(2)


def labels_of(choices, pattern=None) -> dict:
    """Hydra's choices of the labelled groups; a hybrid's mixer label is its pattern, e.g. hyena+attention."""
    labels = {key.split("/")[-1]: value for key, value in choices.items() if key in LABELS and value is not None}
    if pattern:
        labels["mixer"] = "+".join(str(e.get("name") if isinstance(e, dict) else e) for e in pattern)
    return labels


def run(cfg: DictConfig) -> float | tuple[float, ...] | None:
    """Train one run and write its record. Returns the validation accuracy (None if the run did not complete), or in
    a search (harness/search.py) the objective(s), worst values for a run that failed, diverged or cannot be built."""
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    rid = results.run_id(config)
    labels = labels_of(hc.runtime.choices, config["model"].get("pattern"))
    results_root = Path(cfg.paths.results)

    seed_everything(cfg.seed, deterministic=cfg.trainer.deterministic)  # before the model draws its weights
    # status stays None only if the run is interrupted (Ctrl-C): then no record, and the checkpoint resumes it.
    record = {
        "schema": results.SCHEMA, "run_id": rid, "status": None, "error": None, "labels": labels,
        "overrides": list(hc.overrides.task), "config": config, "seed": cfg.seed, "metrics": {}, "cost": {},
        "env": results.environment(),
        "timestamps": {"started": _now()},
    }
    try:
        task, model, train_cfg = build(cfg)
    except ConfigError as e:
        if not search.active(cfg):
            raise
        # in a search, a combination that cannot be built (rope with a mixer that takes no positions) is a failed
        # trial with the worst value: the sampler learns to avoid it, and the study goes on
        record.update(status="failed", error=f"ConfigError: {e}")
        record["timestamps"]["finished"] = _now()
        results.write_json_atomic(out_dir / results.RECORD, record)
        log.error("trial %s cannot be built: %s", rid, e)
        return search.returned(cfg, record)

    if cfg.skip_completed and (prior := results.find_completed(results_root, rid)) is not None:
        log.info("run %s already completed in %s: skipping (skip_completed=false reruns it)", rid, prior["path"])
        prior.pop("path")
        results.write_json_atomic(out_dir / results.RECORD, prior)
        return search.returned(cfg, prior)

    record["cost"] = {"params": model.num_params(), "params_non_embedding": model.num_params(non_embedding=True),
                      "flops_per_token": model.flops_per_token(task.seq_len)}
    log.info("run %s  %s  seed=%s  params=%s", rid, " ".join(f"{k}={v}" for k, v in labels.items()), cfg.seed,
             f"{record['cost']['params']:,}")
    checkpointer = Checkpointer(out_dir / CHECKPOINT,
                                resume_from=results.find_checkpoint(results_root, rid) if cfg.resume else None,
                                on_save=lambda path: results.mark_in_progress(results_root, rid, path))
    logger = None
    t0 = time.perf_counter()
    try:
        logger = instantiate(cfg.logger)(
            group=cfg.name, job_type=labels.get("task", "task"), tags=sorted(set(labels.values())),
            name="-".join([*(labels[k] for k in ("mixer", "norm", "ffn", "position") if k in labels),
                           labels.get("task", ""), f"s{cfg.seed}"]),
            config=config, dir=str(out_dir), labels=labels, overrides=record["overrides"])
        out = train(model, task.splits(cfg.seed), train_cfg, seed=cfg.seed, log_fn=logger.log,
                    checkpoint=checkpointer, flops_per_token=record["cost"]["flops_per_token"])
        out["metrics"].update(task.derived_metrics(out["metrics"]))
        record.update(status="completed", metrics=out["metrics"], history=out["history"])
        record["cost"].update(out["cost"])  # with MFU where the device's peak is known (harness/mfu.py), else None
        logger.summary({**out["metrics"], **record["cost"]})
    except Diverged as e:
        record.update(status="diverged", error=str(e))
        log.error("run %s diverged: %s", rid, e)
    except torch.cuda.OutOfMemoryError as e:  # the memory is freed after the run (app), so the next job can run
        record.update(status="failed", error=_oom_reason(e))
        log.error("run %s failed: %s", rid, record["error"])
    except Exception as e:  # a failing run is recorded, and the sweep goes on
        record.update(status="failed", error=f"{type(e).__name__}: {e}")
        log.error("run %s failed: %s\n%s", rid, record["error"], traceback.format_exc())
    finally:
        if record["status"] is not None:
            record["cost"]["wall_seconds"] = time.perf_counter() - t0
            record["timestamps"]["finished"] = _now()
            results.write_json_atomic(out_dir / results.RECORD, record)
        if record["status"] == "completed":  # a failed run keeps its checkpoint: rerunning it resumes from there
            results.mark_completed(results_root, rid, out_dir / results.RECORD)
            results.clear_in_progress(results_root, rid)
            checkpointer.remove()
        if logger is not None:  # after the record: a logger that fails to close costs no result
            try:
                if record["status"] not in (None, "completed"):  # why it ended, for the dashboard and --wandb
                    logger.summary({"status": record["status"], "error": record["error"]})
                logger.finish(exit_code=0 if record["status"] == "completed" else 1)
            except Exception as e:
                log.warning("run %s: the logger failed to finish (%s: %s); the record is written", rid,
                            type(e).__name__, e)
    m = record["metrics"]
    if record["status"] == "completed":
        log.info("run %s done: val/accuracy %.4f  test/accuracy %.4f  %.0f tokens/s", rid, m["val/accuracy"],
                 m["test/accuracy"], record["cost"]["tokens_per_second"] or 0)
    return search.returned(cfg, record)


def _oom_reason(e: BaseException) -> str:
    """"CUDA out of memory" and the first line of torch's message (what it tried to allocate)."""
    lines = str(e).strip().splitlines()
    detail = lines[0].removeprefix("CUDA out of memory.").strip() if lines else ""
    return "CUDA out of memory" + (f": {detail}" if detail else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def app(cfg: DictConfig) -> float | tuple[float, ...] | None:
    try:
        return run(cfg)
    except ConfigError as e:  # exit here: Hydra would add its own lines around an exception
        print(f"archbench: error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        free_memory()


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
    # Let Hydra's composition errors reach us, so that they become one line and exit code 2.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except (HydraException, OmegaConfBaseException) as e:
        print(f"archbench: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
