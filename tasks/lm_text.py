"""Language modeling on real text, loaded through Hugging Face `datasets.load_dataset`, byte-level by default.

Sources (one of):
- `data_files`: a local text file, a folder (every file in it, recursively, in sorted order) or a glob, read with
  the `text` builder, one document per file. Neither set: the public-domain sample in tasks/data/ (about 50 KB).
- `dataset` (+ `dataset_config`): a hub dataset by name, e.g. `wikitext` with `wikitext-103-raw-v1`, or
  `roneneldan/TinyStories`, when the machine is online. Offline (HF_DATASETS_OFFLINE or HF_HUB_OFFLINE set, or the
  hub unreachable: a 3-second connection check), `check()` fails at once, saying to pass local files.

Splits, deterministic: a hub dataset's own `validation`/`test` splits where it has them; whatever is missing (all
of it for local files) is cut from the end of the training text: the last test_fraction of its bytes is test, the
val_fraction before that val. The rows of a split are joined with newlines and encoded as UTF-8 bytes (vocab 256),
then cut into windows of seq_len + 1 bytes (stride seq_len): inputs window[:-1], targets window[1:], every
position scored. Train windows start at a phase drawn from the seed and, if there are more than num_train, a
random subset of them is taken; val and test windows are the same for every seed (evenly spaced if capped), so runs
are compared on the same text.

Tokenizers other than bytes (`tokenizer`: bpe, a tokenizer.json, a hub name: tasks/lm_tokenizer.py), or `shards` set,
take the path at scale: the corpus is tokenized once into token shards on disk (tasks/lm_shards.py; `archbench-prepare`
does it ahead of time, else the first run does), in the folder `shards` or, when null, in a folder of the cache keyed
by the data settings and the tokenizer. Training then reads random windows from the memmap each step.
Metrics: loss (nats per token), accuracy, perplexity (exp of the loss) and bits per byte: the split's total nats /
ln 2 / its UTF-8 bytes, i.e. loss / ln 2 * tokens / bytes, with the split's token and byte counts (exact where the
windows cover the split; with num_val/num_test capping them, the split's average bytes per token), so runs with
different tokenizers compare; for bytes it is loss / ln 2.
"""

import glob
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasks import cache, lm_shards, lm_tokenizer
from tasks.base import LOWER, SPLITS, Count, OpenFraction, Split, Task, split_rng
from tasks.hub import hub_unavailable

SAMPLE = Path(__file__).parent / "data"


@dataclass
class LMText(Task):
    data_files: str | None = None  # a local file, folder or glob; neither this nor dataset: the sample text
    dataset: str | None = None  # a hub dataset name, e.g. wikitext or roneneldan/TinyStories
    dataset_config: str | None = None  # e.g. wikitext-103-raw-v1
    text_field: str = "text"
    tokenizer: str = "byte"  # byte, bpe (trained by the prepare step), a tokenizer.json, or a hub name
    vocab_size: Count = 256  # the model's vocabulary; with bpe, the size the tokenizer is trained to
    shards: str | None = None  # a folder of token shards (tasks/lm_shards.py); null: in memory for bytes, else cached
    seq_len: Count = 256
    val_fraction: OpenFraction = 0.1
    test_fraction: OpenFraction = 0.1
    num_train: Count | None = 50_000  # windows at most (null: every window)
    num_val: Count | None = 1_000
    num_test: Count | None = 1_000

    metrics = {**Task.metrics, "perplexity": LOWER, "bits_per_byte": LOWER}
    cache_min_tokens = None  # never cached here: `datasets` caches the parsed text, and files can change

    def check(self) -> None:
        if self.seq_len < 1:
            raise ValueError(f"seq_len={self.seq_len} must be positive")
        for name in ("num_train", "num_val", "num_test"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be positive, or null for every window")
        if self.tokenizer in (lm_tokenizer.BYTE, lm_tokenizer.BPE):
            if self.vocab_size < 256:
                raise ValueError(
                    f"vocab_size={self.vocab_size} must be at least 256 for the {self.tokenizer} tokenizer"
                )
        else:
            size = lm_tokenizer.load(self.tokenizer).get_vocab_size()
            if self.vocab_size < size:
                raise ValueError(
                    f"vocab_size={self.vocab_size} is smaller than the vocabulary of tokenizer={self.tokenizer!r} "
                    f"({size} tokens): set task.vocab_size={size} or more"
                )
        if not (
            0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1
        ):
            raise ValueError(
                f"val_fraction={self.val_fraction} and test_fraction={self.test_fraction} must be in "
                f"[0, 1) and leave text to train on"
            )
        if self.data_files is not None and self.dataset is not None:
            raise ValueError(f"data_files={self.data_files!r} and dataset={self.dataset!r}: set one of them")
        if self.dataset is not None:
            if (reason := hub_unavailable()) is not None:
                raise ValueError(
                    f"dataset={self.dataset!r} needs the Hugging Face hub, which is unavailable "
                    f"({reason}): pass local text instead, task.data_files=PATH (a file, folder or glob)"
                )
        else:
            self.files()
        if self.shards is not None and (meta := self.shards_meta()) is not None:
            lm_shards.check(self, meta)

    def files(self) -> list[str]:
        """The local files to read, sorted; a ValueError naming data_files if there are none."""
        if self.data_files is None:
            return sorted(str(p) for p in SAMPLE.glob("*.txt"))
        path = Path(self.data_files).expanduser()
        if path.is_file():
            return [str(path)]
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            found = sorted(p for p in glob.glob(str(path), recursive=True) if os.path.isfile(p))
        if not found:
            raise ValueError(f"data_files={self.data_files!r} does not exist (or holds no files)")
        return found

    def texts(self) -> dict[str, str]:
        """The text of every split the source has: train, and validation/test where a hub dataset has them."""
        import datasets

        datasets.disable_progress_bars()
        if self.dataset is None:
            data = datasets.load_dataset(
                "text",
                data_files={"train": self.files()},
                sample_by="document",
                cache_dir=str(cache.cache_dir().parent / "hf_datasets"),
            )
        else:
            data = datasets.load_dataset(self.dataset, self.dataset_config)
        names = {"train": "train", "val": "validation", "test": "test"}
        out = {}
        for ours, theirs in names.items():
            if theirs in data:
                rows = data[theirs][self.text_field]
                out[ours] = "".join(row if row.endswith("\n") else row + "\n" for row in rows)
        if "train" not in out:
            raise ValueError(f"dataset={self.dataset!r} has no train split (it has {', '.join(data)})")
        return out

    def byte_streams(self, align: bool = False) -> dict[str, np.ndarray]:
        """Each split's UTF-8 bytes; `align` moves the cuts of val and test to the next character boundary, so that
        every part decodes (a tokenizer reads text; the byte path cuts anywhere)."""
        texts = self.texts()
        streams = {name: np.frombuffer(text.encode("utf-8"), dtype=np.uint8) for name, text in texts.items()}
        train = streams["train"]
        n_test = 0 if "test" in streams else int(len(train) * self.test_fraction)
        n_val = 0 if "val" in streams else int(len(train) * self.val_fraction)
        cut_val, cut_test = len(train) - n_test - n_val, len(train) - n_test
        if align:
            cut_val, cut_test = char_boundary(train, cut_val), char_boundary(train, cut_test)
        streams.setdefault("val", train[cut_val:cut_test])
        streams.setdefault("test", train[cut_test:])
        streams["train"] = train[:cut_val]
        return streams

    def windows(self, stream: np.ndarray, name: str, seed: int) -> Split:
        L, cap = self.seq_len, {"train": self.num_train, "val": self.num_val, "test": self.num_test}[name]
        if len(stream) < L + 1:
            raise ValueError(
                f"seq_len={L} is too long for the {name} text ({len(stream)} bytes): lower "
                f"task.seq_len or give more text"
            )
        if name == "train":
            rng = split_rng(seed, name)
            phase = int(rng.integers(0, min(L, len(stream) - L)))
            starts = phase + L * np.arange((len(stream) - phase - 1) // L)
            if cap is not None and len(starts) > cap:
                starts = np.sort(rng.choice(starts, size=cap, replace=False))
        else:
            starts = lm_shards.fixed_starts(len(stream), L, cap)
        index = starts[:, None] + np.arange(L)
        return Split(
            torch.as_tensor(stream[index], dtype=torch.long), torch.as_tensor(stream[index + 1], dtype=torch.long)
        )

    def splits(self, seed: int) -> dict[str, Split]:
        self.check()
        if not self.uses_shards():
            streams = self.byte_streams()
            return {name: self.windows(streams[name], name, seed) for name in SPLITS}
        folder = self.shards_folder()
        meta = lm_shards.prepare(self, folder)
        caps = {"val": self.num_val, "test": self.num_test}
        out = {}
        for name in SPLITS:
            n = meta["splits"][name]["tokens"]
            starts = None if name == "train" else lm_shards.fixed_starts(n, self.seq_len, caps[name])
            out[name] = lm_shards.TokenWindows(folder / f"{name}.bin", meta["dtype"], self.seq_len, starts)
        return out

    def derived_metrics(self, metrics: dict) -> dict:
        """<split>/perplexity = exp(<split>/loss); <split>/bits_per_byte = <split>/loss / ln 2 * tokens / bytes of
        the split (the loss is in nats per token; for bytes the ratio is 1)."""
        ratios = self.tokens_per_byte()
        out = {}
        for key, value in metrics.items():
            if not key.endswith("/loss") or value is None:
                continue
            split = key.removesuffix("/loss")
            out[f"{split}/perplexity"] = math.exp(min(value, 700.0))
            if split in ratios:
                out[f"{split}/bits_per_byte"] = value / math.log(2) * ratios[split]
        return out

    # the path at scale: token shards on disk (tasks/lm_shards.py)

    def uses_shards(self) -> bool:
        return self.tokenizer != lm_tokenizer.BYTE or self.shards is not None

    def tokens_per_byte(self) -> dict[str, float]:
        """Each split's tokens per UTF-8 byte: 1 for bytes, else from the shards' meta.json (prepared by then)."""
        if self.tokenizer == lm_tokenizer.BYTE:
            return dict.fromkeys(SPLITS, 1.0)
        meta = self.shards_meta() or {"splits": {}}
        return {k: v["tokens"] / v["bytes"] for k, v in meta["splits"].items() if v["bytes"]}

    def shards_folder(self) -> Path:
        if self.shards is not None:
            return Path(self.shards).expanduser()
        key = hashlib.sha256(json.dumps(lm_shards.settings(self), sort_keys=True).encode()).hexdigest()[:20]
        return cache.cache_dir().parent / "lm_shards" / key

    def shards_meta(self) -> dict | None:
        folder = self.shards_folder()
        meta = lm_shards.read_meta(folder)
        if meta is None and self.shards is not None and folder.is_dir() and any(folder.iterdir()):
            raise ValueError(f"shards={self.shards!r} holds files but no {lm_shards.META}: not a prepared folder")
        return meta


def char_boundary(data: np.ndarray, i: int) -> int:
    """The first index at or after i that starts a UTF-8 character (continuation bytes are 0b10xxxxxx)."""
    while i < len(data) and (int(data[i]) & 0xC0) == 0x80:
        i += 1
    return i
