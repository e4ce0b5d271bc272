"""Tokenizers of the language-modelling task (tasks/lm_text.py), through Hugging Face `tokenizers`.

`task.tokenizer` is one of:
- `byte`: UTF-8 bytes, vocab 256 (the quick path's default; no `tokenizers` object at all);
- `bpe`: a byte-level BPE (GPT-2's pre-tokenizer and decoder) trained on the training split by the prepare step
  (tasks/lm_shards.py) to `task.vocab_size` tokens, saved beside the shards as tokenizer.json;
- a path to a `tokenizer.json` (or a folder holding one), loaded as it is;
- a hub name (`gpt2`, `EleutherAI/gpt-neox-20b`) when the hub is reachable; offline, one line saying to pass a file.
A tokenizer is identified by the SHA-256 of its JSON serialisation (`fingerprint`): shards record it, and a run whose
tokenizer differs is refused.
"""

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tasks.hub import hub_unavailable

BYTE, BPE = "byte", "bpe"
BYTE_FINGERPRINT = "byte"  # the byte tokenizer has no JSON: its name is its identity


def is_path(spec: str) -> bool:
    """A file or folder rather than a hub name: it ends in .json, starts like a path, or exists here."""
    return spec.endswith(".json") or spec.startswith((".", "/", "~")) or Path(spec).expanduser().exists()


def tokenizer_file(spec: str) -> Path:
    """The tokenizer.json that `spec` names; a ValueError naming task.tokenizer if there is none."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"tokenizer={spec!r} does not exist (a tokenizer.json file, or a folder holding one)")
    return path


def load(spec: str) -> "tokenizers.Tokenizer":  # noqa: F821 (imported lazily: the byte path never needs it)
    """The tokenizer a path or a hub name gives (not `byte`, nor `bpe`, which the prepare step trains)."""
    from tokenizers import Tokenizer

    if is_path(spec):
        path = tokenizer_file(spec)
        try:
            return Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises its own exception type
            raise ValueError(f"tokenizer={spec!r} is not a tokenizer.json that `tokenizers` reads ({e})") from None
    if (reason := hub_unavailable()) is not None:
        raise ValueError(
            f"tokenizer={spec!r} is no local file, and as a hub name it needs the Hugging Face hub, which is "
            f"unavailable ({reason}): pass a local file, task.tokenizer=path/to/tokenizer.json, or task.tokenizer=bpe "
            "to train one"
        )
    return Tokenizer.from_pretrained(spec)


def train_bpe(texts: Iterable[str], vocab_size: int) -> "tokenizers.Tokenizer":  # noqa: F821
    """A byte-level BPE of `vocab_size` tokens (the 256 bytes, then merges) trained on `texts`, no special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def fingerprint(tok: "tokenizers.Tokenizer | None") -> str:  # noqa: F821
    """SHA-256 of the tokenizer's JSON (None: the byte tokenizer)."""
    if tok is None:
        return BYTE_FINGERPRINT
    return hashlib.sha256(tok.to_str().encode()).hexdigest()
