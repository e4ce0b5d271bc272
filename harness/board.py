"""`archbench-board DIR...`: a leaderboard from the result records below some folders.

Rows are model variants (the config choices and swept fields that differ between runs), columns are tasks, cells
are the test metric as mean ± std over seeds with n. With `--select KEY` (e.g. trainer.lr) the runs of a cell are
grouped by KEY, the value with the best mean validation metric is chosen, and test is reported on that choice, as
Zoology and MAD report the best over a learning-rate grid.
"""

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from harness.results import load_records

log = logging.getLogger(__name__)

VARIANT_LABELS = ("model", "mixer", "norm", "ffn", "position")
NOT_VARIANT = ("seed", "task", "name", "paths", "logger", "hydra", "trainer.progress", "skip_completed", "suite",
               "experiment", "model/")  # model group choices come from labels
LOWER_IS_BETTER = {"loss"}


def _overrides(record: dict) -> dict:
    out = {}
    for item in record.get("overrides", []):
        key, _, value = item.lstrip("+~").partition("=")
        if not any(key == p or key.startswith(p if p.endswith("/") else p + ".") for p in NOT_VARIANT):
            out[key] = value
    return out


def runs_frame(records: list[dict], select: list[str] = ()) -> pd.DataFrame:
    """One row per run: variant, task, seed, status, the swept `select` fields, metrics and costs."""
    fields = []
    for r in records:
        labels = r.get("labels", {})
        f = {k: labels.get(k) for k in VARIANT_LABELS} | _overrides(r)
        fields.append({k: v for k, v in f.items() if k not in select})
    keys = sorted({k for f in fields for k in f}, key=lambda k: (k not in VARIANT_LABELS, k))
    varying = [k for k in keys if len({f.get(k) for f in fields}) > 1]
    rows = []
    for r, f in zip(records, fields, strict=True):
        parts = [(f"{k}={f.get(k)}" if k not in VARIANT_LABELS else str(f.get(k))) for k in varying]
        variant = " ".join(parts) if parts else str(f.get("mixer") or f.get("model") or "model")
        row = {"variant": variant, "task": r.get("labels", {}).get("task", "task"), "seed": r.get("seed"),
               "status": r["status"], "error": r.get("error"), "run_id": r["run_id"], "path": r.get("path")}
        config = pd.json_normalize(r.get("config", {}), sep=".")
        for key in select:
            row[key] = config[key].iloc[0] if key in config else None
        row.update({f"metric:{k}": v for k, v in r.get("metrics", {}).items()})
        row.update({f"cost:{k}": v for k, v in r.get("cost", {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def cells(runs: pd.DataFrame, metric: str = "accuracy", select: list[str] = ()) -> pd.DataFrame:
    """Long table: one row per (variant, task) with mean, std, n of test/<metric>, failures and costs."""
    sign = -1 if metric in LOWER_IS_BETTER else 1
    out = []
    for (variant, task), group in runs.groupby(["variant", "task"], sort=False):
        ok = group[group.status == "completed"]
        chosen = ""
        if select and len(ok):
            means = ok.groupby(list(select), dropna=False)[f"metric:val/{metric}"].mean() * sign
            best = means.idxmax()
            best = best if isinstance(best, tuple) else (best,)
            ok = ok[(ok[list(select)] == pd.Series(best, index=list(select))).all(axis=1)]
            chosen = " ".join(f"{k}={v}" for k, v in zip(select, best, strict=True))
        values = ok[f"metric:test/{metric}"].astype(float) if len(ok) else pd.Series(dtype=float)
        out.append({
            "variant": variant, "task": task, "mean": values.mean(), "std": values.std(ddof=1), "n": len(values),
            "failed": int((group.status != "completed").sum()), "selected": chosen,
            "params": ok["cost:params"].mean() if len(ok) else None,
            "tokens_per_s": ok["cost:tokens_per_second"].mean() if len(ok) else None,
        })
    return pd.DataFrame(out)


def _cell_text(row) -> str:
    if row.n == 0:
        return f"failed ({row.failed})"
    text = f"{row['mean']:.3f}" + (f" ± {row['std']:.3f}" if row.n > 1 else "") + f" (n={row.n})"
    if row.failed:
        text += f" [{row.failed} failed]"
    return text + (f" @ {row.selected}" if row.selected else "")


def wide(long: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Rows variants, columns tasks, plus parameters and tokens/s; ordered by the mean metric over tasks."""
    table = long.assign(cell=long.apply(_cell_text, axis=1)).pivot(index="variant", columns="task", values="cell")
    costs = long.groupby("variant")[["params", "tokens_per_s"]].mean()
    table["params"] = costs["params"].map(lambda v: f"{v:,.0f}" if pd.notna(v) else "")
    table["tokens/s"] = costs["tokens_per_s"].map(lambda v: f"{v:,.0f}" if pd.notna(v) else "")
    order = long.groupby("variant")["mean"].mean().sort_values(ascending=metric in LOWER_IS_BETTER)
    table = table.loc[order.index]
    table.columns.name = None
    return table.fillna("")


def leaderboard(roots, metric: str = "accuracy", select: list[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    records = load_records(roots)
    if not records:
        raise SystemExit(f"archbench-board: no result records under {', '.join(map(str, roots))}")
    long = cells(runs_frame(records, select), metric, select)
    return long, wide(long, metric)


def render(table: pd.DataFrame, metric: str) -> str:
    return f"test/{metric}: mean ± std over seeds (n = seeds)\n" + table.to_markdown()


def write(long: pd.DataFrame, table: pd.DataFrame, out_dir: Path, metric: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "leaderboard.md").write_text(render(table, metric) + "\n")
    long.to_csv(out_dir / "leaderboard.csv", index=False)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="archbench-board", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", type=Path, help="folders searched recursively for result.json")
    p.add_argument("--metric", default="accuracy", help="accuracy (higher is better) or loss (lower is better)")
    p.add_argument("--select", action="append", default=[], metavar="KEY",
                   help="a swept config key (e.g. trainer.lr): best value per cell on val, test reported on it")
    p.add_argument("--out", type=Path, help="folder to write leaderboard.md and leaderboard.csv into")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    long, table = leaderboard(args.dirs, args.metric, args.select)
    print(render(table, args.metric))
    if args.out:
        write(long, table, args.out, args.metric)


if __name__ == "__main__":
    main(sys.argv[1:])
