"""`archbench-board DIR...` (or `--wandb ENTITY/PROJECT`): the leaderboard of a set of result records.

Rows are model variants (the config choices and swept fields that differ between runs), columns are task settings
(the task and its swept fields, optionally split by `--group-by KEY`), cells are the test metric over seeds: mean,
std, Student-t 95% confidence interval, and whether the cell is significantly below its column's leader (Welch's
t-test). Rows are ordered by average rank over the columns. With `--select KEY` (e.g. trainer.lr) the runs of a
cell are grouped by KEY, the value with the best mean validation metric is chosen, and test is reported on that
choice, as Zoology and MAD report the best over a learning-rate grid.
"""

import argparse
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from harness import render, stats, views
from harness.results import load_records

log = logging.getLogger(__name__)

VARIANT_LABELS = ("model", "mixer", "norm", "ffn", "position")
NOT_VARIANT = ("seed", "task", "name", "paths", "logger", "hydra", "trainer.progress", "skip_completed", "suite",
               "experiment", "hparams_search", "resume", "trainer.checkpoint_every", "resources",
               "model/")  # model group choices come from labels; task fields name the column
SIZE_KEYS = ("model.d_model", "model.n_layers")
# cost columns of a cell: mean over its chosen runs; train_flops = flops_per_token * tokens_seen per run
COSTS = ("params", "params_non_embedding", "flops_per_token", "tokens_seen", "train_flops", "wall_seconds",
         "tokens_per_second", "peak_memory_bytes")


def lookup(config: dict, key: str):
    """config["a"]["b"] for key "a.b", None where a level is missing."""
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


@lru_cache(maxsize=65536)
def _matches(key: str, prefixes: tuple) -> bool:
    return any(key == p or key.startswith(p if p.endswith("/") else p + ".") for p in prefixes)


def _split_overrides(record: dict) -> tuple[dict, dict]:
    """The record's command-line overrides as (model variant fields, task fields)."""
    variant, task = {}, {}
    for item in record.get("overrides", []):
        key, _, value = item.lstrip("+~").partition("=")
        if key.startswith("task."):
            task[key] = value
        elif not _matches(key, NOT_VARIANT):
            variant[key] = value
    return variant, task


def _short(key: str) -> str:
    return key.removeprefix("model.").removeprefix("task.")


def _names(fields: list[dict], hide) -> list[str]:
    """A name per run from the fields that vary between runs (labels by value, the rest as key=value)."""
    frame = pd.DataFrame(fields)
    hide = tuple(hide)
    keys = sorted((k for k in frame.columns if not _matches(k, hide)), key=lambda k: (k not in VARIANT_LABELS, k))
    varying = [k for k in keys if frame[k].nunique(dropna=False) > 1]  # absent counts as a value
    if not varying:
        return [str(f.get("mixer") or f.get("model") or "model") for f in fields]
    parts = [frame[k].astype(object).where(frame[k].notna(), None).astype(str) for k in varying]
    parts = [p if k in VARIANT_LABELS else f"{_short(k)}=" + p for k, p in zip(varying, parts, strict=True)]
    return parts[0].str.cat(parts[1:], sep=" ").tolist() if len(parts) > 1 else parts[0].tolist()


def runs_frame(records: list[dict], keys=(), hide=(), size=SIZE_KEYS) -> pd.DataFrame:
    """One row per run: variant (named without the fields in `hide`), family (also without the `size` fields),
    setting (task label + swept task fields), seed, status, the config values of `keys`, metrics, costs, history."""
    variant_fields, task_fields, rows = [], [], []
    for r in records:
        labels = r.get("labels") or {}
        v, t = _split_overrides(r)
        variant_fields.append({k: labels.get(k) for k in VARIANT_LABELS} | v)
        task_fields.append(t)
        row = {"task": labels.get("task", "task"), "seed": r.get("seed"), "status": r["status"],
               "error": r.get("error"), "run_id": r["run_id"], "path": r.get("path"), "history": r.get("history")}
        config = r.get("config") or {}
        row.update({k: lookup(config, k) for k in keys})
        row.update({f"metric:{k}": v for k, v in (r.get("metrics") or {}).items()})
        cost = r.get("cost") or {}
        row.update({f"cost:{k}": v for k, v in cost.items()})
        if cost.get("flops_per_token") is not None and cost.get("tokens_seen") is not None:
            row["cost:train_flops"] = cost["flops_per_token"] * cost["tokens_seen"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    for c in frame.columns:
        if c.startswith(("metric:", "cost:")) and c != "cost:device" and frame[c].dtype == object:
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
    frame.insert(0, "variant", _names(variant_fields, hide))
    frame.insert(1, "family", _names(variant_fields, (*hide, *size)))
    task_names = _names(task_fields, ())
    swept_task = any(len({f.get(k) for f in task_fields}) > 1 for k in {k for f in task_fields for k in f})
    frame.insert(2, "setting", [f"{t} {n}" if swept_task else t for t, n in zip(frame["task"], task_names,
                                                                                   strict=True)])
    return frame


def grid_text(frame: pd.DataFrame, select) -> str:
    """The values of the `select` fields in `frame`, e.g. "trainer.lr∈{0.001,0.01}"."""
    return " ".join(_grid_part(k, frame[k].unique()) for k in select)


def _grid_part(key: str, values) -> str:
    return f"{key}∈{{{','.join(map(str, sorted(set(values), key=_order)))}}}"


def _order(value):
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def with_columns(runs: pd.DataFrame, group_by: str | None = None) -> pd.DataFrame:
    """Add `column`: the setting, split by the value of `group_by` when given."""
    if not group_by:
        return runs.assign(column=runs["setting"])
    return runs.assign(column=runs["setting"] + " " + _short(group_by) + "=" + runs[group_by].astype(str))


def choose(runs: pd.DataFrame, metric: str, select=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The completed runs each cell reports on: with `select`, those of the value of the `select` fields with the best
    mean val/<metric> over seeds, where a value whose runs failed or diverged more often ranks below one that failed
    less (an lr that diverged on one seed of three does not win on the two that survived). Also returns, per cell,
    the chosen value and the grid searched."""
    ok = runs[runs.status == "completed"]
    cell = ["variant", "column"]
    if not select or ok.empty:
        return ok, pd.DataFrame(columns=[*cell, "selected", "grid", "searched"])
    val = f"metric:val/{metric}"
    if val not in ok:
        raise SystemExit(f"archbench-board: --select needs {val} in the records' metrics")
    sign = -1 if metric in stats.LOWER_IS_BETTER else 1
    keys = [*cell, *select]
    scored = runs.assign(score=pd.to_numeric(runs[val], errors="coerce").where(runs.status == "completed") * sign,
                         failed=(runs.status != "completed").astype(float))
    means = scored.groupby(keys, dropna=False, sort=False)[["score", "failed"]].mean().reset_index()
    means = means[means["failed"] < 1]  # grid points with a completed run
    best = means.sort_values(["failed", "score"], ascending=[True, False], kind="stable",
                             na_position="last").drop_duplicates(cell)
    as_index = lambda f: pd.MultiIndex.from_frame(f[keys].astype(str))
    chosen = ok[as_index(ok).isin(as_index(best))]
    best["selected"] = [" ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(select, row, strict=True))
                        for row in best[list(select)].itertuples(index=False)]
    values = [ok.groupby(cell, sort=False)[k].unique() for k in select]
    rows = zip(*values, strict=True)
    grid = pd.Series([" ".join(_grid_part(k, v) for k, v in zip(select, row, strict=True)) for row in rows],
                     index=values[0].index, name="grid")
    searched = means.groupby(cell, sort=False).size().rename("searched")  # grid points with a completed run
    return chosen, best[[*cell, "selected"]].merge(grid.reset_index(), on=cell).merge(searched.reset_index(), on=cell)


def cells(runs: pd.DataFrame, metric: str = "accuracy", split: str = "test", select=(), group_by: str | None = None,
          alpha: float = stats.ALPHA) -> pd.DataFrame:
    """Long table: one row per (variant, column) with mean, std, CI, n of <split>/<metric> over the chosen runs,
    failures, the selection, Welch's test against the column's leader, rank and costs."""
    runs = with_columns(runs, group_by)
    return summarize(runs, *choose(runs, metric, select), metric, split, group_by, alpha)


def summarize(runs: pd.DataFrame, chosen: pd.DataFrame, selection: pd.DataFrame, metric: str, split: str,
              group_by: str | None, alpha: float = stats.ALPHA) -> pd.DataFrame:
    """The cells of `runs` (with columns) from the `chosen` runs and the `selection` made: see `cells`."""
    target = f"metric:{split}/{metric}"
    if target not in chosen and not chosen.empty:
        have = sorted(c.removeprefix("metric:") for c in runs if c.startswith("metric:"))
        raise SystemExit(f"archbench-board: no metric {split}/{metric} in the records (they have: {', '.join(have)})")
    cell = ["variant", "column"]
    first = runs.groupby(cell, sort=False)[["family", "setting", "task", *([group_by] if group_by else [])]].first()
    out = first.join(runs[runs.status != "completed"].groupby(cell).size().rename("failed")).reset_index()
    out["failed"] = out["failed"].fillna(0).astype(int)
    g = chosen.assign(value=chosen[target] if target in chosen else np.nan).groupby(cell, sort=False)
    agg = g["value"].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    for c in COSTS:
        if f"cost:{c}" in chosen:
            agg[c] = g[f"cost:{c}"].mean()
    out = out.merge(agg.reset_index(), on=cell, how="left").merge(selection, on=cell, how="left")
    out["n"] = out["n"].fillna(0).astype(int)
    out["ci_lo"], out["ci_hi"] = stats.t_interval(out["mean"], out["std"], out["n"],
                                                  bounds=(0.0, 1.0) if metric == "accuracy" else None)
    higher = metric not in stats.LOWER_IS_BETTER
    out = out.join(stats.versus_leader(out, "column", higher, alpha))
    # ranks over every (variant, column) pair: a cell that was never run ranks last, like one whose runs all
    # failed, so that a variant run only on an easy task does not top the average
    every = pd.MultiIndex.from_product([out["variant"].unique(), out["column"].unique()], names=cell)
    grid = out.set_index(cell)[["mean"]].reindex(every).reset_index()
    grid["rank"] = stats.ranks(grid, "column", higher)
    out = out.merge(grid[[*cell, "rank"]], on=cell, how="left")
    return out.assign(avg_rank=out["variant"].map(grid.groupby("variant")["rank"].mean()))


@dataclass
class Board:
    """Everything one call of archbench-board shows: the runs (and those chosen), the cells, the wide table, its
    legend, optional views (name -> (table, legend)) and the options it was built with."""
    runs: pd.DataFrame
    chosen: pd.DataFrame
    long: pd.DataFrame
    table: pd.DataFrame
    legend: list[str]
    options: dict
    views: dict[str, tuple[pd.DataFrame, list[str]]] = field(default_factory=dict)


def by_split(runs: pd.DataFrame, split: str, metric: str) -> tuple[pd.DataFrame, str]:
    """`split` with a * (e.g. test*: test and every test@<length>) reports every matching split as columns of its own:
    each run appears once per split, its setting suffixed with the split beyond the first (induction_heads @512), the
    split's metric in place of the first's. Returns the runs and the split their metric column is named for."""
    if "*" not in split:
        return runs, split
    pattern = re.compile(re.escape(split).replace(r"\*", ".*") + "$")
    names = sorted({c[len("metric:"):].rsplit("/", 1)[0] for c in runs.columns if c.startswith("metric:")
                    and c.endswith(f"/{metric}") and pattern.match(c[len("metric:"):].rsplit("/", 1)[0])},
                   key=render.natural)
    if not names:
        raise SystemExit(f"archbench-board: no split matches {split} with a metric {metric}")
    first = names[0]
    parts = [runs.assign(setting=runs["setting"] + ("" if name == first else f" @{name.partition('@')[2] or name}"),
                         **{f"metric:{first}/{metric}": runs.get(f"metric:{name}/{metric}")}) for name in names]
    return pd.concat(parts, ignore_index=True), first


def build(records: list[dict], metric: str = "accuracy", split: str = "test", select=(), group_by: str | None = None,
          matched: str | None = None, size=SIZE_KEYS, aggregate: str | None = None) -> Board:
    """The leaderboard of `records`; `matched` (params | flops) and `aggregate` (a config key) add views. A `split`
    with a * reports every matching split (test* : the training length and every longer test length)."""
    if not records:
        raise SystemExit("archbench-board: no result records")
    select, group = list(select), [group_by] if group_by else []
    runs = runs_frame(records, keys=[*select, *group, *([aggregate] if aggregate else [])], hide=[*select, *group],
                      size=size)
    runs, split = by_split(runs, split, metric)
    runs = with_columns(runs, group_by)
    chosen, selection = choose(runs, metric, select)
    long = summarize(runs, chosen, selection, metric, split, group_by)
    ok = runs[runs.status == "completed"]
    grid = grid_text(ok, select) if select else ""
    table, legend = render.wide(long, metric, split, select, group_by, grid)
    options = {"metric": metric, "split": split, "select": select, "group_by": group_by, "size": tuple(size)}
    board = Board(runs, chosen, long, table, legend, options)
    if matched:
        board.views["matched"] = views.matched(long, matched, metric, split, size)
    if aggregate:
        board.views["aggregate"] = views.aggregate(long, runs, aggregate, metric, split, grid)
    return board


def leaderboard(roots, metric: str = "accuracy", select=(), **options) -> Board:
    records = load_records(roots)
    if not records:
        raise SystemExit(f"archbench-board: no result records under {', '.join(map(str, roots))}")
    return build(records, metric, select=select, **options)


def write(board: Board, out_dir: Path, formats=("md", "csv"), plots: Path | None = None) -> list[Path]:
    """Write the board as leaderboard.<format> for each format (md, csv, html, tex) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = sorted(Path(plots).glob("*.png")) if plots else []
    written = []
    for fmt in formats:
        path = out_dir / f"leaderboard.{fmt}"
        if fmt == "csv":
            render.csv(board, path)
        elif fmt == "md":  # images linked relative to the file, so the folder can move
            path.write_text(render.markdown(board, [os.path.relpath(p, out_dir) for p in images]) + "\n")
        else:
            path.write_text({"html": render.html, "tex": render.latex}[fmt](board, images))
        written.append(path)
    return written


FORMATS = ("md", "csv", "html", "tex")


def _formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise argparse.ArgumentTypeError(f"--format {','.join(bad)}: choose from {','.join(FORMATS)}")
    return formats


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="archbench-board", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="*", type=Path, help="folders searched recursively for result.json")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs of a wandb project instead of folders")
    p.add_argument("--wandb-group", metavar="NAME", help="only the wandb runs of this group (sweep name)")
    p.add_argument("--metric", default="accuracy", help="accuracy (higher is better) or loss (lower is better)")
    p.add_argument("--split", default="test", help="the split reported (test, or an extra one like test@512); with "
                   "a *, every matching split as its own column (test*: extrapolation to every test length)")
    p.add_argument("--select", action="append", default=[], metavar="KEY",
                   help="a swept config key (e.g. trainer.lr): best value per cell on val, test reported on it")
    p.add_argument("--group-by", metavar="KEY", help="a config key (e.g. model.d_model) whose values split columns")
    p.add_argument("--matched", choices=("params", "flops"), help="also the metric at equal non-embedding params "
                   "or equal training FLOPs, interpolated between the swept sizes")
    p.add_argument("--size", action="append", metavar="KEY", help=f"size fields for --matched (default "
                   f"{', '.join(SIZE_KEYS)})")
    p.add_argument("--aggregate", metavar="KEY", help="average settings by this config key, then over its values "
                   "(MAD's score with task.family)")
    p.add_argument("--mad", action="store_true", help="MAD score: --aggregate task.family, --select trainer.lr "
                   "--select trainer.weight_decay unless given")
    p.add_argument("--out", type=Path, help="folder to write leaderboard.<format> into")
    p.add_argument("--format", type=_formats, default=["md", "csv"], help="with --out: any of md,csv,html,tex")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write heatmap, learning curves (and --plot-x) PNGs")
    p.add_argument("--plot-x", metavar="KEY", help="with --plots: the metric against this swept key per variant")
    p.add_argument("--pareto", metavar="METRIC,COST", help="instead of the board: the variants not dominated on "
                   "METRIC and COST (e.g. test/accuracy,params) and a plot of the front (harness/pareto.py)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if bool(args.dirs) == bool(args.wandb):
        p.error("give result folders or --wandb ENTITY/PROJECT (one of the two)")
    if args.mad:
        args.aggregate = args.aggregate or "task.family"
        args.select = args.select or ["trainer.lr", "trainer.weight_decay"]
    if args.wandb:
        from harness.wandb_runs import fetch_records

        records = fetch_records(args.wandb, group=args.wandb_group, history=args.plots is not None)
    else:
        records = load_records(args.dirs)
        if not records:
            p.error(f"no result records under {', '.join(map(str, args.dirs))}")
    if args.pareto:
        from harness import pareto

        return pareto.report(records, args.pareto, args.plots, args.out, args.dirs)
    board = build(records, args.metric, args.split, args.select, args.group_by, args.matched,
                  tuple(args.size or SIZE_KEYS), args.aggregate)
    print(render.markdown(board))
    if args.plots:
        from harness import plots

        for path in plots.all_plots(board, records, args.plots, args.plot_x):
            print(f"plot: {path}")
    if args.out:
        for path in write(board, args.out, args.format, args.plots):
            print(f"written: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
