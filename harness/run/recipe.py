"""What a run trains with, apart from the model and the data: the trainer's settings (`TrainConfig`, the config
group `trainer`), seeding, the device, AdamW's parameter groups and the learning-rate schedule."""

import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import torch
from annotated_types import Ge, Gt, Le, Len, Lt
from torch import nn

# Ranges are declared beside each field (annotated_types); harness/run/schema.py checks every field of the config
# against them, and against its type, before anything runs. Only checks that relate several fields stay in code.
Positive = Annotated[int, Ge(1)]
Unit = Annotated[float, Ge(0), Lt(1)]


@dataclass
class TrainConfig:
    max_steps: Positive = 1000
    epochs: Annotated[float, Gt(0)] | None = None  # if set, max_steps = ceil(epochs * num_train / batch_size)
    batch_size: Positive = 64  # the global batch: over all processes of a data-parallel run (docs/distributed.md)
    # rows per forward and backward pass on one process: batch_size / (processes x micro_batch_size) of them accumulate
    # their gradients into one step; None: each process's whole share at once
    micro_batch_size: Positive | None = None
    # how the processes of a data-parallel run hold the model: ddp, each a whole copy; fsdp, each a shard of every
    # parameter, gradient and optimizer state (FSDP2; docs/distributed.md). One process: the same plain loop either way
    parallel: Literal["ddp", "fsdp"] = "ddp"
    lr: Annotated[float, Gt(0)] = 1e-3
    weight_decay: Annotated[float, Ge(0)] = 0.1
    betas: Annotated[list[Unit], Len(2, 2)] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: Annotated[int, Ge(0)] = 100
    # After the linear warmup: cosine from lr down to the floor at the end of training, or constant at lr.
    schedule: Literal["cosine", "constant"] = "cosine"
    # step: the cosine moves every step; epoch: it holds within an epoch and moves between epochs, as torch's
    # CosineAnnealingLR(T_max=epochs) stepped once per epoch does (Zoology's and MAD's trainers)
    schedule_unit: Literal["step", "epoch"] = "step"
    min_lr_ratio: Annotated[float, Ge(0), Le(1)] = 0.1  # the cosine's floor as a fraction of lr; 0: to zero (Zoology)
    min_lr: Annotated[float, Ge(0)] | None = None  # the floor as an absolute lr (MAD: 1e-6); overrides min_lr_ratio
    # false: weight decay on the matrices of linear layers and mixers only (nanoGPT's groups); true: on every
    # parameter, norms, biases, embeddings and a mixer's no-decay parameters (Mamba's A_log) included, as
    # AdamW(model.parameters()) does in Zoology's and MAD's trainers, which ignore such marks
    decay_all: bool = False
    grad_clip: Annotated[float, Ge(0)] = 1.0  # 0: no clipping
    eval_every: Positive = 100
    eval_batch_size: Positive = 512
    target_accuracy: Annotated[float, Gt(0), Le(1)] | None = None  # stop at the first eval with val accuracy >= it
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None = None
    deterministic: bool = False
    progress: bool = True
    checkpoint_every: Annotated[int, Ge(0)] = 0  # steps between checkpoints for exact resume; 0: none
    peak_flops: Annotated[float, Gt(0)] | None = None  # the device's peak FLOP/s for MFU where run/mfu.py lacks it

    def steps_for(self, num_train: int) -> int:
        if self.epochs is None:
            return self.max_steps
        return math.ceil(self.epochs * num_train / self.batch_size)

    def micro_batch(self, world_size: int) -> int:
        return self.micro_batch_size or self.batch_size // world_size

    def check(self, num_train: int | None, world_size: int = 1) -> None:
        """What relates several fields (each field's own range is declared above and checked by run/schema.py). A
        batch larger than the training set is refused, not clipped: the run would not be the one asked for; so is a
        global batch that the processes and micro batches do not divide."""
        if self.micro_batch_size is None and self.batch_size % world_size:
            raise ValueError(
                f"trainer.batch_size={self.batch_size} (the global batch) is not divisible by the number of "
                f"processes ({world_size})"
            )
        if self.micro_batch_size is not None and self.batch_size % (world_size * self.micro_batch_size):
            raise ValueError(
                f"trainer.batch_size={self.batch_size} (the global batch) is not a multiple of the number of "
                f"processes x trainer.micro_batch_size ({world_size} x {self.micro_batch_size})"
            )
        if num_train is not None and self.batch_size > num_train:
            raise ValueError(
                f"trainer.batch_size={self.batch_size} is larger than the training set (task.num_train={num_train})"
            )
        if self.steps_for(num_train) < 1:
            raise ValueError(f"trainer.max_steps={self.max_steps} must be positive")
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ValueError(f"trainer.min_lr={self.min_lr} must not exceed trainer.lr={self.lr}")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (every device). 0 is a seed like any other. Sets the deterministic-kernel switch
    either way, so a process that runs several jobs (joblib workers) carries none of it from one job to the next."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def configure_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; weight decay only on matrices of linear layers and mixers, never on norms, biases, embeddings, nor on
    any parameter a module's `no_weight_decay()` names (Mamba's A_log and D, S4D's A and dt: models/mixers/base.py).
    With cfg.decay_all: on every parameter, as Zoology's and MAD's AdamW(model.parameters()) do."""
    if cfg.decay_all:
        params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())  # tied weights once
        groups = [{"params": params, "weight_decay": cfg.weight_decay}]
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=device.type == "cuda")
    excluded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for m in model.modules():
        if hasattr(m, "no_weight_decay"):
            excluded.update(id(p) for p in m.no_weight_decay())
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in excluded else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=device.type == "cuda")


def lr_lambda(cfg: TrainConfig, total_steps: int, steps_per_epoch: int | None = None) -> Callable[[int], float]:
    """Linear warmup to lr, then cosine down to the floor (min_lr, else min_lr_ratio * lr) at the last step, or
    constant (schedule=constant). With schedule_unit=epoch the cosine's progress is epoch / epochs, epoch =
    step // steps_per_epoch: lr_e = floor + (lr - floor) (1 + cos(pi e / E)) / 2, CosineAnnealingLR's closed form."""
    warmup = min(cfg.warmup_steps, total_steps)
    floor = cfg.min_lr_ratio if cfg.min_lr is None else cfg.min_lr / cfg.lr
    if cfg.schedule_unit == "epoch":
        if not steps_per_epoch:
            raise ValueError("trainer.schedule_unit=epoch needs the number of steps per epoch")
        epochs = cfg.epochs if cfg.epochs is not None else total_steps / steps_per_epoch

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule_unit == "epoch":
            progress = (step // steps_per_epoch) / epochs
        else:
            progress = (step - warmup) / max(1, total_steps - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f
