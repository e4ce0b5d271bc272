"""The runs table a board is built from: one row per result record with its variant, family and setting
(harness/report/identities.py), seed, status, metrics and costs; its columns (a setting, split by --group-by) and its
splits (test*: one column per matching split)."""

import re
from collections.abc import Iterable

import pandas as pd

from harness.record import keys as record_keys
from harness.report import BoardError
from harness.report.costs import costs
from harness.report.identities import Identities, lookup, short
from harness.report.table import natural


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
    ids = Identities(records, hide)
    frame.insert(0, "variant", ids.names())
    frame.insert(1, "family", ids.names(size=tuple(size)))
    frame.insert(2, "setting", ids.settings())
    return frame


def with_columns(runs: pd.DataFrame, group_by: str | None = None) -> pd.DataFrame:
    """Add `column`: the setting, split by the value of `group_by` when given."""
    if not group_by:
        return runs.assign(column=runs["setting"])
    return runs.assign(column=runs["setting"] + " " + short(group_by) + "=" + runs[group_by].astype(str))


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
        key=natural,
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
