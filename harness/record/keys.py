"""What each config key is to an experiment, declared once: the record's labels (Hydra's group choices), what names
a leaderboard row (the variant) or column (the task), what counts as size, and what changes nothing about the
result (left out of the run id), and which task fields change no example (left out of the data cache key). The CLI,
the board, the wandb reader and the task cache all read this table; nothing else lists keys.

A key is a config path (`trainer.lr`), a subtree (`paths`: every key below it) or a group choice (`model/mixer`).
Every config key not declared here is part of the experiment: it is in the run id and, if it differs between runs,
it names the variant (under `task.`: the column).
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    key: str
    label: str | None = None  # the name of a group choice in the record's `labels`
    board: str = "variant"  # variant: names a row; column: names a column; seed; none: not part of either
    size: bool = False  # a size field: --matched compares a variant's sizes
    in_run_id: bool = True  # False: does not change the result (where files go, how it is logged or resumed)
    in_data: bool = True  # False (task.* only): not in the data cache key of tasks/cache.py (the key has the split's
    # size n anyway; a name changes no example)


KEYS = (
    Key("model", label="model"),
    Key("model/mixer", label="mixer"),
    Key("model/norm", label="norm"),
    Key("model/ffn", label="ffn"),
    Key("model/position", label="position"),
    Key("task", label="task", board="column"),
    Key("suite", label="suite", board="none"),
    Key("experiment", label="experiment", board="none"),
    Key("hparams_search", board="none"),
    Key("tune", board="none", in_run_id=False),  # the fields a suite tunes; the board selects over them on val
    Key("seed", board="seed"),
    Key("name", board="none", in_run_id=False),  # the sweep or experiment: where records go, the wandb group
    Key("paths", board="none", in_run_id=False),
    Key("logger", board="none", in_run_id=False),
    Key("hydra", board="none", in_run_id=False),
    Key("skip_completed", board="none", in_run_id=False),
    Key("resume", board="none", in_run_id=False),  # resume is exact: a resumed run equals an uninterrupted one
    Key("save_model", board="none", in_run_id=False),  # whether the final weights are kept changes no result
    Key("eval_of", board="none"),  # archbench-eval: the run whose weights it read (harness/run/evaluate.py)
    Key("search", board="none", in_run_id=False),
    Key("resources", board="none", in_run_id=False),  # what a cluster launcher asks for (conf/config.yaml)
    Key("trainer.progress", board="none", in_run_id=False),
    Key("trainer.checkpoint_every", board="none", in_run_id=False),
    Key("trainer.peak_flops", board="none", in_run_id=False),  # changes only the MFU printed
    # how a step's global batch (trainer.batch_size) is cut over processes and passes: the same gradients up to
    # rounding, like the number of processes (the record's env.world_size); docs/distributed.md
    Key("trainer.micro_batch_size", board="none", in_run_id=False),
    Key("trainer.parallel", board="none", in_run_id=False),  # ddp or fsdp: the same step, the same checkpoint file
    *(Key(f"task.{k}", board="column", in_data=False) for k in ("num_train", "num_val", "num_test")),
    *(Key(f"task.{k}", board="column", in_data=False) for k in ("setting", "family")),  # MAD's names of a task
    Key("model.d_model", size=True),
    Key("model.n_layers", size=True),
)
LABELS = {k.key: k.label for k in KEYS if k.label}  # Hydra group -> label name
VARIANT_LABELS = tuple(k.label for k in KEYS if k.label and k.board == "variant")
SIZE_KEYS = tuple(k.key for k in KEYS if k.size)
NOT_DATA = tuple(k.key.removeprefix("task.") for k in KEYS if not k.in_data)  # task fields left out of the cache key


def declared(key: str) -> Key | None:
    """The declaration that covers `key` (itself or its nearest declared parent), None if undeclared."""
    key = key.lstrip("+~")
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        for k in KEYS:
            if k.key == ".".join(parts[:i]) and (i == len(parts) or "/" not in k.key):
                return k
    return None


def board_role(key: str) -> str:
    """variant, column, seed or none, for a config key or an override's key."""
    k = declared(key)
    if k is not None:
        return k.board
    return "column" if key.lstrip("+~").startswith("task.") else "variant"


def run_id(config: dict, code: dict | None = None) -> str:
    """A hash of the resolved config (its `auto` fields resolved) without the keys that do not change the result,
    and of `code`: the fingerprint of the code that trains it (harness/record/code.py) and the kernels its mixers
    resolved to. Without `code`: the config's id alone, which runs of the same config under other code share (records
    written before fingerprints have only this)."""
    identity = _without(config, "") if code is None else {"config": _without(config, ""), **code}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _without(node: object, prefix: str) -> object:
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        path = f"{prefix}{k}"
        decl = declared(path)
        if decl is not None and decl.key == path and not decl.in_run_id:
            continue
        out[k] = _without(v, path + ".")
    return out


def labels_of(choices: dict, layers: Sequence[str] | None = None) -> dict:
    """Hydra's choices of the labelled groups; a hybrid's mixer label is the period of its per-layer mixers, runs
    counted: [hyena, attention, hyena, attention] is hyena+attention, a 3:1 plan 3×gated_deltanet+attention."""
    labels = {LABELS[key]: value for key, value in choices.items() if key in LABELS and value is not None}
    if layers:
        labels["mixer"] = plan_label(layers)
    return labels


def plan_label(layers: Sequence[str]) -> str:
    """The shortest period of `layers` (p dividing its length, layers[i] == layers[i % p]), its runs written n×name,
    joined by +."""
    n = len(layers)
    period = next(p for p in range(1, n + 1) if n % p == 0 and all(x == layers[i % p] for i, x in enumerate(layers)))
    runs: list[list] = []
    for name in layers[:period]:
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    return "+".join(name if n == 1 else f"{n}×{name}" for name, n in runs)
