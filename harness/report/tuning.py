"""Tuned comparisons by default: a suite or experiment declares which fields it tunes (`tune: [trainer.lr]` in its
YAML, with the grid as a swept parameter), every record carries the declaration, and the board selects on validation
over the declared grid with no flag to remember. Where the records of a cell hold one value of a tuned field (a user
fixed it), the board says the comparison is not tuned."""

from collections.abc import Sequence

import pandas as pd

TUNED_BY_DEFAULT = ("trainer.lr",)  # what the board reports on when nothing is declared: "not tuned" or the grid


def declared(records: Sequence[dict]) -> list[str]:
    """The fields the records' configs declare as tuned (`tune`), in declaration order, each once."""
    out: list[str] = []
    for r in records:
        tune = (r.get("config") or {}).get("tune") or []
        out.extend(k for k in (tune if isinstance(tune, list) else []) if isinstance(k, str) and k not in out)
    return out


def automatic(records: Sequence[dict], select: Sequence[str]) -> list[str]:
    """`select` if given; else the declared fields whose value varies between the records (a grid to choose from)."""
    if select:
        return list(select)
    out = []
    for key in declared(records):
        values = {_value(r.get("config") or {}, key) for r in records}
        if len(values) > 1:
            out.append(key)
    return out


def legend(runs: pd.DataFrame, records: Sequence[dict], select: Sequence[str], given: Sequence[str]) -> str | None:
    """One line: how the comparison was tuned (a declared grid, selected on val) or that it was not (one value of a
    tuned field per cell); None when nothing is tuned and nothing declares or varies a learning rate."""
    keys = declared(records)
    if select:
        how = "declared by the suite (tune:), selected automatically" if not given else "asked for (--select)"
        return f"tuned: {', '.join(select)} chosen per cell on validation over its grid ({how}); test reported"
    fixed = [k for k in (keys or TUNED_BY_DEFAULT) if k in runs]
    if not fixed:
        return None
    values = ", ".join(f"{k}={'/'.join(map(str, sorted(set(runs[k].dropna()))))}" for k in fixed)
    why = "the suite declares a grid, but these records hold one value per cell" if keys else "no grid declared"
    return f"not tuned: {values} for every variant ({why}); a verdict at one setting may flip at another"


def _value(config: dict, key: str) -> str:
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return repr(config)


def ranked(runs: pd.DataFrame, cell: Sequence[str], keys: Sequence[str]) -> pd.DataFrame:
    """One row per grid point (`cell` + `keys` values) of `runs` (one row per run, with columns `score`: the val
    metric signed so higher is better, NaN where the run failed; `failed`: 1.0 for a failed or diverged run; and
    `tiebreak`: the val loss negated, or NaN), best first within each cell. The order, shared by the board's
    selection and the race's halving (harness/run/race.py) so both choose the same grid point: more runs launched
    first (a racing survivor got seeds its eliminated rivals did not), then a lower failure rate (an lr that diverged
    on one seed of three does not win on the two that survived), then the better mean score, then the better mean
    tiebreak (several lrs at accuracy 1.000: the lower val loss). Grid points with no completed run are dropped."""
    group = [*cell, *keys]
    means = runs.groupby(group, dropna=False, sort=False).agg(
        runs=("failed", "size"), failed=("failed", "mean"), score=("score", "mean"), tiebreak=("tiebreak", "mean")
    )
    means = means[means["failed"] < 1].reset_index()
    return means.sort_values(
        ["runs", "failed", "score", "tiebreak"],
        ascending=[False, True, False, False],
        kind="stable",
        na_position="last",
    )
