"""Language modeling on real text: local files round-trip through the real `datasets.load_dataset` path, the
splits are deterministic and disjoint, hub names fail at once offline, and bits per byte reach the record."""

import glob
import math

import numpy as np
import pytest

from tasks import lm_text
from tasks.lm_text import LMText
from tests.test_cli import archbench, records


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHBENCH_CACHE", str(tmp_path / "cache"))


def write_corpus(folder, n_files=3, size=4000, seed=0):
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "éclair", "naïve", "zeta"]  # some multi-byte UTF-8
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for i in range(n_files):
        text = " ".join(rng.choice(words, size=size // 6)) + f"\nfile {i} ends here\n"
        (folder / f"part{i}.txt").write_text(text, encoding="utf-8")
        texts.append(text)
    return texts


def test_a_local_file_round_trips_through_load_dataset(tmp_path):
    [text] = write_corpus(tmp_path / "one", n_files=1, size=6000)
    task = LMText(data_files=str(tmp_path / "one" / "part0.txt"), seq_len=64, val_fraction=0.1, test_fraction=0.2)
    task.check()
    data = text.encode("utf-8")
    n_test, n_val = int(len(data) * 0.2), int(len(data) * 0.1)
    regions = {
        "train": data[: len(data) - n_test - n_val],
        "val": data[len(data) - n_test - n_val : -n_test],
        "test": data[-n_test:],
    }
    splits = task.splits(0)
    for name, split in splits.items():
        x, y = split.inputs.numpy(), split.targets.numpy()
        assert x.shape[1] == 64 and len(x) > 0
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # next-byte targets at every position
        for row_x, row_y in zip(x, y, strict=True):
            window = bytes(row_x.astype(np.uint8)) + bytes([row_y[-1]])
            assert window in regions[name], f"a {name} window comes from the {name} part of the text"
    val = splits["val"].inputs.numpy()
    assert len(val) == (len(regions["val"]) - 1) // 64, "every val window, from the start of its part"
    assert bytes(val[0].astype(np.uint8)) == regions["val"][:64]


def test_folders_and_globs_read_every_file_in_order(tmp_path):
    texts = write_corpus(tmp_path / "corpus")
    (tmp_path / "corpus" / ".hidden").write_text("never read")
    for spec in (tmp_path / "corpus", tmp_path / "corpus" / "*.txt"):
        task = LMText(data_files=str(spec), seq_len=32, val_fraction=0.0, test_fraction=0.0)
        assert task.files() == sorted(str(p) for p in (tmp_path / "corpus").glob("*.txt"))
        assert task.texts()["train"] == "".join(texts)


def test_train_windows_depend_on_the_seed_and_val_test_do_not(tmp_path):
    write_corpus(tmp_path / "c")
    task = LMText(data_files=str(tmp_path / "c"), seq_len=32, num_train=50, num_val=7)
    a, b, other = task.splits(0), task.splits(0), task.splits(1)
    assert (a["train"].inputs == b["train"].inputs).all() and len(a["train"]) == 50 and len(a["val"]) == 7
    assert not (a["train"].inputs == other["train"].inputs).all()
    assert (a["val"].inputs == other["val"].inputs).all() and (a["test"].inputs == other["test"].inputs).all()


def test_bits_per_byte_is_the_loss_in_bits_and_perplexity_its_exp():
    got = LMText().derived_metrics({"val/loss": 2.0, "test/loss": 1.0, "val/accuracy": 0.5, "test@x/loss": None})
    assert got == {
        "val/bits_per_byte": 2.0 / math.log(2),
        "test/bits_per_byte": 1.0 / math.log(2),
        "val/perplexity": math.exp(2.0),
        "test/perplexity": math.exp(1.0),
    }


def test_the_shipped_sample_works_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    task = LMText(seq_len=128)
    task.check()
    splits = task.splits(0)
    assert all(len(s) > 0 for s in splits.values()) and b"xz" in bytes(
        splits["train"].inputs[:20].numpy().astype(np.uint8).ravel()
    )


@pytest.mark.parametrize("var", ["HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"])
def test_a_hub_name_offline_fails_at_once_saying_to_pass_local_files(monkeypatch, var):
    monkeypatch.setenv(var, "1")
    with pytest.raises(ValueError, match=rf"dataset='wikitext' needs the Hugging Face hub.*{var}=1.*task.data_files="):
        LMText(dataset="wikitext", dataset_config="wikitext-103-raw-v1").check()
    with pytest.raises(
        ValueError, match=rf"tokenizer='gpt2' is no local file.*needs the Hugging Face hub.*{var}=1.*tokenizer.json"
    ):
        LMText(tokenizer="gpt2").check()


def test_an_unreachable_hub_fails_within_seconds(monkeypatch):
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    with pytest.raises(ValueError, match="cannot connect to hub.invalid|no answer from hub.invalid"):
        LMText(dataset="roneneldan/TinyStories").check()
    assert lm_text.hub_unavailable() is not None


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(data_files="no/such/file.txt"), "data_files='no/such/file.txt' does not exist"),
        (dict(data_files="x.txt", dataset="wikitext"), "set one of them"),
        (dict(tokenizer="bpe", vocab_size=200), "vocab_size=200 must be at least 256 for the bpe tokenizer"),
        (dict(val_fraction=0.6, test_fraction=0.5), "leave text to train on"),
        (dict(num_train=0), "num_train=0 must be positive"),
    ],
)
def test_bad_settings_name_their_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LMText(**kwargs).check()


@pytest.mark.slow
def test_archbench_runs_on_a_local_text_and_records_bits_per_byte(tmp_path):
    write_corpus(tmp_path / "corpus")
    proc = archbench(
        tmp_path,
        "task=lm_text",
        f"task.data_files={tmp_path / 'corpus'}",
        "task.seq_len=32",
        "trainer=smoke",
        env={"ARCHBENCH_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr
    [record] = records(tmp_path)
    m = record["metrics"]
    assert record["status"] == "completed"
    assert m["test/bits_per_byte"] == pytest.approx(m["test/loss"] / math.log(2))
    assert m["val/bits_per_byte"] == pytest.approx(m["val/loss"] / math.log(2))


def test_archbench_names_task_data_files_when_it_does_not_exist(tmp_path):
    proc = archbench(tmp_path, "task=lm_text", "task.data_files=missing.txt", "trainer=smoke")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "archbench: error: task.data_files='missing.txt' does not exist (or holds no files)"


def test_the_python_stdlib_resolver_names_a_folder_of_text_every_machine_has(compose):
    cfg = compose(["task=lm_text", "task.data_files='${python_stdlib:}/*.py'"])
    files = glob.glob(cfg.task.data_files)
    assert len(files) > 100 and all(f.endswith(".py") for f in files)
