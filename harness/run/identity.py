"""A run's identity, fixed before anything is looked up or trained (docs/running.md, "Which code a run id covers")."""

import torch

from harness.record import code, results
from harness.record.keys import run_id as identity_hash
from harness.run.recipe import resolve_device


def identify(record: results.Record, model: torch.nn.Module, task: object) -> None:
    """The run's identity, before anything is looked up or trained: `auto` fields resolved to what will run
    (trainer.device and trainer.precision in the record's config; each mixer's kernel in `code.kernels`), the
    fingerprint of the code that trains it (harness/record/code.py), and the ids: config_id (the resolved config) and
    run_id (config, code and kernels). A changed mixer gives its runs new ids; other runs keep theirs."""
    trainer = record.config["trainer"]
    device = resolve_device(trainer["device"])
    trainer["device"] = str(device)
    trainer["precision"] = results.resolved_precision(trainer["precision"], device.type)
    bf16 = trainer["precision"] == "bf16"
    kernels = [getattr(b.mixer, "kernel_for", lambda *_: None)(device.type, bf16) for b in model.blocks]
    record.code = {
        **code.fingerprint({*code.modules_of(model, task), code.TRAINER}),
        "kernels": kernels if any(k is not None for k in kernels) else None,
    }
    record.config_id = identity_hash(record.config)
    record.run_id = identity_hash(record.config, {k: record.code[k] for k in ("fingerprint", "kernels")})
