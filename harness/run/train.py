"""A plain PyTorch training loop over a task's splits. Knows nothing of Hydra or files: the CLI hands it a model,
the splits and a TrainConfig, and gets metrics and costs back."""

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Le, Len, Lt
from torch import nn
from tqdm.auto import tqdm

from harness.run.checkpoint import Checkpointer, rng_state, set_rng_state
from harness.run.mfu import mfu, peak_flops, train_flops
from tasks.base import IGNORE, Split

log = logging.getLogger(__name__)

# Ranges are declared beside each field (annotated_types); harness/run/schema.py checks every field of the config
# against them, and against its type, before anything runs. Only checks that relate several fields stay in code.
Positive = Annotated[int, Ge(1)]
Unit = Annotated[float, Ge(0), Lt(1)]


@dataclass
class TrainConfig:
    max_steps: Positive = 1000
    epochs: Annotated[float, Gt(0)] | None = None  # if set, max_steps = ceil(epochs * num_train / batch_size)
    batch_size: Positive = 64
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

    def check(self, num_train: int | None) -> None:
        """What relates several fields (each field's own range is declared above and checked by run/schema.py). A
        batch larger than the training set is refused, not clipped: the run would not be the one asked for."""
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


def scored_loss(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy, correct predictions and count over the scored positions only: hidden states are
    gathered at `positions` (scored_positions of the batch's rows) before the head, so the head never runs where no
    target is. Returns tensors; nothing here waits for the device."""
    hidden, labels = model(inputs), targets
    if positions.shape[1] < inputs.shape[1]:  # else every position is kept (LM): the gather would only copy
        hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        labels = targets.gather(1, positions)
    logits = model.head(hidden).float().flatten(0, 1)
    labels = labels.flatten()
    scored = labels != IGNORE
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
    return loss, ((logits.argmax(-1) == labels) & scored).sum(), scored.sum()


@torch.no_grad()
def evaluate(
    model: nn.Module, split: Split, batch_size: int, autocast: Callable[[], contextlib.AbstractContextManager]
) -> dict[str, float]:
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=split.device)
    for i in range(0, len(split), batch_size):
        with autocast():
            batch = scored_loss(model, *split.batch(slice(i, i + batch_size)))
        totals += torch.stack([t.double() for t in batch])
    loss, correct, count = totals.tolist()  # one synchronisation per evaluation
    model.train(was_training)
    return {"loss": loss / max(count, 1), "accuracy": correct / max(count, 1)}


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def train(
    model: nn.Module,
    splits: dict[str, Split],
    cfg: TrainConfig,
    *,
    seed: int,
    log_fn: Callable[[dict, int], object] | None = None,
    checkpoint: Checkpointer | None = None,
    flops_per_token: float | None = None,
    head_flops_per_scored: float | None = None,
) -> dict:
    """Train `model` on splits['train'], evaluating on splits['val'] every cfg.eval_every steps, and at the end on
    'test' and every other held-out split the task made (metrics '<split>/loss', '<split>/accuracy').
    With a `checkpoint`, resume from the one an interrupted attempt left (bitwise as if never interrupted) and save
    every cfg.checkpoint_every steps. `log_fn(row, step)` gets every eval row plus the throughput since the last
    one (tokens_per_second, and mfu given the backbone's `flops_per_token`, the head's `head_flops_per_scored` and a
    known peak). The cost counts the targets scored in training steps (`scored_targets`) and the exact `train_flops`
    (backbone × tokens + head × scored targets: harness/run/mfu.py). Returns {"metrics": ..., "cost": ...,
    "history": [...]} (the history without throughput, so that it repeats exactly)."""
    device = resolve_device(cfg.device)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)

    def autocast():
        if use_bf16:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    cfg.check(len(splits["train"]))
    train_split, val_split = splits["train"].to(device), splits["val"].to(device)
    model.to(device)
    optimizer = configure_optimizer(model, cfg, device)
    total_steps = cfg.steps_for(len(train_split))
    batches_per_epoch = len(train_split) // cfg.batch_size
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps, batches_per_epoch))
    step_fn = torch.compile(model, mode=cfg.compile_mode) if cfg.compile else model
    peak = peak_flops(device, cfg.peak_flops)

    def sync() -> None:  # before reading a clock: the GPU's queued work belongs to the steps that queued it
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # The data order is a function of (seed, epoch) alone, so it does not depend on what else consumed RNG.
    n_train, bs = len(train_split), cfg.batch_size
    order_gen = torch.Generator().manual_seed(seed)
    order, epoch = None, -1

    history, best = [], {"accuracy": -1.0, "step": 0}
    steps_to_target, step, first_step_time = None, 0, None
    tokens_seen, eval_seconds, train_seconds_before = 0, 0.0, 0.0
    scored_before: int | None = 0  # targets scored by earlier attempts (None: a checkpoint that did not count them)
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None and state["total_steps"] != total_steps:
        log.warning(
            "ignoring checkpoint %s: it is for %d steps, this run has %d",
            checkpoint.resume_from,
            state["total_steps"],
            total_steps,
        )
        state = None
    if state is not None:  # everything the loop carries from one step to the next, and the RNG that it draws on
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], order_gen)
        step, tokens_seen, train_seconds_before = state["step"], state["tokens_seen"], state["train_seconds"]
        scored_before = state.get("scored_targets")
        history, best = state["history"], state["best"]
        log.info("resuming from step %d of %d (%s)", step, total_steps, checkpoint.resume_from)
        for row in history if log_fn is not None else ():  # this attempt's logger gets the whole curve
            log_fn(row, row["step"])
    resumed_from_step = step if state is not None else None
    scored_now = torch.zeros((), dtype=torch.int64, device=device)  # this attempt's, summed on the device: no sync

    def scored_total() -> int | None:
        return None if scored_before is None else scored_before + int(scored_now.item())

    def flops_per_token_done(tokens: int, scored: int | None) -> float | None:  # head included, for MFU
        flops = train_flops(flops_per_token, tokens, head_flops_per_scored, scored)
        return flops / tokens if flops is not None and tokens > 0 else None

    last_tokens, last_train_seconds, last_scored = tokens_seen, train_seconds_before, scored_total()
    model.train()
    bar = tqdm(total=total_steps, initial=step, disable=None if cfg.progress else True, leave=False, dynamic_ncols=True)
    loop_start = time.perf_counter()
    while step < total_steps:
        if train_split.random_windows:  # token shards on disk: windows at offsets drawn from (seed, step)
            batch = train_split.windows_at(seed, step, bs)
        else:
            if step // batches_per_epoch != epoch:
                epoch = step // batches_per_epoch
                order_gen.manual_seed(seed * 1_000_003 + epoch)
                order = torch.randperm(n_train, generator=order_gen).to(device)
            j = step % batches_per_epoch
            batch = train_split.batch(order[j * bs : (j + 1) * bs])
        with autocast():
            loss_sum, _, n = scored_loss(step_fn, *batch)
            loss = loss_sum / n.clamp(min=1)
        scored_now += n
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        tokens_seen += batch[0].numel()
        if first_step_time is None:
            first_step_time = time.time()
        bar.update(1)
        if step % cfg.eval_every == 0 or step == total_steps:
            # Evaluation: the only host synchronisation, and the only place the loss is read.
            sync()
            t_eval = time.perf_counter()
            trained = train_seconds_before + t_eval - loop_start - eval_seconds
            interval = trained - last_train_seconds
            speed = (tokens_seen - last_tokens) / interval if interval > 0 else None
            scored = scored_total()
            done = flops_per_token_done(
                tokens_seen - last_tokens, None if scored is None or last_scored is None else scored - last_scored
            )
            last_tokens, last_train_seconds, last_scored = tokens_seen, trained, scored
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise Diverged(f"training loss is {loss_value} at step {step}")
            val = evaluate(model, val_split, cfg.eval_batch_size, autocast)
            eval_seconds += time.perf_counter() - t_eval
            row = {
                "step": step,
                "train/loss": loss_value,
                "val/loss": val["loss"],
                "val/accuracy": val["accuracy"],
                "lr": scheduler.get_last_lr()[0],
                "tokens": tokens_seen,
            }
            history.append(row)
            if log_fn is not None:
                log_fn({**row, "tokens_per_second": speed, "mfu": mfu(done, speed, peak)}, step)
            bar.set_postfix(loss=f"{loss_value:.3f}", val_acc=f"{val['accuracy']:.3f}")
            log.info(
                "step %d  train/loss %.4f  val/loss %.4f  val/accuracy %.4f",
                step,
                loss_value,
                val["loss"],
                val["accuracy"],
            )
            if val["accuracy"] > best["accuracy"]:
                best = {"accuracy": val["accuracy"], "step": step}
            if cfg.target_accuracy is not None and val["accuracy"] >= cfg.target_accuracy:
                steps_to_target = step
                break
        if checkpoint is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
            sync()
            t_save = time.perf_counter()
            if not math.isfinite(loss_value := loss.item()):  # never save weights that a rerun would resume into
                raise Diverged(f"training loss is {loss_value} at step {step}")
            checkpoint.save(
                {
                    "step": step,
                    "total_steps": total_steps,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_state(order_gen),
                    "history": history,
                    "best": best,
                    "tokens_seen": tokens_seen,
                    "scored_targets": scored_total(),
                    "train_seconds": train_seconds_before + time.perf_counter() - loop_start - eval_seconds,
                }
            )
            eval_seconds += time.perf_counter() - t_save  # time spent off the training path
    sync()
    train_seconds = train_seconds_before + time.perf_counter() - loop_start - eval_seconds
    bar.close()

    last = history[-1]
    metrics = {"train/loss": last["train/loss"], "val/loss": last["val/loss"], "val/accuracy": last["val/accuracy"]}
    for name, split in splits.items():  # "test", and any extra held-out split a task defines (e.g. longer lengths)
        if name not in ("train", "val"):
            result = evaluate(model, split.to(device), cfg.eval_batch_size, autocast)
            metrics.update({f"{name}/loss": result["loss"], f"{name}/accuracy": result["accuracy"]})
    metrics.update(
        {
            "best/val_accuracy": best["accuracy"],
            "best/step": best["step"],
            "steps": step,
            "steps_to_target": steps_to_target,
        }
    )
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    speed = tokens_seen / train_seconds if train_seconds > 0 else None
    scored = scored_total()
    cost = {
        "tokens_seen": tokens_seen,
        "scored_targets": scored,
        "train_flops": train_flops(flops_per_token, tokens_seen, head_flops_per_scored, scored),
        "train_seconds": train_seconds,
        "tokens_per_second": speed,
        "mfu": mfu(flops_per_token_done(tokens_seen, scored), speed, peak),
        "peak_flops": peak,
        "peak_memory_bytes": memory,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "first_step_time": first_step_time,
        "resumed_from_step": resumed_from_step,
    }
    return {"metrics": metrics, "cost": cost, "history": history}
