"""A completed run's final weights: `model.safetensors` in the run's folder (safetensors' own format: a JSON header
and the raw tensors; tied parameters, such as an embedding shared with the head, stored once), written atomically,
named in the record as `files.weights`. `save_model: false` (conf/config.yaml) keeps none, for large sweeps.

    from safetensors.torch import load_model
    load_model(model, "<run folder>/model.safetensors")   # model built from the record's config
"""

import os
import tempfile
from pathlib import Path

from torch import nn

from harness.record.results import file_mode

FILE = "model.safetensors"


def save(model: nn.Module, folder: Path, metadata: dict[str, str] | None = None) -> str:
    """Write `model`'s weights to folder/model.safetensors through a temporary file (fsync, rename); returns the
    file's name, relative to `folder`, as the record names it."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        save_model(model, tmp, metadata=metadata)
        os.chmod(tmp, file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, folder / FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return FILE
