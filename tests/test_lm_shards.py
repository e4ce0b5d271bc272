"""Tokenizers and token shards of lm_text (tasks/lm_tokenizer.py, tasks/lm_shards.py, archbench-prepare): the shards
hold exactly the corpus, reads are deterministic per (seed, step), bits per byte is total nats over bytes, and
tokenizers or shards that do not fit are refused in one line before training."""

import json
import math

import numpy as np
import pytest
import torch

from harness.run import prepare as prepare_cli
from harness.run.train import TrainConfig, train
from tasks import lm_shards
from tasks.lm_text import LMText
from tests.test_cli import archbench, records

VOCAB = 300  # a small BPE: 256 bytes and 44 merges, trained in well under a second on the sample


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bpe_shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpe") / "shards"
    with pytest.MonkeyPatch.context() as mp:  # the text's datasets cache, private to the tests
        mp.setenv("ARCHBENCH_CACHE", str(folder.parent / "cache"))
        prepare_cli.main(["task.tokenizer=bpe", f"task.vocab_size={VOCAB}", f"task.shards={folder}", "--num-proc=1"])
    return folder


def test_bpe_shards_hold_exactly_the_text_of_each_split(bpe_shards):
    from tokenizers import Tokenizer

    meta = json.loads((bpe_shards / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == VOCAB and meta["format"] == lm_shards.FORMAT
    tok = Tokenizer.from_file(str(bpe_shards / "tokenizer.json"))
    streams = LMText(tokenizer="bpe", vocab_size=VOCAB).byte_streams(align=True)
    for name, part in streams.items():
        ids = np.fromfile(bpe_shards / f"{name}.bin", dtype=np.uint16)
        assert meta["splits"][name] == {"tokens": len(ids), "bytes": len(part)}
        assert len(ids) < len(part), "BPE merges bytes"
        assert tok.decode(ids.tolist()).encode() == part.tobytes(), f"{name}.bin decodes to the {name} text"


def test_byte_shards_are_the_quick_paths_bytes(tmp_path):
    task = LMText(seq_len=64, shards=str(tmp_path / "b"))
    splits = task.splits(0)
    for name, part in LMText().byte_streams().items():
        np.testing.assert_array_equal(np.fromfile(tmp_path / "b" / f"{name}.bin", dtype=np.uint16), part)
    val = splits["val"].batch(slice(None))[0]  # the same val windows as the quick path, which is in memory
    np.testing.assert_array_equal(val.numpy(), LMText(seq_len=64).splits(0)["val"].inputs.numpy())


def test_train_windows_depend_on_seed_and_step_alone(bpe_shards):
    task = LMText(tokenizer="bpe", vocab_size=VOCAB, seq_len=32, shards=str(bpe_shards))
    a, b = task.splits(0)["train"], task.splits(0)["train"]
    data = np.fromfile(bpe_shards / "train.bin", dtype=np.uint16)
    for step in (0, 1, 57):
        x, y, positions = a.windows_at(7, step, 8)
        x2, y2, _ = b.windows_at(7, step, 8)
        assert x.dtype == torch.long and torch.equal(x, x2) and torch.equal(y, y2)
        assert torch.equal(x[:, 1:], y[:, :-1]) and positions.shape == x.shape
        for start, row in zip(a.offsets(7, step, 8), x, strict=True):
            np.testing.assert_array_equal(row.numpy(), data[start : start + 32])
    assert not torch.equal(a.windows_at(7, 0, 8)[0], a.windows_at(8, 0, 8)[0])
    assert not torch.equal(a.windows_at(7, 0, 8)[0], a.windows_at(7, 1, 8)[0])


def test_training_from_shards_repeats_bitwise_and_learns(bpe_shards, compose):
    from harness.run.build import build

    task_args = ["task=lm_text", "task.tokenizer=bpe", f"task.vocab_size={VOCAB}", f"task.shards={bpe_shards}"]
    cfg = compose([*task_args, "task.seq_len=32", "task.num_val=20", "task.num_test=20", "model.d_model=32"])
    train_cfg = TrainConfig(max_steps=30, batch_size=8, lr=3e-3, warmup_steps=0, eval_every=15, progress=False)

    def run():
        torch.manual_seed(0)
        task, model, _ = build(cfg)
        return train(model, task.splits(0), train_cfg, seed=0)["metrics"]

    first, second = run(), run()
    assert first == second
    assert first["val/loss"] < math.log(VOCAB) - 0.5, "30 steps learn something of the text"


def test_bits_per_byte_is_total_nats_over_bytes(bpe_shards):
    task = LMText(tokenizer="bpe", vocab_size=VOCAB, shards=str(bpe_shards))
    meta = json.loads((bpe_shards / "meta.json").read_text())["splits"]["val"]
    got = task.derived_metrics({"val/loss": 2.5})
    assert got["val/bits_per_byte"] == pytest.approx(2.5 * meta["tokens"] / math.log(2) / meta["bytes"])
    assert got["val/perplexity"] == pytest.approx(math.exp(2.5))
    byte = LMText(shards="unused").derived_metrics({"val/loss": 2.5})
    assert byte["val/bits_per_byte"] == 2.5 / math.log(2), "for bytes, loss / ln 2"


def test_the_cache_folder_is_keyed_by_data_settings_and_tokenizer():
    base = LMText(tokenizer="bpe", vocab_size=VOCAB)
    assert base.shards_folder() == LMText(tokenizer="bpe", vocab_size=VOCAB, seq_len=7).shards_folder()
    for other in (LMText(tokenizer="bpe", vocab_size=VOCAB + 1), LMText(tokenizer="bpe", val_fraction=0.2)):
        assert other.shards_folder() != base.shards_folder()


def test_a_prepared_folder_is_reused_not_rewritten(bpe_shards, capsys):
    before = (bpe_shards / "train.bin").stat().st_mtime_ns
    prepare_cli.main(["task.tokenizer=bpe", f"task.vocab_size={VOCAB}", f"task.shards={bpe_shards}"])
    assert (bpe_shards / "train.bin").stat().st_mtime_ns == before
    assert f"vocab {VOCAB}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task.tokenizer=no/such/tokenizer.json"], "task.tokenizer='no/such/tokenizer.json' does not exist"),
        (["task.tokenizer={shards}/tokenizer.json", "task.vocab_size=256"], "task.vocab_size=256 is smaller than"),
        (["task.tokenizer=byte", "task.shards={shards}"], "was prepared with another tokenizer (bpe-300, not byte)"),
        (
            ["task.tokenizer=bpe", "task.vocab_size=400", "task.shards={shards}"],
            "another tokenizer (bpe-300, not bpe-400)",
        ),
        (
            ["task.tokenizer=bpe", f"task.vocab_size={VOCAB}", "task.val_fraction=0.2", "task.shards={shards}"],
            "val_fraction",
        ),
    ],
)
def test_prepare_refuses_in_one_line(bpe_shards, overrides, message, capsys):
    with pytest.raises(SystemExit) as stop:
        prepare_cli.main([o.format(shards=bpe_shards) for o in overrides])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and message in err


def test_archbench_refuses_shards_of_another_tokenizer_before_training(tmp_path, bpe_shards):
    proc = archbench(tmp_path, "task=lm_text", f"task.shards={bpe_shards}", "trainer=smoke")
    assert proc.returncode == 2 and not records(tmp_path)
    assert proc.stderr.strip().startswith(f"archbench: error: task.shards='{bpe_shards}' was prepared with another")


@pytest.mark.slow
def test_archbench_trains_from_bpe_shards_and_records_bits_per_byte(tmp_path, bpe_shards):
    args = ["task=lm_text", "task.tokenizer=bpe", f"task.vocab_size={VOCAB}", f"task.shards={bpe_shards}"]
    proc = archbench(tmp_path, *args, "task.seq_len=32", "trainer=smoke")
    assert proc.returncode == 0, proc.stderr
    [record] = records(tmp_path)
    meta = json.loads((bpe_shards / "meta.json").read_text())["splits"]["test"]
    m = record["metrics"]
    assert m["test/bits_per_byte"] == pytest.approx(m["test/loss"] / math.log(2) * meta["tokens"] / meta["bytes"])
    assert m["test/perplexity"] == pytest.approx(math.exp(m["test/loss"]))


def test_parallel_tokenizing_writes_the_same_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(lm_shards, "CHUNK_BYTES", 4096)  # about ten chunks of the sample's train split
    tok = tmp_path / "tok"
    prepare_cli.main(["task.tokenizer=bpe", f"task.vocab_size={VOCAB}", f"task.shards={tok}", "--num-proc=1"])
    args = [f"task.tokenizer={tok}/tokenizer.json", f"task.vocab_size={VOCAB}"]
    for n in (1, 2):
        prepare_cli.main([*args, f"task.shards={tmp_path / str(n)}", f"--num-proc={n}"])
    for name in ("train", "val", "test"):
        one, two = (np.fromfile(tmp_path / str(n) / f"{name}.bin", dtype=np.uint16) for n in (1, 2))
        np.testing.assert_array_equal(one, two)
        np.testing.assert_array_equal(one, np.fromfile(tok / f"{name}.bin", dtype=np.uint16))


def test_byte_shards_and_the_quick_path_are_different_runs(compose):
    """With bytes, task.shards=null trains on fixed windows in memory and a folder on random windows: a run on one
    must not be skipped as the other, already completed."""
    from omegaconf import OmegaConf

    from harness.record.results import run_id

    ids = {
        run_id(OmegaConf.to_container(compose(["task=lm_text", *extra]), resolve=True))
        for extra in ([], ["task.shards=/tmp/bytes"])
    }
    assert len(ids) == 2
