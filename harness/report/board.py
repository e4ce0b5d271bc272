"""The leaderboard of a set of result records, as tables (`build`, `leaderboard`); `archbench-board` is
harness/report/cli.py.

`archbench-board DIR...` (or `--wandb ENTITY/PROJECT`): the leaderboard of a set of result records.

Rows are model variants (the config choices and swept fields that differ between runs), columns are task settings
(the task and its swept fields, optionally split by `--group-by KEY`), cells are the test metric over seeds: mean,
std, Student-t 95% confidence interval, for accuracy how many seeds solve the task, and whether the cell is
worse than its column's best by more than a practical margin (a permutation test with a family-wise error rate of at
most alpha over the column: harness/report/marking.py). Rows are ordered by average rank over the columns. With
`--select KEY` (e.g. trainer.lr) the runs of a cell are grouped by KEY, the value with the best mean validation
metric is chosen, and test is reported on that choice, as Zoology and MAD report the best over a learning-rate grid.
"""

import json
import logging
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.record import keys as record_keys
from harness.record.keys import LOWER_IS_BETTER
from harness.record.results import Scan, scan
from harness.report import BoardError, marking, render, stats, tuning, views
from harness.report import scaling as scaling_lib
from harness.report import sensitivity as sensitivity_lib
from harness.report.costs import OLD, RECOUNTED, costs

log = logging.getLogger(__name__)

SUPERSEDED = "its config ran again under newer code (harness/record/code.py)"
# cost columns of a cell: mean over its chosen runs, each run's counted as harness/report/costs.py says
COSTS = (
    "params",
    "params_non_embedding",
    "params_embedding",
    "flops_per_token",
    "head_flops_per_scored",
    "tokens_seen",
    "train_flops",
    "wall_seconds",
    "tokens_per_second",
    "peak_memory_bytes",
)


def lookup(config: dict, key: str) -> Any:
    """config["a"]["b"] for key "a.b", None where a level is missing."""
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def leaves(config: dict, prefix: str = "", out: dict | None = None) -> dict[str, str]:
    """Every leaf of a config as key -> canonical JSON text (so that 1 and 1.0, lists and None compare as values)."""
    out = {} if out is None else out
    for k, v in config.items():
        if isinstance(v, dict) and v:
            leaves(v, f"{prefix}{k}.", out)
        else:
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True, default=str)
    return out


def _text(value: str | None) -> str:
    """A leaf's JSON text as shown in a name: 0.001, rope, [2, 4]; None where a run has no such field."""
    if value is None:
        return "None"
    v = json.loads(value)
    return v if isinstance(v, str) else json.dumps(v)


def _choice(key: str) -> bool:
    """A group choice (task=mqar, model=llama): the labels name it, it is no field of the config."""
    k = record_keys.declared(key)
    return k is not None and k.key == key.lstrip("+~") and k.label is not None


def _short(key: str) -> str:
    return key.removeprefix("model.").removeprefix("task.")


class _Identities:
    """Names for the runs' rows (variants) and columns (settings) that by construction never lose, merge or duplicate
    a run. A variant is the labels (Hydra's group choices) plus the *resolved* value of every variant field that any
    run overrides (a run that did not override it has its default there, never a missing value); then, wherever two
    runs of one cell still differ in any config field (a preset, an experiment file), that field joins the name,
    until every cell holds runs that differ in nothing but their seed (and the `hide` fields: a --select grid, a
    --group-by split). Columns are built the same way from the task label and the task's fields."""

    def __init__(self, records: list[dict], hide: Iterable[str] = ()):
        self.hide = tuple(hide)
        self.leaves = [leaves(r.get("config") or {}) for r in records]
        self.labels = [r.get("labels") or {} for r in records]
        # fields a run's config took from another by interpolation (model.vocab_size: ${task.vocab_size}): they
        # differ between tasks without making the model another variant
        self.derived = [set(r.get("derived") or ()) for r in records]
        overridden = [dict(o.lstrip("+~").partition("=")[::2] for o in r.get("overrides") or []) for r in records]
        self.overridden = overridden
        keys = {k for o in overridden for k in o if "/" not in k and not self._hidden(k) and not _choice(k)}
        self.variant_keys = sorted(k for k in keys if record_keys.board_role(k) == "variant")
        self.column_keys = sorted(k for k in keys if record_keys.board_role(k) == "column")
        for _ in range(100):  # each round adds at least one key; configs have far fewer leaves than that
            cells = self._groups()
            more_variant, more_column = self._differing(cells)
            if not more_variant and not more_column:
                break
            self.variant_keys = sorted({*self.variant_keys, *more_variant})
            self.column_keys = sorted({*self.column_keys, *more_column})

    def _hidden(self, key: str) -> bool:
        return any(key == h or key.startswith(h + ".") for h in self.hide)

    def value(self, i: int, key: str) -> str | None:
        """The run's resolved value of `key`; the override's text where the record has no config (foreign runs)."""
        if key in self.leaves[i]:
            return self.leaves[i][key]
        raw = self.overridden[i].get(key)
        return None if raw is None else json.dumps(raw)

    def variant(self, i: int, size: Collection[str] = ()) -> tuple:
        return (
            tuple(self.labels[i].get(k) for k in record_keys.VARIANT_LABELS),
            tuple(self.value(i, k) for k in self.variant_keys if k not in size),
        )

    def column(self, i: int) -> tuple:
        return self.labels[i].get("task", "task"), tuple(self.value(i, k) for k in self.column_keys)

    def _groups(self) -> dict:
        cells: dict = {}
        for i in range(len(self.leaves)):
            cells.setdefault((self.variant(i), self.column(i)), []).append(i)
        return cells

    def _differing(self, cells: dict) -> tuple[set, set]:
        """Config fields (not seeds, not hidden, not declared as none) in which runs of one cell differ, and variant
        fields (not derived from the task) in which the runs of one row differ between its columns."""
        variant, column = set(), set()
        rows: dict = {}
        for (v, _), members in cells.items():
            rows.setdefault(v, []).extend(members)
            if len(members) > 1:
                self._collect(members, variant, column, roles=("variant", "column"))
        for members in rows.values():
            if len({self.column(i) for i in members}) > 1:
                self._collect(members, variant, column, roles=("variant",))
        return variant, column

    def _collect(self, members: list[int], variant: set, column: set, roles: tuple[str, ...]) -> None:
        derived = set().union(*(self.derived[i] for i in members)) if "column" not in roles else set()
        for k in {k for i in members for k in self.leaves[i]}:
            role = record_keys.board_role(k)
            if role not in roles or self._hidden(k) or k in derived or k in self.variant_keys or k in self.column_keys:
                continue
            if len({self.leaves[i].get(k) for i in members}) > 1:
                (column if role == "column" else variant).add(k)

    def names(self, size: Collection[str] = ()) -> list[str]:
        """A variant name per run: the labels and fields that vary between variants (labels by value, the rest as
        key=value); `size` fields left out (the variant's family, for matched compute)."""
        ids = [self.variant(i, size) for i in range(len(self.leaves))]
        keys = [k for k in self.variant_keys if k not in size]
        vary_label = [j for j in range(len(record_keys.VARIANT_LABELS)) if len({v[0][j] for v in ids}) > 1]
        vary_key = [j for j in range(len(keys)) if len({v[1][j] for v in ids}) > 1]
        if not vary_label and not vary_key:
            return [str(lab.get("mixer") or lab.get("model") or "model") for lab in self.labels]
        return [
            " ".join([*(str(v[0][j]) for j in vary_label), *(f"{_short(keys[j])}={_text(v[1][j])}" for j in vary_key)])
            for v in ids
        ]

    def settings(self) -> list[str]:
        """A column name per run: the task label, then the task fields that vary between runs of that task."""
        ids = [self.column(i) for i in range(len(self.leaves))]
        vary = [j for j in range(len(self.column_keys)) if len({c[1][j] for c in ids}) > 1]
        return [
            " ".join([task, *(f"{_short(self.column_keys[j])}={_text(c[1][j])}" for j in vary)])
            for task, c in ((c[0], c) for c in ids)
        ]


def runs_frame(
    records: list[dict], keys: Iterable[str] = (), hide: Iterable[str] = (), size: Iterable[str] = record_keys.SIZE_KEYS
) -> pd.DataFrame:
    """One row per run: variant (named without the fields in `hide`), family (also without the `size` fields),
    setting (task label + the task fields that vary), seed, status, the config values of `keys`, metrics, costs,
    history. Every record is one row; no two different configs share a (variant, setting) cell but by seed."""
    rows = []
    for r in records:
        labels = r.get("labels") or {}
        row = {
            "task": labels.get("task", "task"),
            "seed": r.get("seed"),
            "status": r["status"],
            "error": r.get("error"),
            "run_id": r["run_id"],
            "path": r.get("path"),
            "history": r.get("history"),
        }
        cost, row["counting"] = costs(r)
        config = r.get("config") or {}
        row.update({k: lookup(config, k) for k in keys})
        row.update({f"metric:{k}": v for k, v in (r.get("metrics") or {}).items()})
        row.update({f"cost:{k}": v for k, v in cost.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    for c in frame.columns:
        if c.startswith(("metric:", "cost:")) and c != "cost:device" and frame[c].dtype == object:
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
    ids = _Identities(records, hide)
    frame.insert(0, "variant", ids.names())
    frame.insert(1, "family", ids.names(size=tuple(size)))
    frame.insert(2, "setting", ids.settings())
    return frame


def grid_text(frame: pd.DataFrame, select: Iterable[str]) -> str:
    """The values of the `select` fields in `frame`, e.g. "trainer.lr∈{0.001,0.01}"."""
    return " ".join(_grid_part(k, frame[k].unique()) for k in select)


def _grid_part(key: str, values: Iterable[object]) -> str:
    return f"{key}∈{{{','.join(map(str, sorted(set(values), key=_order)))}}}"


def _order(value: object) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def with_columns(runs: pd.DataFrame, group_by: str | None = None) -> pd.DataFrame:
    """Add `column`: the setting, split by the value of `group_by` when given."""
    if not group_by:
        return runs.assign(column=runs["setting"])
    return runs.assign(column=runs["setting"] + " " + _short(group_by) + "=" + runs[group_by].astype(str))


def choose(runs: pd.DataFrame, metric: str, select: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The completed runs each cell reports on: with `select`, those of the value of the `select` fields with the best
    mean val/<metric> over seeds, where a value whose runs failed or diverged more often ranks below one that failed
    less (an lr that diverged on one seed of three does not win on the two that survived). Also returns, per cell,
    the chosen value and the grid searched."""
    ok = runs[runs.status == "completed"]
    cell = ["variant", "column"]
    if not select or ok.empty:
        return ok, pd.DataFrame(columns=[*cell, "selected", "edge", "grid", "searched"])
    val = f"metric:val/{metric}"
    if val not in ok:
        raise BoardError(f"--select needs {val} in the records' metrics")
    sign = -1 if metric in LOWER_IS_BETTER else 1
    keys = [*cell, *select]
    scored = runs.assign(
        score=pd.to_numeric(runs[val], errors="coerce").where(runs.status == "completed") * sign,
        failed=(runs.status != "completed").astype(float),
    )
    means = scored.groupby(keys, dropna=False, sort=False)[["score", "failed"]].mean().reset_index()
    means = means[means["failed"] < 1]  # grid points with a completed run
    best = means.sort_values(
        ["failed", "score"], ascending=[True, False], kind="stable", na_position="last"
    ).drop_duplicates(cell)
    as_index = lambda f: pd.MultiIndex.from_frame(f[keys].astype(str))
    chosen = ok[as_index(ok).isin(as_index(best))]
    best["selected"] = [
        " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(select, row, strict=True))
        for row in best[list(select)].itertuples(index=False)
    ]
    values = [ok.groupby(cell, sort=False)[k].unique() for k in select]
    rows = zip(*values, strict=True)
    grid = pd.Series(
        [" ".join(_grid_part(k, v) for k, v in zip(select, row, strict=True)) for row in rows],
        index=values[0].index,
        name="grid",
    )
    searched = means.groupby(cell, sort=False).size().rename("searched")  # grid points with a completed run
    best["edge"] = sensitivity_lib.edges(best, means, select, cell)  # chosen at the lowest or highest value searched
    return chosen, best[[*cell, "selected", "edge"]].merge(grid.reset_index(), on=cell).merge(
        searched.reset_index(), on=cell
    )


def cells(
    runs: pd.DataFrame,
    metric: str = "accuracy",
    split: str = "test",
    select: Sequence[str] = (),
    group_by: str | None = None,
    alpha: float = marking.ALPHA,
) -> pd.DataFrame:
    """Long table: one row per (variant, column) with mean, std, CI, n of <split>/<metric> over the chosen runs,
    failures, the selection, the marking against the column's best (harness/report/marking.py), rank and costs."""
    runs = with_columns(runs, group_by)
    return summarize(runs, *choose(runs, metric, select), metric, split, group_by, alpha)


def summarize(
    runs: pd.DataFrame,
    chosen: pd.DataFrame,
    selection: pd.DataFrame,
    metric: str,
    split: str,
    group_by: str | None,
    alpha: float = marking.ALPHA,
    delta: float | None = None,
    solved: float = marking.SOLVED,
) -> pd.DataFrame:
    """The cells of `runs` (with columns) from the `chosen` runs and the `selection` made: see `cells`. `delta` is
    the practical-equivalence margin of the marking (None: the metric's default, marking.DELTA); for accuracy,
    `solved` counts each cell's seeds at or above it (column `solved`)."""
    target = f"metric:{split}/{metric}"
    if target not in chosen and not chosen.empty:
        have = sorted(c.removeprefix("metric:") for c in runs if c.startswith("metric:"))
        raise BoardError(f"no metric {split}/{metric} in the records (they have: {', '.join(have)})")
    cell = ["variant", "column"]
    first = runs.groupby(cell, sort=False)[["family", "setting", "task", *([group_by] if group_by else [])]].first()
    out = first.join(runs[runs.status != "completed"].groupby(cell).size().rename("failed")).reset_index()
    out["failed"] = out["failed"].fillna(0).astype(int)
    g = chosen.assign(value=chosen[target] if target in chosen else np.nan).groupby(cell, sort=False)
    agg = g["value"].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    for c in COSTS:
        if f"cost:{c}" in chosen:
            agg[c] = g[f"cost:{c}"].mean()
    if "counting" in chosen:  # runs whose costs were recounted from their config, or kept as counted (costs.py)
        for how in (RECOUNTED, OLD):
            agg[f"costs_{how}"] = g["counting"].agg(lambda c, how=how: int((c == how).sum()))
    out = out.merge(agg.reset_index(), on=cell, how="left").merge(selection, on=cell, how="left")
    out["n"] = out["n"].fillna(0).astype(int)
    out["ci_lo"], out["ci_hi"] = stats.t_interval(
        out["mean"], out["std"], out["n"], bounds=(0.0, 1.0) if metric == "accuracy" else None
    )
    higher = metric not in LOWER_IS_BETTER
    key = out["variant"] + "\x00" + out["column"]
    values = chosen.assign(
        cell=chosen["variant"] + "\x00" + chosen["column"],
        value=pd.to_numeric(chosen[target], errors="coerce") if target in chosen else np.nan,
    )
    if metric == "accuracy":
        out["solved"] = key.map(marking.solved(values["value"], values["cell"], solved)).fillna(0).astype(int)
        out["solved_at"] = solved
    delta = marking.delta_for(metric) if delta is None else delta
    tests = marking.versus_best(out.assign(cell=key), values[["cell", "seed", "value"]], "column", higher, alpha, delta)
    out = out.join(tests).assign(alpha=alpha, delta=delta)
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
    accounting: str = ""  # how many record files were read and used
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why it is not on the board)
    files: pd.DataFrame | None = None  # every record file read and what became of it (leaderboard_records.csv)


def by_split(runs: pd.DataFrame, split: str, metric: str) -> tuple[pd.DataFrame, str]:
    """`split` with a * (e.g. test*: test and every test@<length>) reports every matching split as columns of its own:
    each run appears once per split, its setting suffixed with the split beyond the first (induction_heads @512), the
    split's metric in place of the first's. Returns the runs and the split their metric column is named for."""
    if "*" not in split:
        return runs, split
    pattern = re.compile(re.escape(split).replace(r"\*", ".*") + "$")
    names = sorted(
        {
            c[len("metric:") :].rsplit("/", 1)[0]
            for c in runs.columns
            if c.startswith("metric:")
            and c.endswith(f"/{metric}")
            and pattern.match(c[len("metric:") :].rsplit("/", 1)[0])
        },
        key=render.natural,
    )
    if not names:
        raise BoardError(f"no split matches {split} with a metric {metric}")
    first = names[0]
    parts = [
        runs.assign(
            setting=runs["setting"] + ("" if name == first else f" @{name.partition('@')[2] or name}"),
            **{f"metric:{first}/{metric}": runs.get(f"metric:{name}/{metric}")},
        )
        for name in names
    ]
    return pd.concat(parts, ignore_index=True), first


def build(
    records: list[dict],
    metric: str = "accuracy",
    split: str = "test",
    select: Sequence[str] = (),
    group_by: str | None = None,
    matched: str | None = None,
    size: Sequence[str] = record_keys.SIZE_KEYS,
    aggregate: str | None = None,
    found: Scan | None = None,
    delta: float | None = None,
    solved: float = marking.SOLVED,
    sensitivity: str | None = None,
    scaling: str | None = None,
) -> Board:
    """The leaderboard of `records`; `matched` (params | flops) and `aggregate` (a config key) add views. A `split`
    with a * reports every matching split (test* : the training length and every longer test length). `found` is
    the scan the records came from: the board then accounts for every file it read. `delta`: the marking's
    practical margin (None: the metric's default); `solved`: the accuracy at which a seed counts as solving."""
    if not records:
        raise BoardError("no result records")
    found = found or Scan(records, len(records))
    given, group = list(select), [group_by] if group_by else []
    select = tuning.automatic(records, given)  # the suite's declared grid (tune:) unless --select says otherwise
    shown = [k for k in (tuning.declared(records) or tuning.TUNED_BY_DEFAULT) if k not in select]
    size = tuple(dict.fromkeys([*size, *([scaling] if scaling else [])]))  # a family spans the scaled key
    runs = runs_frame(
        records,
        keys=[*select, *group, *([aggregate] if aggregate else []), *([scaling] if scaling else []), *shown],
        hide=[*select, *group],
        size=size,
    )
    runs, split = by_split(runs, split, metric)
    runs = with_columns(runs, group_by)
    chosen, selection = choose(runs, metric, select)
    unplaced = _unplaced(chosen, f"metric:{split}/{metric}")
    chosen = chosen[~chosen.index.isin(unplaced.index)]
    long = summarize(runs, chosen, selection, metric, split, group_by, delta=delta, solved=solved)
    ok = runs[runs.status == "completed"]
    grid = grid_text(ok, select) if select else ""
    table, legend = render.wide(long, metric, split, select, group_by, grid)
    if (tuned := tuning.legend(runs, records, select, given)) is not None:
        legend.append(tuned)
    listed = [*found.skipped, *((p, f"superseded: {SUPERSEDED} ({kept})") for p, kept in found.superseded)]
    skipped = [
        *listed,
        *(
            (p, f"completed, but has no {split}/{metric}: not counted in its cell")
            for p in dict.fromkeys(unplaced["path"])
        ),
    ]
    for path, why in skipped[len(listed) :]:
        log.warning("not placed on the board: %s: %s", path, why)
    accounting = found.summary() + (
        f"; {len(skipped) - len(listed)} completed without {split}/{metric} (listed below)"
        if len(skipped) > len(listed)
        else ""
    )
    options = {"metric": metric, "split": split, "select": select, "group_by": group_by, "size": tuple(size)}
    options |= {"delta": float(long["delta"].iloc[0]) if len(long) else delta, "solved": solved}
    options.update(sensitivity=sensitivity, scaling=scaling)
    board = Board(
        runs,
        chosen,
        long,
        table,
        legend,
        options,
        accounting=accounting,
        skipped=skipped,
        files=_files(found, runs, unplaced),
    )
    if matched:
        board.views["matched"] = views.matched(long, matched, metric, split, size)
    if aggregate:
        board.views["aggregate"] = views.aggregate(long, runs, aggregate, metric, split, grid)
    if sensitivity:
        board.views["sensitivity"] = sensitivity_lib.view(
            sensitivity_points(records, board, sensitivity), sensitivity, metric, split, select, list(table.index)
        )
    if scaling:
        board.views.update(scaling_lib.view(chosen, scaling, metric, split, size))
    return board


def sensitivity_points(records: list[dict], board: Board, key: str) -> pd.DataFrame:
    """The points of the sensitivity view of `key` (harness/report/sensitivity.py) for the records of `board`."""
    o = board.options
    hide = [*o["select"], key, *([o["group_by"]] if o["group_by"] else [])]
    runs = runs_frame(records, keys=list(dict.fromkeys(hide)), hide=hide, size=o["size"])
    runs, split = by_split(runs, o["split"], o["metric"])
    return sensitivity_lib.points(with_columns(runs, o["group_by"]), key, o["metric"], split, o["select"])


def _unplaced(chosen: pd.DataFrame, target: str) -> pd.DataFrame:
    """Completed runs chosen for a cell that lack the metric reported: an error shown, never a silent NaN."""
    if chosen.empty or target not in chosen:  # no run has it: summarize says which metrics there are
        return chosen.iloc[0:0]
    return chosen[pd.to_numeric(chosen[target], errors="coerce").isna()]


def _files(found: Scan, runs: pd.DataFrame, unplaced: pd.DataFrame) -> pd.DataFrame:
    """Every record file read: used (in which cell), a duplicate of a run counted once, or skipped and why."""
    rows = [
        {"path": p, "status": "skipped", "reason": why, "variant": None, "column": None} for p, why in found.skipped
    ]
    rows += [
        {"path": p, "status": "superseded", "reason": f"{SUPERSEDED}: {kept} counted", "variant": None, "column": None}
        for p, kept in found.superseded
    ]
    rows += [
        {
            "path": p,
            "status": "duplicate",
            "reason": f"the same run as {kept}, counted once",
            "variant": None,
            "column": None,
        }
        for p, kept in found.duplicates
    ]
    bad = set(unplaced["path"])
    for r in runs.drop_duplicates("path").itertuples(index=False):
        placed = r.path not in bad
        rows.append(
            {
                "path": r.path,
                "status": "used" if placed else "skipped",
                "reason": None if placed else "completed, but without the metric reported",
                "variant": r.variant,
                "column": r.column,
            }
        )
    return pd.DataFrame(rows, columns=["path", "status", "reason", "variant", "column"])


def leaderboard(roots: Sequence[str | Path], metric: str = "accuracy", select: Sequence[str] = (), **options) -> Board:
    found = scan(roots)
    if not found.records:
        raise BoardError(f"no result records under {', '.join(map(str, roots))}")
    return build(found.records, metric, select=select, found=found, **options)
