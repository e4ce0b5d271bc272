"""A completed run's final weights: `model.safetensors` in the run's folder (safetensors' own format: a JSON header
and the raw tensors; tied parameters, such as an embedding shared with the head, stored once), written atomically,
named in the record as `files.weights`. `save_model: false` (conf/config.yaml) keeps none, for large sweeps.

    from safetensors.torch import load_model
    load_model(model, "<run folder>/model.safetensors")   # model built from the record's config
"""

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

from torch import nn

from harness.record.results import file_mode

FILE = "model.safetensors"


def save(model: nn.Module, folder: Path, metadata: dict[str, str] | None = None, state: dict | None = None) -> str:
    """Write `model`'s weights to folder/model.safetensors through a temporary file (fsync, rename); returns the
    file's name, relative to `folder`, as the record names it. `state`: the weights to write instead of
    model.state_dict(), with `model`'s names and ties (an FSDP run's, gathered whole: its model holds shards)."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        save_model(model if state is None else tied_as_in(model, state), tmp, metadata=metadata)
        os.chmod(tmp, file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, folder / FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return FILE


def tied_as_in(model: nn.Module, state: dict) -> SimpleNamespace:
    """What save_model reads (a `state_dict()`): `state`, where each parameter that `model` ties to an earlier one is
    that one's tensor again, so that it is stored once, as save_model stores the plain model's."""
    state, first = dict(state), {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if name in state:
            state[name] = state[first.setdefault(id(p), name)]
    return SimpleNamespace(state_dict=lambda: state)
