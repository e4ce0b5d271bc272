"""Costs that count the architecture: records written before the head was counted apart are recounted from their
config to today's figures, marked, and never given a train_flops they did not count."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from harness.report import board
from harness.report.costs import EXACT, OLD, RECOUNTED, costs
from harness.run.build import build_model
from tests.test_board import record, write_all

SMALL = ["task.vocab_size=512", "task.seq_len=32", "task.num_kv_pairs=4"]


def old_counts(model: nn.Module, seq_len: int) -> tuple[int, int]:
    """What archbench recorded before: every nn.Embedding but a tied head left out, the head kept in, 6 × that."""
    dropped = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Embedding)}
    dropped.pop(id(model.head.weight), None)
    non_embedding = model.num_params() - sum(p.numel() for p in dropped.values())
    return non_embedding, 6 * non_embedding + sum(b.mixer.flops_per_token(seq_len) for b in model.blocks)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("position", ["learned", "rope", "none"])
def test_an_old_record_is_recounted_to_what_the_model_counts_today(compose, position, tie):
    cfg = compose([*SMALL, f"model/position={position}", f"model.tie_embeddings={tie}"])
    with torch.device("meta"):
        model = build_model(cfg)
    old_ne, old_fpt = old_counts(model, 32)
    old = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "cost": {"params": model.num_params(), "params_non_embedding": old_ne, "flops_per_token": old_fpt},
    }
    cost, how = costs(old)
    assert how == RECOUNTED
    assert cost["params_non_embedding"] == model.num_params(non_embedding=True)
    assert cost["params_embedding"] == model.num_embedding_params()
    assert cost["flops_per_token"] == model.flops_per_token(32)
    assert cost["head_flops_per_scored"] == model.head_flops_per_scored()


def test_new_records_are_read_as_written_and_records_without_the_sizes_are_kept_and_marked():
    new = {"cost": {"params_non_embedding": 10, "head_flops_per_scored": 6, "train_flops": 99}}
    assert costs(new) == (new["cost"], EXACT)
    unknown = {"config": {"model": {}}, "cost": {"params_non_embedding": 10, "flops_per_token": 60}}
    assert costs(unknown) == (unknown["cost"], OLD)
    assert costs({"cost": {"tokens_seen": 5}}) == ({"tokens_seen": 5}, None)  # a failed run, no model costs


def test_the_board_shows_embedding_params_apart_and_says_which_runs_were_recounted(tmp_path):
    def cost(d, exact):
        head = d * 100
        if exact:
            return {
                "params": 11 * d + head,
                "params_non_embedding": 10 * d,
                "params_embedding": d + head,
                "flops_per_token": 60 * d,
                "head_flops_per_scored": 6 * head,
                "tokens_seen": 1000,
                "train_flops": 60 * d * 1000 + 6 * head * 50,
            }
        return {"params": 11 * d + head, "params_non_embedding": 10 * d + head, "flops_per_token": 60 * d + 6 * head}

    recs = []
    for mixer, exact in (("attention", True), ("hyena", False)):
        for d in (32, 64):
            for s in (0, 1):
                r = record(mixer, "mqar", s, 0.5 + d / 200 + s / 100, d_model=d, cost=cost(d, exact))
                r["config"]["model"]["vocab_size"] = 100
                recs.append(r)
    write_all(tmp_path, recs)
    result = board.leaderboard([tmp_path], matched="flops")
    table = result.table
    for d, params, emb, flops in ((32, "320", "3.23k", "1.92k"), (64, "640", "6.46k", "3.84k")):
        for mixer in ("attention", "hyena"):  # the old record's figures equal the new one's once recounted
            row = table.loc[f"{mixer} d_model={d}"]
            assert (row["params"], row["emb params"], row["FLOPs/token"]) == (params, emb, flops)
    assert any(line.startswith("4 runs recorded before the head was counted apart") for line in result.legend)
    long = result.long.set_index(["variant", "column"])
    assert long.loc[("attention d_model=32", "mqar"), "train_flops"] == 60 * 32 * 1000 + 6 * 3200 * 50
    assert long["train_flops"].isna().tolist() == long.index.get_level_values(0).str.startswith("hyena").tolist()
    matched, lines = result.views["matched"]
    assert list(matched.index) == ["attention"]  # hyena's train_flops is unknown: not placed, and said so
    assert any("not shown: 2 cells without train_flops" in line for line in lines)
