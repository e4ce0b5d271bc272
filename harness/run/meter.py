"""What a training run costs and how fast it goes: tokens seen, targets scored, seconds on the training path (evaluation
and checkpoint saves are off it), throughput and MFU per logging interval, and the interval's mean training loss and
gradient norm. Per-step values are summed on the device: nothing here waits for it except at an interval's end."""

import contextlib
import time
from collections.abc import Callable, Iterator

import torch

from harness.run.mfu import mfu, train_flops


class Meter:
    def __init__(
        self,
        device: torch.device,
        sync: Callable[[], None],
        peak: float | None,
        flops_per_token: float | None,
        head_flops_per_scored: float | None,
    ) -> None:
        self.device, self.sync, self.peak = device, sync, peak
        self.flops_per_token, self.head_flops_per_scored = flops_per_token, head_flops_per_scored
        self.tokens, self.seconds_before, self.off_path_seconds = 0, 0.0, 0.0
        self.scored_before: int | None = 0  # targets scored by earlier attempts (None: a checkpoint that did not count)
        self.scored_now = torch.zeros((), dtype=torch.int64, device=device)  # this attempt's, summed on the device
        self.first_step_time: float | None = None
        self.loop_start = time.perf_counter()
        self._interval_sums()

    def _interval_sums(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.grad_norm_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.steps_in_interval = 0

    def restore(self, tokens: int, scored: int | None, seconds: float) -> None:
        """Carry on from a checkpoint's counts."""
        self.tokens, self.scored_before, self.seconds_before = tokens, scored, seconds

    def start(self) -> None:
        self.loop_start = time.perf_counter()
        self.last_tokens, self.last_seconds, self.last_scored = self.tokens, self.seconds_before, self.scored()

    def step(self, tokens: int, scored: torch.Tensor, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """One optimisation step: its global batch's tokens and scored targets, its loss (this rank's share of the
        global batch's mean) and the gradient norm before clipping."""
        self.tokens += tokens
        self.scored_now += scored
        self.loss_sum += loss.detach().double()
        self.grad_norm_sum += grad_norm.detach().double()
        self.steps_in_interval += 1
        if self.first_step_time is None:
            self.first_step_time = time.time()

    def scored(self) -> int | None:
        return None if self.scored_before is None else self.scored_before + int(self.scored_now.item())

    def trained_seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.loop_start - self.off_path_seconds

    @contextlib.contextmanager
    def off_path(self) -> Iterator[None]:
        """Time spent inside (evaluation, checkpoint saves) does not count as training; the device's queued work
        before it belongs to the steps that queued it."""
        self.sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            self.off_path_seconds += time.perf_counter() - t

    def interval(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict:
        """Since the last interval: tokens_per_second, mfu, the mean training loss (`reduce` sums the ranks' shares)
        and the mean gradient norm. Call inside `off_path`."""
        trained, scored = self.trained_seconds(), self.scored()
        seconds = trained - self.last_seconds
        speed = (self.tokens - self.last_tokens) / seconds if seconds > 0 else None
        delta = None if scored is None or self.last_scored is None else scored - self.last_scored
        done = self.flops_per_token_done(self.tokens - self.last_tokens, delta)
        self.last_tokens, self.last_seconds, self.last_scored = self.tokens, trained, scored
        n = max(self.steps_in_interval, 1)
        loss = reduce(self.loss_sum.clone()).item() / n
        grad_norm = self.grad_norm_sum.item() / n  # the same on every rank: gradients are reduced before the norm
        self._interval_sums()
        return {
            "train/loss_mean": loss,
            "grad_norm": grad_norm,
            "tokens_per_second": speed,
            "mfu": mfu(done, speed, self.peak),
        }

    def flops_per_token_done(self, tokens: int, scored: int | None) -> float | None:  # head included, for MFU
        flops = train_flops(self.flops_per_token, tokens, self.head_flops_per_scored, scored)
        return flops / tokens if flops is not None and tokens > 0 else None

    def cost(self, train_seconds: float) -> dict:
        scored = self.scored()
        speed = self.tokens / train_seconds if train_seconds > 0 else None
        memory = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        return {
            "tokens_seen": self.tokens,
            "scored_targets": scored,
            "train_flops": train_flops(self.flops_per_token, self.tokens, self.head_flops_per_scored, scored),
            "train_seconds": train_seconds,
            "tokens_per_second": speed,
            "mfu": mfu(self.flops_per_token_done(self.tokens, scored), speed, self.peak),
            "peak_flops": self.peak,
            "peak_memory_bytes": memory,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "first_step_time": self.first_step_time,
        }
