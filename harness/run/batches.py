"""Which rows each training step reads. The global batch (trainer.batch_size rows) is a function of (seed, step)
alone, whatever the number of processes: a shuffled pass over the training set per epoch (the order drawn from
(seed, epoch)), or, for token shards on disk, windows at offsets drawn from (seed, step). Each rank takes its
contiguous slice of the global batch and cuts it into micro batches of trainer.micro_batch_size rows, whose
gradients accumulate: 2 processes x 2 micro batches of 8 rows train on the rows 1 process x 32 rows would."""

import torch

from tasks.base import Split


class Batches:
    def __init__(self, split: Split, seed: int, batch_size: int, rank: int, world_size: int, micro: int) -> None:
        self.split, self.seed, self.batch_size, self.micro = split, seed, batch_size, micro
        self.per_rank = batch_size // world_size
        self.rows = slice(rank * self.per_rank, (rank + 1) * self.per_rank)  # this rank's part of a global batch
        self.per_epoch = len(split) // batch_size
        self.order_gen = torch.Generator().manual_seed(seed)  # its state is checkpointed with the other RNGs
        self.order: torch.Tensor | None = None
        self.epoch = -1

    def at(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """This rank's micro batches of step `step`'s global batch: (inputs, targets, scored positions) each."""
        cuts = [slice(i, i + self.micro) for i in range(self.rows.start, self.rows.stop, self.micro)]
        if self.split.random_windows:  # token shards: this rank reads only its own windows
            offsets = self.split.offsets(self.seed, step, self.batch_size)
            return [self.split.read(offsets[cut]) for cut in cuts]
        if step // self.per_epoch != self.epoch:
            self.epoch = step // self.per_epoch
            self.order_gen.manual_seed(self.seed * 1_000_003 + self.epoch)
            self.order = torch.randperm(len(self.split), generator=self.order_gen).to(self.split.device)
        j = step % self.per_epoch
        rows = self.order[j * self.batch_size : (j + 1) * self.batch_size]
        return [self.split.batch(rows[cut]) for cut in cuts]
