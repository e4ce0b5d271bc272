"""A record's costs as the board reads them, every record counted the same way (Kaplan et al. 2020's N).

Records written since issue 28 carry `params_non_embedding` without the vocabulary and position matrices,
`params_embedding` with them, the backbone's `flops_per_token` (head excluded), `head_flops_per_scored` and the exact
`train_flops` (backbone × tokens + head × the targets the trainer scored). Older records counted the output head
(d_model × vocab_size, tied or not) as a non-embedding parameter and charged 6 × its size at every token; they are
recounted here from their config (`recounted`): the head moves to params_embedding and out of FLOPs/token. Their
train_flops is left empty: they did not count the targets they scored, and the board does not guess. A record whose
config lacks model.d_model or model.vocab_size keeps its figures (`old`). The board's legend says how many of each.
"""

from typing import Any

EXACT, RECOUNTED, OLD = "exact", "recounted", "old"


def costs(record: dict) -> tuple[dict[str, Any], str | None]:
    """(the record's costs on today's counting, how they were counted: exact | recounted | old; None: no model
    costs in the record)."""
    cost = dict(record.get("cost") or {})
    if "head_flops_per_scored" in cost:
        return cost, EXACT
    if cost.get("flops_per_token") is None and cost.get("params_non_embedding") is None:
        return cost, None
    model = (record.get("config") or {}).get("model") or {}
    d, v = model.get("d_model"), model.get("vocab_size")
    if not (isinstance(d, int) and isinstance(v, int)):
        return cost, OLD
    head = d * v
    if cost.get("params_non_embedding") is not None:
        cost["params_non_embedding"] -= head
        if cost.get("params") is not None:
            cost["params_embedding"] = cost["params"] - cost["params_non_embedding"]
    if cost.get("flops_per_token") is not None:
        cost["flops_per_token"] -= 6 * head
    cost["head_flops_per_scored"] = 6 * head
    cost.pop("train_flops", None)
    return cost, RECOUNTED
