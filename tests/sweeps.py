"""What the tests of sweeps share: the smallest run that trains (SMOKE), and a sweep's records and board as the
launcher tests (local, SLURM, Ray) compare them."""

import csv
import json
from pathlib import Path

from harness.record import results

SMOKE = [
    "trainer=smoke",
    "model/ffn=none",
    "model.d_model=32",
    "task.num_train=64",
    "task.num_val=16",
    "task.num_test=16",
]
BOARD_COLUMNS = (
    "variant",
    "column",
    "failed",
    "mean",
    "std",
    "n",
    "params",
    "flops_per_token",
    "tokens_seen",
    "ci_lo",
    "ci_hi",
    "leader",
    "p_vs_leader",
    "tied",
    "rank",
    "avg_rank",
)  # all but time and memory: what two launchers of one sweep must agree on


def records(where: Path) -> dict[str, dict]:
    """The records under `where` by run id (one per run: a second record of a run in one sweep fails)."""
    recs = [json.loads(p.read_text()) for p in sorted(where.rglob(results.RECORD))]
    by_id = {r["run_id"]: r for r in recs}
    assert len(by_id) == len(recs), "a run has two records in one sweep"
    return by_id


def board(sweep: Path) -> list[dict]:
    """The sweep's leaderboard.csv, its BOARD_COLUMNS only."""
    with open(sweep / "leaderboard.csv") as f:
        return [{k: row[k] for k in BOARD_COLUMNS} for row in csv.DictReader(f)]
