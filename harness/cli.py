"""`archbench`: the Hydra app. Validates the config before any work, builds model and task, trains, writes the
record. One run, or a sweep with `-m`; `archbench suite=quick` is the main job."""

import logging
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness import results
from harness.hybrid import build_model
from harness.train import Diverged, TrainConfig, seed_everything, train

log = logging.getLogger("archbench")

LABELS = ("model", "model/mixer", "model/norm", "model/ffn", "model/position", "task", "suite", "experiment")


class ConfigError(ValueError):
    """A config that cannot run. Reported in one line, exit code 2, and no record is written."""


def build(cfg: DictConfig):
    """Instantiate task, model and trainer settings, checking every field a run depends on."""
    task = _instantiate("task", cfg.task)
    _check("task", task.check)
    train_cfg = _instantiate("trainer", cfg.trainer, lambda c: TrainConfig(**OmegaConf.to_container(c)))
    _check("", lambda: train_cfg.check(task.num_train))
    model = _instantiate("model", cfg, build_model)  # model.pattern: harness/hybrid.py
    if model.max_seq_len < task.seq_len:
        raise ConfigError(f"task.seq_len={task.seq_len} is longer than model.max_seq_len={model.max_seq_len}")
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


def labels_of(choices) -> dict:
    return {key.split("/")[-1]: value for key, value in choices.items() if key in LABELS and value is not None}


def run(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    rid = results.run_id(config)
    labels = labels_of(hc.runtime.choices)
    results_root = Path(cfg.paths.results)

    seed_everything(cfg.seed, deterministic=cfg.trainer.deterministic)  # before the model draws its weights
    task, model, train_cfg = build(cfg)

    if cfg.skip_completed and (prior := results.find_completed(results_root, rid)) is not None:
        log.info("run %s already completed in %s: skipping (skip_completed=false reruns it)", rid, prior["path"])
        prior.pop("path")
        results.write_json_atomic(out_dir / results.RECORD, prior)
        return prior["metrics"].get("val/accuracy")

    record = {
        "schema": results.SCHEMA, "run_id": rid, "status": "failed", "error": None, "labels": labels,
        "overrides": list(hc.overrides.task), "config": config, "seed": cfg.seed, "metrics": {},
        "cost": {"params": model.num_params(), "params_non_embedding": model.num_params(non_embedding=True),
                 "flops_per_token": model.flops_per_token(task.seq_len)},
        "env": results.environment(),
        "timestamps": {"started": _now()},
    }
    log.info("run %s  %s  seed=%s  params=%s", rid, " ".join(f"{k}={v}" for k, v in labels.items()), cfg.seed,
             f"{record['cost']['params']:,}")
    logger = None
    t0 = time.perf_counter()
    try:
        logger = instantiate(cfg.logger)(
            group=cfg.name, job_type=labels.get("task", "task"), tags=sorted(set(labels.values())),
            name="-".join([*(labels[k] for k in ("mixer", "norm", "ffn", "position") if k in labels),
                           labels.get("task", ""), f"s{cfg.seed}"]),
            config=config, dir=str(out_dir))
        out = train(model, task.splits(cfg.seed), train_cfg, seed=cfg.seed, log_fn=logger.log)
        out["metrics"].update(task.derived_metrics(out["metrics"]))
        record.update(status="completed", metrics=out["metrics"], history=out["history"])
        record["cost"].update(out["cost"])
        logger.summary({**out["metrics"], **record["cost"]})
    except Diverged as e:
        record.update(status="diverged", error=str(e))
        log.error("run %s diverged: %s", rid, e)
    except Exception as e:  # a failing run is recorded, and the sweep goes on
        record.update(status="failed", error=f"{type(e).__name__}: {e}")
        log.error("run %s failed: %s\n%s", rid, record["error"], traceback.format_exc())
    finally:
        if logger is not None:
            logger.finish(exit_code=0 if record["status"] == "completed" else 1)
        record["cost"]["wall_seconds"] = time.perf_counter() - t0
        record["timestamps"]["finished"] = _now()
        results.write_json_atomic(out_dir / results.RECORD, record)
        if record["status"] == "completed":
            results.mark_completed(results_root, rid, out_dir / results.RECORD)
    m = record["metrics"]
    if record["status"] == "completed":
        log.info("run %s done: val/accuracy %.4f  test/accuracy %.4f  %.0f tokens/s", rid, m["val/accuracy"],
                 m["test/accuracy"], record["cost"]["tokens_per_second"] or 0)
    return m.get("val/accuracy")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def app(cfg: DictConfig) -> float | None:
    try:
        return run(cfg)
    except ConfigError as e:  # exit here: Hydra would add its own lines around an exception
        print(f"archbench: error: {e}", file=sys.stderr)
        sys.exit(2)


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
