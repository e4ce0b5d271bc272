"""`archbench-eval RUN [overrides]`: evaluate a completed run's saved weights (harness/run/weights.py) on another
task, split or length, after the fact, and write a record of its own that the board reads.

    archbench-eval results/default/2026-12-07_17-10-50/ task.seq_len=512     # length generalisation
    archbench-eval results/default/2026-12-07_17-10-50/ task=induction_heads  # another task, same vocabulary

RUN is the run's folder (or its result.json). The config is the run's own (its overrides, then these), with the
model as it was trained (the record's resolved `model`; overrides of model.* are refused), except that its
max_seq_len follows the task's when that is longer: models without a position table (rope, none) then read longer
sequences, and a learned table, whose weights no longer fit, is refused in one line. Every held-out split of the task
(val, test, test@<length>, ...) is evaluated with the run's seed (`seed=` overrides it), in fp32. The record is a run
record whose config adds `eval_of` (the source run id: it changes the run id, not the board's rows), written to
<paths.results>/eval/<source run id>-<run id>/result.json; `files.weights` names the weights read.
Bad input (no such run, no weights, a task the model cannot take): one line, exit code 2, nothing written.
"""

import contextlib
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf, open_dict

import harness  # noqa: F401 (registers the config resolvers)
from harness.record import results
from harness.record.keys import labels_of
from harness.run.build import ConfigError, build
from harness.run.cli import or_exit
from harness.run.identity import identify
from harness.run.recipe import resolve_device, seed_everything
from harness.run.train import evaluate


def source_run(spec: str) -> tuple[dict, Path]:
    """The completed record RUN names and its weights file; ConfigError if either is missing."""
    path = Path(spec).expanduser()
    path = path / results.RECORD if path.is_dir() else path
    record, why = results.read_record(path) if path.is_file() else (None, "no result.json there")
    if record is None:
        raise ConfigError(f"RUN={spec} is not a run's folder ({why})")
    if record["status"] != "completed":
        raise ConfigError(f"RUN={spec} is a {record['status']} run: only a completed run has final weights")
    name = record.get("files", {}).get("weights")
    if name is None or not (path.parent / name).is_file():
        raise ConfigError(f"RUN={spec} kept no weights (run with save_model=true, the default, to keep them)")
    return record, path.parent / name


def eval_config(record: dict, overrides: list[str]) -> tuple[DictConfig, dict]:
    """The run's config with `overrides` on top, its model as trained, and eval_of naming the source run; and
    Hydra's group choices (for the record's labels)."""
    if model_overrides := [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0].startswith("model")]:
        raise ConfigError(f"{' '.join(model_overrides)}: archbench-eval evaluates the model as it was trained")
    with initialize_config_module(version_base="1.3", config_module="conf"):
        cfg = compose("config", overrides=[*record["overrides"], f"seed={record['seed']}", *overrides])
        full = compose("config", overrides=[*record["overrides"], *overrides], return_hydra_config=True)
    choices = OmegaConf.to_container(full.hydra.runtime.choices)
    model = dict(record["config"]["model"])
    if "max_seq_len" in model:  # the length the task needs, if longer than the training length
        model["max_seq_len"] = max(model["max_seq_len"], OmegaConf.select(cfg, "model.max_seq_len", default=0))
    with open_dict(cfg):
        cfg.model = OmegaConf.create(model)
        cfg.eval_of = record["run_id"]
    return cfg, choices


def run_eval(spec: str, overrides: list[str]) -> dict:
    """Evaluate RUN's weights under the overrides; returns the record written."""
    source, weights_path = source_run(spec)
    cfg, choices = eval_config(source, overrides)
    seed_everything(cfg.seed)
    try:
        task, model, _ = build(cfg)
    except ConfigError as e:
        raise ConfigError(f"{e} (the model is {spec}'s, as trained)") from None
    from safetensors.torch import load_model

    try:
        load_model(model, str(weights_path))
    except RuntimeError as e:  # torch's message: a header line, then one line per mismatch
        detail = "; ".join(line.strip() for line in str(e).splitlines()[1:] if line.strip()) or str(e)
        raise ConfigError(f"the weights of {spec} do not fit the model this config builds: {detail}") from None
    config = OmegaConf.to_container(cfg, resolve=True)
    record = results.Record(
        run_id=results.run_id(config),
        labels=labels_of(choices, config["model"].get("pattern")),
        overrides=[*source["overrides"], *overrides],
        config=config,
        seed=cfg.seed,
        env=results.environment(),
        timestamps={"started": results_now()},
        files={"weights": str(weights_path.resolve())},
    )
    identify(record, model, task)  # auto resolved, the code fingerprinted: an eval of other code is another record
    device = resolve_device(cfg.trainer.device)
    model.to(device)
    t0 = time.perf_counter()
    metrics = {}
    for name, split in task.splits(cfg.seed).items():
        if name != "train":
            out = evaluate(model, split.to(device), cfg.trainer.eval_batch_size, contextlib.nullcontext)
            metrics.update({f"{name}/{k}": v for k, v in out.items()})
    metrics.update(task.derived_metrics(metrics))
    record.status, record.metrics = "completed", metrics
    record.cost = {"params": model.num_params(), "eval_seconds": time.perf_counter() - t0, "device": str(device)}
    record.timestamps["finished"] = results_now()
    out_path = Path(cfg.paths.results) / "eval" / f"{source['run_id']}-{record.run_id}" / results.RECORD
    results.write_json_atomic(out_path, record.to_dict())
    return {**record.to_dict(), "path": str(out_path)}


def results_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print("usage: archbench-eval RUN [overrides...]  (RUN: a completed run's folder)", file=sys.stderr)
        sys.exit(2)
    record = or_exit("archbench-eval", lambda: run_eval(args[0], args[1:]))
    shown = " ".join(f"{k} {v:.4f}" for k, v in record["metrics"].items() if isinstance(v, float))
    print(f"{record['path']}: {shown}")


if __name__ == "__main__":
    main()
