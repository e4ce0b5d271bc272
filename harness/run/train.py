"""A plain PyTorch training loop over a task's splits. Knows nothing of Hydra or files: the CLI hands it a model,
the splits and a TrainConfig, and gets metrics and costs back."""

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor
from tqdm.auto import tqdm

from harness.run import distributed
from harness.run.batches import Batches
from harness.run.checkpoint import Checkpointer, rng_state, set_rng_state
from harness.run.meter import Meter
from harness.run.mfu import peak_flops
from harness.run.recipe import TrainConfig, configure_optimizer, lr_lambda, resolve_device, seed_everything
from tasks.base import IGNORE, Split

log = logging.getLogger(__name__)


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
            rows = split.batch(slice(i, i + batch_size))
            batch = model(*rows) if isinstance(model, ScoredLoss) else scored_loss(model, *rows)
        totals += torch.stack([t.double() for t in batch])
    loss, correct, count = totals.tolist()  # one synchronisation per evaluation
    model.train(was_training)
    return {"loss": loss / max(count, 1), "accuracy": correct / max(count, 1)}


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class ScoredLoss(nn.Module):
    """The model and its head as one module whose forward is `scored_loss`: what DDP wraps, so that every parameter
    the loss reaches (the head included) has its gradient reduced over the processes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, inputs: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return scored_loss(self.model, inputs, targets, positions)


@dataclass
class Progress:
    """What the loop carries from one evaluation to the next (and a checkpoint holds)."""

    step: int = 0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"accuracy": -1.0, "step": 0})
    steps_to_target: int | None = None


def runtime(cfg: TrainConfig) -> tuple[torch.device, Callable[[], contextlib.AbstractContextManager], Callable]:
    """The device, the autocast context of each forward (bf16 on CUDA unless precision says fp32) and `sync`, which
    waits for the device's queued work (before a clock is read)."""
    device = resolve_device(cfg.device)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)

    def autocast() -> contextlib.AbstractContextManager:
        if use_bf16:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return device, autocast, sync


def optimisation_step(
    net: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    world: distributed.World,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward and backward over this rank's micro batches (their gradients accumulate; DDP averages them over the
    ranks after the last), then clip and update. Each micro batch's summed loss is divided by the scored-target count
    of the whole global batch (a task scores a different number of targets on each rank), and multiplied by the
    number of ranks that DDP's average divides by: the step's gradients are those of the global batch's mean loss,
    however it is split. Returns this rank's share of that mean (the shares sum to it), the gradient norm before
    clipping and the global batch's scored-target count. Nothing here waits for the device."""
    count = world.all_reduce(sum((targets != IGNORE).sum() for _, targets, _ in micro))
    optimizer.zero_grad(set_to_none=True)
    share = None
    for i, batch in enumerate(micro):
        with world.no_sync(net, last=i == len(micro) - 1):
            with autocast():
                loss_sum, _, _ = net(*batch)
                part = loss_sum / count.clamp(min=1)
            (part * world.size if world.size > 1 else part).backward()
        share = part.detach() if share is None else share + part.detach()
    params = [p for p in model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])  # clip_grad_norm_'s two halves
    if isinstance(grad_norm, DTensor):  # FSDP: each rank's shard of the gradients
        grad_norm = grad_norm.full_tensor()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_(params, cfg.grad_clip, grad_norm)
    optimizer.step()
    return share, grad_norm, count


def resume(
    checkpoint: Checkpointer | None, total_steps: int, world: distributed.World, log_fn: Callable | None
) -> dict | None:
    """The state an interrupted attempt of this run left, if any: the file rank 0 found, read by every rank."""
    if checkpoint is None:
        return None
    checkpoint.resume_from = world.broadcast(checkpoint.resume_from)
    state = checkpoint.load()
    if state is not None and state["total_steps"] != total_steps:
        log.warning(
            "ignoring checkpoint %s: it is for %d steps, this run has %d",
            checkpoint.resume_from,
            state["total_steps"],
            total_steps,
        )
        return None
    if state is not None:
        log.info("resuming from step %d of %d (%s)", state["step"], total_steps, checkpoint.resume_from)
        for row in state["history"] if log_fn is not None else ():  # this attempt's logger gets the whole curve
            log_fn(row, row["step"])
    return state


def checkpoint_state(
    total_steps: int,
    model_state: dict,
    optim_state: dict,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rngs: list[dict],
    progress: Progress,
    meter: Meter,
) -> dict:
    """Everything the loop carries from one step to the next, and every rank's RNG states (rank 0's as `rng`)."""
    return {
        "step": progress.step,
        "total_steps": total_steps,
        "model": model_state,
        "optimizer": optim_state,
        "scheduler": scheduler.state_dict(),
        "rng": rngs[0],
        **({"rng_ranks": rngs} if len(rngs) > 1 else {}),
        "history": progress.history,
        "best": progress.best,
        "tokens_seen": meter.tokens,
        "scored_targets": meter.scored(),
        "train_seconds": meter.trained_seconds(),
    }


def rank_rng(state: dict, world: distributed.World) -> dict:
    """This rank's RNG state from a checkpoint: its own where the checkpoint has one per rank of this world size."""
    ranks = state.get("rng_ranks")
    if ranks is not None and len(ranks) == world.size:
        return ranks[world.rank]
    if world.size > 1:
        log.warning("the checkpoint holds the RNG states of %s processes, not %d", len(ranks or [1]), world.size)
    return state["rng"]


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
    every cfg.checkpoint_every steps. `log_fn(row, step)` gets every eval row plus, over the interval since the last
    one, the mean training loss, the mean gradient norm before clipping, tokens_per_second and mfu (given the
    backbone's `flops_per_token`, the head's `head_flops_per_scored` and a known peak). The cost counts the targets
    scored in training steps (`scored_targets`) and the exact `train_flops` (backbone × tokens + head × scored
    targets: harness/run/mfu.py). In a process group (harness/run/distributed.py), each process trains its slice of
    every global batch under DDP, or with its parameters sharded by FSDP2 (cfg.parallel); only rank 0 saves
    checkpoints and should log. Returns {"metrics": ..., "cost": ..., "history": [...]} (the history without
    throughput, so that it repeats exactly), and under FSDP "weights": the final state dict, whole on rank 0."""
    world = distributed.current()
    device, autocast, sync = runtime(cfg)
    cfg.check(len(splits["train"]), world.size)
    train_split, val_split = splits["train"].to(device), splits["val"].to(device)
    model.to(device)
    sharded = cfg.parallel == "fsdp" and world.size > 1
    compiled = torch.compile(model, mode=cfg.compile_mode) if cfg.compile else model
    net = world.wrap(ScoredLoss(compiled), device, cfg.parallel, getattr(model, "blocks", ()))
    scorer = net if sharded else model  # what evaluates: under FSDP, the root that gathers the weights
    optimizer = configure_optimizer(model, cfg, device)  # after FSDP has replaced the parameters by their shards
    total_steps = cfg.steps_for(len(train_split))
    batches = Batches(train_split, seed, cfg.batch_size, world.rank, world.size, cfg.micro_batch(world.size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps, batches.per_epoch))
    meter = Meter(device, sync, peak_flops(device, cfg.peak_flops), flops_per_token, head_flops_per_scored)
    progress = Progress()
    if world.rank > 0:  # dropout and the like draw other numbers on each rank; the weights are rank 0's (DDP)
        seed_everything(int(np.random.SeedSequence([seed, world.rank]).generate_state(1)[0]), cfg.deterministic)

    state = resume(checkpoint, total_steps, world, log_fn)
    if state is not None:  # everything the loop carries from one step to the next, and the RNG that it draws on
        distributed.load_full_state(model, optimizer, state["model"], state["optimizer"], sharded)
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(rank_rng(state, world), batches.order_gen)
        progress = Progress(state["step"], state["history"], state["best"])
        meter.restore(state["tokens_seen"], state.get("scored_targets"), state["train_seconds"])

    model.train()
    bar = tqdm(
        total=total_steps,
        initial=progress.step,
        disable=None if cfg.progress and world.main else True,
        leave=False,
        dynamic_ncols=True,
    )
    meter.start()
    while progress.step < total_steps:
        micro = batches.at(progress.step)
        loss, grad_norm, scored = optimisation_step(net, model, optimizer, micro, cfg, world, autocast)
        scheduler.step()
        progress.step += 1
        meter.step(sum(b[0].numel() for b in micro) * world.size, scored, loss, grad_norm)
        bar.update(1)
        step = progress.step
        if step % cfg.eval_every == 0 or step == total_steps:
            with meter.off_path():  # the only host synchronisation, and the only place the loss is read
                interval = meter.interval(world.all_reduce)
                row = evaluation_row(step, world.all_reduce(loss.clone()).item(), scorer, val_split, cfg, autocast)
            row |= {"lr": scheduler.get_last_lr()[0], "tokens": meter.tokens}
            progress.history.append(row)
            if log_fn is not None:
                log_fn({**row, **interval}, step)
            bar.set_postfix(loss=f"{row['train/loss']:.3f}", val_acc=f"{row['val/accuracy']:.3f}")
            if row["val/accuracy"] > progress.best["accuracy"]:
                progress.best = {"accuracy": row["val/accuracy"], "step": step}
            if cfg.target_accuracy is not None and row["val/accuracy"] >= cfg.target_accuracy:
                progress.steps_to_target = step  # early stop
                break
        if checkpoint is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
            with meter.off_path():  # never save weights that a rerun would resume into
                finite_loss(world.all_reduce(loss.clone()).item(), step)
                rngs = world.gather(rng_state(batches.order_gen))  # every rank's
                weights = distributed.full_state(model, optimizer, sharded)  # whole, on rank 0
                if world.main:
                    checkpoint.save(checkpoint_state(total_steps, *weights, scheduler, rngs, progress, meter))
    sync()
    train_seconds = meter.trained_seconds()
    bar.close()
    metrics = final_metrics(scorer, splits, progress, cfg, device, autocast)
    cost = {**meter.cost(train_seconds), "resumed_from_step": state["step"] if state is not None else None}
    out = {"metrics": metrics, "cost": cost, "history": progress.history}
    if sharded:  # the final weights, whole, on rank 0 (the model itself holds this rank's shards)
        out["weights"] = distributed.full_state(model, None, sharded)[0]
    return out


def evaluation_row(
    step: int,
    train_loss: float,
    model: nn.Module,
    val_split: Split,
    cfg: TrainConfig,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> dict:
    """The history's row at `step`: the last training loss (Diverged if it is not finite) and the validation split's
    loss and accuracy."""
    finite_loss(train_loss, step)
    val = evaluate(model, val_split, cfg.eval_batch_size, autocast)
    log.info(
        "step %d  train/loss %.4f  val/loss %.4f  val/accuracy %.4f", step, train_loss, val["loss"], val["accuracy"]
    )
    return {"step": step, "train/loss": train_loss, "val/loss": val["loss"], "val/accuracy": val["accuracy"]}


def finite_loss(value: float, step: int) -> float:
    if not math.isfinite(value):
        raise Diverged(f"training loss is {value} at step {step}")
    return value


def final_metrics(
    model: nn.Module,
    splits: dict[str, Split],
    progress: Progress,
    cfg: TrainConfig,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> dict:
    """The last evaluation's train and val numbers, every held-out split but val evaluated now (test, and any extra
    one a task defines, e.g. longer lengths), the best val accuracy and when it came."""
    last = progress.history[-1]
    metrics = {"train/loss": last["train/loss"], "val/loss": last["val/loss"], "val/accuracy": last["val/accuracy"]}
    for name, split in splits.items():
        if name not in ("train", "val"):
            result = evaluate(model, split.to(device), cfg.eval_batch_size, autocast)
            metrics.update({f"{name}/loss": result["loss"], f"{name}/accuracy": result["accuracy"]})
    best = progress.best
    metrics.update(
        {
            "best/val_accuracy": best["accuracy"],
            "best/step": best["step"],
            "steps": progress.step,
            "steps_to_target": progress.steps_to_target,
        }
    )
    return metrics
