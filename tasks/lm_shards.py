"""Token shards on disk for the language-modelling task (tasks/lm_text.py), in nanoGPT's layout.

A prepared folder holds `train.bin`, `val.bin` and `test.bin` (each the split's tokens end to end, a flat array of
uint16 when the vocabulary has fewer than 65,536 tokens, else uint32, no header: `np.memmap(path, dtype, mode="r")`
reads one, as nanoGPT's train.py does), `tokenizer.json` (unless the tokenizer is `byte`) and `meta.json`: the
format, the dtype, the vocabulary size, the tokenizer's spec and fingerprint (tasks/lm_tokenizer.py), the data
settings, and the token and byte count of each split. The folder is built under a temporary name and renamed into
place, so a folder with a meta.json is complete; two runs preparing the same folder at once keep the first.

Tokenizing runs through `datasets.map(batched=True, num_proc=...)` over chunks of whole lines (about 1 MB each),
with a progress bar; the prepare step holds the corpus's text in memory once, training never does: `TokenWindows`
reads the windows each step needs from the shard file, at offsets drawn from (seed, step) for train, evenly spaced and
the same for every seed for val and test. It reads them with positioned reads (os.pread), not through a mapping: on
Linux 6.x the page cache holds a file in large folios and a fault maps a whole one, so each random window read through
np.memmap added about 1.5 MB of resident memory (470 MB for 320 windows of 257 tokens from a 1 GB shard, measured
on this project's CI machine, Linux 6.18), while a read copies only the window's bytes.
"""

import copy
import json
import os
import shutil
import sys
import uuid
from functools import partial
from pathlib import Path

import numpy as np
import torch

from tasks import lm_tokenizer

FORMAT, VERSION = "archbench-lm-shards", 1
META = "meta.json"
CHUNK_BYTES = 1 << 20


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size < 1 << 16 else np.uint32)


def read_meta(folder: Path) -> dict | None:
    path = Path(folder) / META
    return json.loads(path.read_text()) if path.is_file() else None


def line_chunks(text: str, size: int = CHUNK_BYTES) -> list[str]:
    """`text` cut into pieces of whole lines of about `size` characters (joined, they are `text` again)."""
    chunks, current, n = [], [], 0
    for line in text.splitlines(keepends=True):
        current.append(line)
        n += len(line)
        if n >= size:
            chunks.append("".join(current))
            current, n = [], 0
    if current:
        chunks.append("".join(current))
    return chunks


def _encode(batch: dict, tok: "tokenizers.Tokenizer") -> dict:  # noqa: F821
    ids = [e.ids for e in tok.encode_batch(batch["text"])]
    return {"ids": ids, "n": [len(i) for i in ids]}


def write_split(path: Path, part: np.ndarray, tok: object, dtype: np.dtype, num_proc: int, name: str) -> int:
    """Tokenize one split's UTF-8 bytes `part` into the flat file `path`; returns its number of tokens."""
    if tok is None:  # bytes are their own tokens
        part.astype(dtype).tofile(path)
        return len(part)
    import datasets

    chunks = line_chunks(part.tobytes().decode("utf-8"))
    data = datasets.Dataset.from_dict({"text": chunks})
    data = data.map(
        partial(_encode, tok=tok),
        batched=True,
        batch_size=8,
        num_proc=min(num_proc, len(chunks)) if num_proc > 1 else None,
        remove_columns=["text"],
        desc=f"tokenizing {name}",
    )
    total = int(sum(data["n"]))
    out = np.memmap(path, dtype=dtype, mode="w+", shape=(max(total, 1),))
    pos = 0
    for rows in data.iter(batch_size=64):
        for ids in rows["ids"]:
            out[pos : pos + len(ids)] = ids
            pos += len(ids)
    out.flush()
    del out
    if total == 0:
        os.truncate(path, 0)
    return total


def tokenizer_spec(task: "LMText") -> str:  # noqa: F821
    """What identifies the tokenizer among the data settings: byte, bpe-<vocab size>, or the file's fingerprint."""
    if task.tokenizer == lm_tokenizer.BYTE:
        return lm_tokenizer.BYTE
    if task.tokenizer == lm_tokenizer.BPE:
        return f"bpe-{task.vocab_size}"
    return lm_tokenizer.fingerprint(lm_tokenizer.load(task.tokenizer))


def settings(task: "LMText") -> dict:  # noqa: F821
    """What the prepared tokens depend on: the source (local files by name and size), the split fractions, the
    tokenizer. Not seq_len nor the split caps: windows are cut when a run reads them."""
    files = None if task.dataset is not None else [[str(Path(f).resolve()), os.path.getsize(f)] for f in task.files()]
    return {
        "files": files,
        "dataset": task.dataset,
        "dataset_config": task.dataset_config,
        "text_field": task.text_field,
        "val_fraction": task.val_fraction,
        "test_fraction": task.test_fraction,
        "tokenizer": tokenizer_spec(task),
    }


def check(task: "LMText", meta: dict) -> None:  # noqa: F821
    """ValueError naming task.shards if the prepared folder was made with another tokenizer or other data."""
    where = f"shards={str(task.shards_folder())!r}"
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{where} is not an archbench shard folder of version {VERSION}")
    theirs, ours = meta["settings"]["tokenizer"], tokenizer_spec(task)
    if theirs != ours and meta["tokenizer"]["fingerprint"] != ours:
        raise ValueError(
            f"{where} was prepared with another tokenizer ({short(meta['tokenizer']['spec'])}, not {short(ours)}): "
            "prepare the corpus again into another folder (archbench-prepare)"
        )
    differ = [k for k, v in settings(task).items() if k != "tokenizer" and meta["settings"].get(k) != v]
    if differ:
        raise ValueError(
            f"{where} was prepared with other data settings ({', '.join(differ)} not as there): prepare again into "
            "another folder (archbench-prepare)"
        )
    if meta["vocab_size"] > task.vocab_size:
        raise ValueError(
            f"vocab_size={task.vocab_size} is smaller than the vocabulary of the shards in {where} "
            f"({meta['vocab_size']} tokens)"
        )


def short(spec: str) -> str:
    """A fingerprint cut to 12 hex digits for a message; byte and bpe-<n> as they are."""
    return f"sha256:{spec[:12]}" if len(spec) == 64 else spec


def prepare(task: "LMText", folder: Path, num_proc: int = 1) -> dict:  # noqa: F821
    """Tokenize `task`'s corpus into `folder` unless it already holds shards for the same settings (then they are
    reused); returns the folder's meta. Raises ValueError, naming task.shards, where the folder holds other shards."""
    folder = Path(folder)
    if (meta := read_meta(folder)) is not None:
        check(task, meta)
        return meta
    import datasets

    streams = task.byte_streams(align=task.tokenizer != lm_tokenizer.BYTE)
    datasets.enable_progress_bars()
    if task.tokenizer == lm_tokenizer.BYTE:
        tok, vocab = None, 256
    elif task.tokenizer == lm_tokenizer.BPE:
        tok = lm_tokenizer.train_bpe(line_chunks(streams["train"].tobytes().decode("utf-8")), task.vocab_size)
        vocab = tok.get_vocab_size()
    else:
        tok = lm_tokenizer.load(task.tokenizer)
        vocab = tok.get_vocab_size()
    dtype = dtype_for(vocab)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        splits = {}
        for name, part in streams.items():
            tokens = write_split(tmp / f"{name}.bin", part, tok, dtype, num_proc, name)
            splits[name] = {"tokens": tokens, "bytes": len(part)}
        if tok is not None:
            tok.save(str(tmp / "tokenizer.json"))
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": dtype.name,
            "vocab_size": vocab,
            "tokenizer": {"spec": tokenizer_spec(task), "fingerprint": lm_tokenizer.fingerprint(tok)},
            "settings": settings(task),
            "splits": splits,
        }
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        try:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            os.rename(tmp, folder)
        except OSError:  # another process finished first: keep its folder
            if read_meta(folder) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = read_meta(folder)
    check(task, meta)
    return meta


class TokenWindows:
    """A split read from a token shard: windows of seq_len + 1 tokens (inputs window[:-1], targets window[1:], every
    position scored), read from the file per batch (never mapped nor loaded whole) and cast to int64. Train
    (`random_windows`): `windows_at(seed, step, n)` reads n windows at offsets drawn from (seed, step) alone, so a
    resumed run reads what an uninterrupted one would; its length is the number of disjoint windows (what an epoch
    means here). Val and test: windows at fixed `starts`."""

    def __init__(self, path: Path, dtype: str, seq_len: int, starts: np.ndarray | None = None) -> None:
        self.path, self.dtype, self.seq_len, self.starts = Path(path), np.dtype(dtype), seq_len, starts
        self.random_windows = starts is None
        self._fd: int | None = None
        self._device = torch.device("cpu")
        self.n_tokens = os.path.getsize(self.path) // self.dtype.itemsize
        if self.n_tokens < seq_len + 1:
            raise ValueError(
                f"seq_len={seq_len} is too long for {self.path.name} ({self.n_tokens} tokens): lower task.seq_len "
                "or give more text"
            )

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def __getstate__(self) -> dict:  # a copy for another process opens the file again
        return {k: v for k, v in self.__dict__.items() if k != "_fd"}

    def window(self, start: int) -> np.ndarray:
        """Tokens start .. start + seq_len (seq_len + 1 of them)."""
        if getattr(self, "_fd", None) is None:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        size, offset = (self.seq_len + 1) * self.dtype.itemsize, int(start) * self.dtype.itemsize
        if sys.platform == "win32":  # no os.pread there
            os.lseek(self._fd, offset, os.SEEK_SET)
            return np.frombuffer(os.read(self._fd, size), dtype=self.dtype)
        return np.frombuffer(os.pread(self._fd, size, offset), dtype=self.dtype)

    def to(self, device: torch.device | str) -> "TokenWindows":
        out = copy.copy(self)
        out._device, out._fd = torch.device(device), None  # each object opens (and closes) its own descriptor
        return out

    @property
    def device(self) -> torch.device:
        return self._device

    def __len__(self) -> int:
        return len(self.starts) if self.starts is not None else (self.n_tokens - 1) // self.seq_len

    def read(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, targets, positions) of the windows at `starts`, int64, on the split's device."""
        L = self.seq_len
        rows = np.stack([self.window(s) for s in starts]) if len(starts) else np.zeros((0, L + 1), self.dtype)
        windows = torch.from_numpy(rows.astype(np.int64)).to(self._device)
        positions = torch.arange(L, device=self._device).expand(len(starts), L)
        return windows[:, :-1], windows[:, 1:], positions

    def batch(self, idx: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.starts is None:
            raise TypeError("a train shard is read by windows_at(seed, step, n)")
        return self.read(self.starts[idx if isinstance(idx, slice) else idx.cpu().numpy()])

    def offsets(self, seed: int, step: int, n: int) -> np.ndarray:
        """Where step `step`'s n windows start: uniform over the shard, a function of (seed, step) alone."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0, step]))
        return rng.integers(0, self.n_tokens - self.seq_len, size=n)

    def windows_at(self, seed: int, step: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.read(self.offsets(seed, step, n))


def fixed_starts(n_tokens: int, seq_len: int, cap: int | None) -> np.ndarray:
    """Disjoint windows from the start of the split, evenly spaced if there are more than `cap` (the quick path's)."""
    starts = seq_len * np.arange((n_tokens - 1) // seq_len)
    if cap is not None and len(starts) > cap:
        starts = starts[np.linspace(0, len(starts) - 1, cap).round().astype(np.int64)]
    return starts
