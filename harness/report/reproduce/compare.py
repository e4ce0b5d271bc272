"""Our numbers beside the paper's: the records of a reproduction reduced to the cells of the paper's table (best over
the card's `select` grid on val, test reported on it, mean over seeds, or where the card's `seeds: max` says the
paper reports its best seed, the test value of the seed best on val) and joined with the published values."""

from fnmatch import fnmatch

import numpy as np
import pandas as pd

from harness.record.keys import board_role
from harness.report.identities import leaves, lookup
from harness.report.selection import choose
from tasks.registry import LOWER_IS_BETTER


def norm(value: object) -> str | int | float:
    """Numbers as numbers (YAML's 64 and a config's 64 compare equal), everything else as text."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return int(number) if number.is_integer() else number


def field(record: dict, path: str, split: str) -> str | int | float:
    """A card field of a record: labels.<key>, config.<key>, or split_length (the length a test split was drawn at:
    the training length for `test`, <length> for `test@<length>`)."""
    if path == "split_length":
        return norm(split.partition("@")[2] or lookup(record.get("config") or {}, "task.seq_len"))
    head, _, rest = path.partition(".")
    if head not in ("labels", "config"):
        raise ValueError(f"card field {path!r} must start with labels. or config. (or be split_length)")
    return norm(lookup(record.get(head) or {}, rest))


def splits(record: dict, pattern: str, metric: str) -> list[str]:
    """The splits of a record whose <split>/<metric> matches the card's split pattern (e.g. test, or test* for test
    and every test@<length>); a failed record counts under the pattern itself."""
    found = [k.rsplit("/", 1)[0] for k in (record.get("metrics") or {}) if k.endswith(f"/{metric}")]
    found = [s for s in found if fnmatch(s, pattern) and not s.startswith("val")]
    return sorted(found) or [pattern]


def runs(records: list[dict], card: dict) -> pd.DataFrame:
    """One row per (record, split): the card's row and column fields, variant and column names, the record's index,
    status, the `select` keys, val/<metric> and the value of <split>/<metric>."""
    metric, fields = card["metric"], {**card["row"], **card["columns"]}
    rows = []
    for i, r in enumerate(records):
        metrics = r.get("metrics") or {}
        for split in splits(r, card["split"], metric):
            row = {name: field(r, path, split) for name, path in fields.items()}
            row["variant"] = " ".join(str(row[k]) for k in card["row"])
            row["column"] = " ".join(f"{k}={row[k]}" for k in card["columns"])
            row.update({k: lookup(r.get("config") or {}, k) for k in card.get("select", [])})
            row.update(
                {
                    "record": i,
                    "seed": r.get("seed"),
                    "status": r.get("status"),
                    f"metric:val/{metric}": metrics.get(f"val/{metric}"),
                    "value": metrics.get(f"{split}/{metric}"),
                }
            )
            rows.append(row)
    return pd.DataFrame(rows)


def ours(records: list[dict], card: dict) -> pd.DataFrame:
    """Per cell of the paper's table (row and column fields): mean over seeds of the chosen runs (or, where the
    card's `seeds` is max, the test value of the seed with the best val/<metric>: the seed is chosen on validation,
    never on test; equal val, the lowest seed), std and n over seeds, and the selection made (with a `score` card:
    also the mean over columns per variant, MAD's score)."""
    keys = [*card["row"], *card["columns"]]
    frame = runs(records, card)
    if frame.empty:
        return pd.DataFrame(columns=[*keys, "ours", "std", "n", "selected"])
    chosen, selection = choose(frame, card["metric"], card.get("select", []))
    same_setup(chosen, records, card)
    chosen = chosen.assign(value=pd.to_numeric(chosen["value"], errors="coerce"))
    cell = [*keys, "variant", "column"]
    cells = chosen.groupby(cell, sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    cells = cells.rename(columns={"mean": "ours", "count": "n"})
    if card.get("seeds", "mean") == "max":  # the paper reports its best seed (Delétang et al., Grazzi et al.)
        sign = 1 if higher_is_better(card["metric"]) else -1
        val = pd.to_numeric(chosen[f"metric:val/{card['metric']}"], errors="coerce") * sign
        ordered = chosen.assign(val=val).sort_values(["val", "seed"], ascending=[False, True], na_position="last")
        best = ordered.drop_duplicates(cell).rename(columns={"value": "best"})[[*cell, "best"]]
        cells = cells.merge(best, on=cell, how="left").assign(ours=lambda f: f["best"]).drop(columns="best")
    if card.get("select"):
        cells = cells.merge(selection[["variant", "column", "selected"]], on=["variant", "column"], how="left")
    else:
        cells["selected"] = ""
    if card.get("score") and card["columns"]:
        total = frame["column"].nunique()
        per = cells.groupby(list(card["row"]), sort=False)["ours"].agg(["mean", "count"]).reset_index()
        per = per[per["count"] == total].rename(columns={"mean": "ours"}).drop(columns="count")
        per = per.assign(**{k: "score" for k in card["columns"]}, n=np.nan, std=np.nan, selected="mean over tasks")
        cells = pd.concat([cells, per], ignore_index=True)
    return cells[[*keys, "ours", "std", "n", "selected"]]


def same_setup(chosen: pd.DataFrame, records: list[dict], card: dict) -> None:
    """Refuse a cell whose runs differ in more than their seed (and the card's `select` grid): records of an older
    card version, or of a run with other overrides, left in the results folder would otherwise be averaged (or, with
    `seeds: max`, the better taken) into the paper's cell without a word."""
    hide = tuple(card.get("select", []))
    for (variant, column), cell in chosen.groupby(["variant", "column"], sort=False):
        configs = [leaves(records[i].get("config") or {}) for i in cell["record"].unique()]
        differ = {
            k: sorted({c.get(k, "(none)") for c in configs})
            for k in sorted({k for c in configs for k in c})
            if board_role(k) in ("variant", "column")
            and not any(k == h or k.startswith(h + ".") for h in hide)
            and len({c.get(k) for c in configs}) > 1
        }
        if differ:
            what = "; ".join(f"{k}: {', '.join(v[:3])}" for k, v in list(differ.items())[:3])
            name = " / ".join(x for x in (variant, column) if x)
            raise ValueError(
                f"the cell {name} holds runs whose configs differ in more than the seed ({what}"
                f"{'; ...' if len(differ) > 3 else ''}): keep one version of a card's runs per --results folder "
                "(move the others away)"
            )


def published(card: dict) -> pd.DataFrame:
    fields = card["published"]["fields"]
    rows = [[norm(v) for v in row] for row in card["published"]["rows"]]
    return pd.DataFrame(rows, columns=fields).rename(columns={"value": "paper"})


def side_by_side(records: list[dict], card: dict) -> pd.DataFrame:
    """Every cell that we measured or the paper published: row and column fields, ours (mean), std, n, selected,
    paper. Sorted by the column fields, then the row fields."""
    keys = [*card["row"], *card["columns"]]
    table = ours(records, card).merge(published(card), on=keys, how="outer")
    table = table.assign(variant=table[list(card["row"])].astype(str).agg(" ".join, axis=1))
    order = [*card["columns"], *card["row"]]
    return table.sort_values(order, key=lambda s: s.map(_order), kind="stable").reset_index(drop=True)


def _order(value: object) -> tuple[int, object, str]:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def render(table: pd.DataFrame, card: dict) -> str:
    """The side-by-side table as Markdown: ours as mean (± std over n seeds), the paper's value, the selection."""
    keys = [*card["row"], *card["columns"]]
    if card["columns"] and table["ours"].notna().any():  # the paper's cells at the settings we ran, not all of them
        ran = table.loc[table["ours"].notna(), list(card["columns"])].drop_duplicates()
        table = table.merge(ran, on=list(card["columns"]))
    out = table[keys].astype(str).copy()
    over = card.get("seeds", "mean")
    out["ours"] = [_cell(m, s, n, over) for m, s, n in zip(table["ours"], table["std"], table["n"], strict=True)]
    out["paper"] = ["" if pd.isna(v) else f"{v:.3f}" for v in table["paper"]]
    if card.get("select"):
        out["selected on val"] = table["selected"].fillna("").astype(str)
    return out.to_markdown(index=False)


def _cell(value: float, std: float, n: float, over: str = "mean") -> str:
    if pd.isna(value):
        return "not run"
    if pd.notna(n) and n > 1 and over == "max":
        return f"{value:.3f} (the best of {int(n)} seeds on val)"
    if pd.notna(n) and n > 1 and pd.notna(std):
        return f"{value:.3f} ± {std:.3f} (n={int(n)})"
    return f"{value:.3f}"
