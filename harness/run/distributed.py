"""One run over several processes (data parallel): who this process is, the process group, DDP or FSDP2 (with the
whole state dicts a checkpoint holds) and the few collectives the trainer needs. A run started plainly is a world of
one, and every function here is then a no-op, so the one-process trainer runs exactly the code it ran before.

The world comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), or, inside a
SLURM job of several tasks, from SLURM's, mapped by submitit (`from_slurm`). Rank 0 writes the record, the
checkpoint, the weights and the wandb run; every rank trains its slice of the global batch and evaluates the whole
validation split (the same numbers on every rank, so early stopping needs no message)."""

import contextlib
import datetime
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

TIMEOUT = datetime.timedelta(minutes=30)  # a collective that waits longer than this fails the run


def rank_from_env() -> int:
    return int(os.environ.get("RANK", 0))


def size_from_env() -> int:
    """The number of processes the launcher started for this run (1 when it was started plainly)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def from_slurm() -> bool:
    """Inside a submitit SLURM job of several tasks (hydra/launcher=slurm_ddp: tasks_per_node > 1): export
    torch.distributed's variables from SLURM's with submitit's own mapping, unless a launcher (torchrun) set them
    already. Returns whether it did."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or "RANK" in os.environ:
        return False
    if int(os.environ.get("SLURM_NTASKS", 1)) <= 1:
        return False
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (in place); `t` itself in a world of one."""
        if self.size > 1:
            torch.distributed.all_reduce(t)
        return t

    def broadcast(self, value: object) -> object:
        """Rank 0's `value` on every rank."""
        if self.size == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: object) -> list | None:
        """Every rank's `value`, in rank order, on rank 0 (None elsewhere)."""
        if self.size == 1:
            return [value]
        out = [None] * self.size if self.main else None
        torch.distributed.gather_object(value, out, dst=0)
        return out

    def scatter(self, values: list | None) -> object:
        """values[r] (given on rank 0) on rank r."""
        if self.size == 1:
            return values[0]
        box = [None]
        torch.distributed.scatter_object_list(box, values if self.main else None, src=0)
        return box[0]

    def wrap(
        self, module: nn.Module, device: torch.device, parallel: str = "ddp", blocks: Iterable[nn.Module] = ()
    ) -> nn.Module:
        """DistributedDataParallel over the ranks (gradients averaged after each backward), or `module` itself. With
        parallel="fsdp", FSDP2 instead: each of `blocks`, then `module` (whose forward is the whole loss, so that
        the embedding and the head are gathered with it), shards its parameters over the ranks in place."""
        if self.size == 1:
            return module
        if parallel == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(device.type, (self.size,))
            for block in blocks:
                fully_shard(block, mesh=mesh)
            return fully_shard(module, mesh=mesh)
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def no_sync(self, module: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Around the micro batches of a step but its last: gradients accumulate locally, reduced once at the last
        (under FSDP2, by its switch `set_requires_gradient_sync`)."""
        if self.size == 1:
            return contextlib.nullcontext()
        if hasattr(module, "set_requires_gradient_sync"):  # FSDP2's switch, set before each micro batch
            module.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if last else module.no_sync()


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, sharded: bool) -> tuple[dict, dict]:
    """The model's and the optimizer's state dicts, whole: under FSDP (`sharded`), gathered from every rank (a
    collective: every rank calls it) onto rank 0's CPU (the other ranks get empty dicts) with torch's
    distributed-checkpoint helpers, the optimizer's state keyed by parameter index as optimizer.state_dict() keys it,
    so a checkpoint is the same file however the run was split. No `optimizer`: the model's alone."""
    if not sharded:
        return model.state_dict(), optimizer.state_dict() if optimizer is not None else {}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if optimizer is None:
        return get_model_state_dict(model, options=options), {}
    model_state, optim_state = get_state_dict(model, optimizer, options=options)
    if not optim_state:
        return model_state, optim_state
    index = {name: i for i, name in enumerate(parameter_names(model, optimizer))}
    return model_state, rekey(optim_state, index)


def load_full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict, sharded: bool
) -> None:
    """Load `full_state`'s dicts (every rank reads the whole file): under FSDP, each rank keeps its shard."""
    if not sharded:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    names = dict(enumerate(parameter_names(model, optimizer)))
    options = StateDictOptions(full_state_dict=True)
    set_state_dict(
        model, optimizer, model_state_dict=model_state, optim_state_dict=rekey(optim_state, names), options=options
    )


def parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each parameter the optimizer steps, in its order (the index optimizer.state_dict() keys it by)."""
    name = {p: n for n, p in model.named_parameters()}
    return [name[p] for group in optimizer.param_groups for p in group["params"]]


def rekey(optim_state: dict, key: dict) -> dict:
    """An optimizer state dict with each parameter's key (index or name) replaced by key[it]."""
    return {
        "state": {key[k]: v for k, v in optim_state["state"].items()},
        "param_groups": [{**g, "params": [key[k] for k in g["params"]]} for g in optim_state["param_groups"]],
    }


def current() -> World:
    """This process's place in the run: from the process group once `init` has run, else a world of one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return World(
            torch.distributed.get_rank(), torch.distributed.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        )
    return World()


def init(device: str = "auto") -> World:
    """Join the process group the environment describes (nccl on CUDA, gloo on CPU); a world of one if none does.
    On CUDA, each process takes the GPU of its local rank."""
    if size_from_env() == 1 or torch.distributed.is_initialized():
        return current()
    local = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
    torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    world = current()
    log.info("process %d of %d (%s)", world.rank, world.size, torch.distributed.get_backend())
    return world


def close() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
