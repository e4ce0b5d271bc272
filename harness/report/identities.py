"""Names for the board's rows and columns: a run's variant (the model and the fields that vary between models), its
family (the variant without its size fields) and its setting (the task and the task fields that vary), built so that
no two different configs share a cell but by seed."""

import json
from collections.abc import Collection, Iterable
from typing import Any

from harness.record import keys as record_keys


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


def short(key: str) -> str:
    return key.removeprefix("model.").removeprefix("task.")


class Identities:
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
            " ".join([*(str(v[0][j]) for j in vary_label), *(f"{short(keys[j])}={_text(v[1][j])}" for j in vary_key)])
            for v in ids
        ]

    def settings(self) -> list[str]:
        """A column name per run: the task label, then the task fields that vary between runs of that task."""
        ids = [self.column(i) for i in range(len(self.leaves))]
        vary = [j for j in range(len(self.column_keys)) if len({c[1][j] for c in ids}) > 1]
        return [
            " ".join([task, *(f"{short(self.column_keys[j])}={_text(c[1][j])}" for j in vary)])
            for task, c in ((c[0], c) for c in ids)
        ]
