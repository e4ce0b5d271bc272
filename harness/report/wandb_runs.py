"""Result records from wandb runs, so that `archbench-board --wandb ENTITY/PROJECT` builds the same leaderboard as
from result.json files. Reads what harness/run/logger.py logs: config = the resolved config plus `labels`, `run_id` and
`overrides`; summary = metrics and costs; group = sweep name; job_type = task; history = the eval rows."""

import json
from collections.abc import Iterable
from typing import Any

from harness.record.keys import board_role
from harness.record.results import Record
from harness.report import BoardError

COST_KEYS = (
    "params",
    "params_non_embedding",
    "params_embedding",
    "flops_per_token",
    "head_flops_per_scored",
    "scored_targets",
    "train_flops",
    "tokens_seen",
    "train_seconds",
    "wall_seconds",
    "tokens_per_second",
    "peak_memory_bytes",
    "device",
    "threads",
    "first_step_time",
    "mfu",
    "resumed_from_step",
)
STATUS = {"finished": "completed", "failed": "failed", "crashed": "failed", "killed": "failed"}  # else: skipped
HISTORY_KEYS = ("train/loss", "val/loss", "val/accuracy", "lr", "tokens")


def _config(run: Any) -> dict:
    """The run's config as a plain dict (the API unwraps {"value": ...}; a raw export may not)."""
    data = dict(run.config)
    if data and all(isinstance(v, dict) and "value" in v for v in data.values()):
        data = {k: v["value"] for k, v in data.items()}
    return data


def _summary(run: Any) -> dict:
    metrics = getattr(run, "summary_metrics", None)  # the API's plain dict; run.summary is a lazy HTTPSummary
    return dict(metrics) if isinstance(metrics, dict) else {k: run.summary[k] for k in run.summary.keys()}


def record_from_run(run: Any, history: bool = False) -> dict | None:
    """The result record of one wandb run (an object shaped like wandb.apis.public.Run), None while it runs."""
    status = STATUS.get(run.state)
    if status is None:
        return None
    summary = _summary(run)
    if status == "failed" and summary.get("status") in ("failed", "diverged"):  # archbench logs why a run ended
        status = summary["status"]
    config = {k: v for k, v in _config(run).items() if not k.startswith("_")}
    labels = config.pop("labels", None) or {"task": run.job_type or "task"}
    rid = config.pop("run_id", None) or run.id
    overrides = config.pop("overrides", None)
    numeric = lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
    metrics = {k: v for k, v in summary.items() if not k.startswith("_") and k not in COST_KEYS and numeric(v)}
    cost = {k: summary[k] for k in COST_KEYS if k in summary}
    if "wall_seconds" not in cost and "_runtime" in summary:
        cost["wall_seconds"] = summary["_runtime"]
    record = Record(
        run_id=rid,
        labels=labels,
        overrides=overrides,
        config=config,
        seed=config.get("seed"),
        status=status,
        error=None if status == "completed" else summary.get("error") or f"wandb run state: {run.state}",
        metrics=metrics,
        cost=cost,
        timestamps={"finished": summary.get("_timestamp")},
    ).to_dict()
    record["path"] = f"wandb:{getattr(run, 'path', None) and '/'.join(run.path) or run.id}"
    record["wandb"] = {"name": run.name, "group": run.group, "job_type": run.job_type, "tags": list(run.tags or [])}
    if history:
        rows = run.scan_history() if hasattr(run, "scan_history") else run.history(pandas=False)
        record["history"] = [
            {"step": row.get("step", row.get("_step")), **{k: row[k] for k in HISTORY_KEYS if k in row}}
            for row in rows
            if any(k.startswith("val/") for k in row)
        ]
    return record


def _leaves(config: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def records_from_runs(runs: Iterable[Any], history: bool = False) -> list[dict]:
    """Records of the finished runs, each run_id once (a finished run over a failed one, then the latest). Runs
    logged without `overrides` get, as overrides, the config fields that differ between the runs."""
    records = [r for r in (record_from_run(run, history) for run in runs) if r is not None]
    missing = [r for r in records if r["overrides"] is None]
    if missing:
        leaves = [_leaves(r["config"]) for r in missing]
        keys = sorted({k for leaf in leaves for k in leaf})
        swept = [
            k
            for k in keys
            if not k.startswith("_wandb")
            and board_role(k) not in ("seed", "none")
            and len({json.dumps(leaf.get(k), sort_keys=True, default=str) for leaf in leaves}) > 1
        ]
        for r, leaf in zip(missing, leaves, strict=True):
            r["overrides"] = [f"{k}={leaf.get(k)}" for k in swept]
    best: dict[str, dict] = {}
    for r in records:
        rank = (r["status"] == "completed", r["timestamps"]["finished"] or 0)
        old = best.get(r["run_id"])
        if old is None or rank > (old["status"] == "completed", old["timestamps"]["finished"] or 0):
            best[r["run_id"]] = r
    return list(best.values())


def fetch_records(path: str, group: str | None = None, history: bool = False, api: Any = None) -> list[dict]:
    """The records of the runs of wandb project `path` ("entity/project"), optionally of one group (sweep)."""
    if api is None:
        import wandb

        api = wandb.Api()
    records = records_from_runs(api.runs(path, filters={"group": group} if group else None), history)
    if not records:
        raise BoardError(f"no finished runs in wandb project {path}" + (f" group {group}" if group else ""))
    return records
