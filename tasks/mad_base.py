"""What the six MAD tasks (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures") share, and
where archbench differs from the data generators of MAD's code (github.com/athms/mad-lab, mad/data/instances.py).

- Accuracy: archbench's is token accuracy over the scored positions, pooled over a split. MAD's code computes
  torchmetrics' MulticlassAccuracy with its default macro average: the accuracy of each target class, then the mean
  over classes. The two agree when every class is scored equally often and equally well; otherwise they differ.
- Validation: MAD has no validation set; it reports, and picks the best of its optimizer grid on, the test set.
  archbench draws a separate `val` split (num_val examples, as many as test by default) from its own random
  stream, selects on it, and reports `test`.
- Randomness: the same distributions as MAD's generators, drawn vectorized from archbench's per-split streams, so
  the arrays differ from MAD's for the same seed. MAD's recall tasks train on next-token prediction at every
  position (`is_training=True`) and test on the probed values only; archbench does the same (`train_all_tokens`).
- MAD's score: the best test accuracy over the optimizer grid (lr in {1e-4, 5e-4, 1e-3} x weight decay in
  {0, 0.1}) per setting, the mean over a task's settings, then the mean over tasks. Every MAD config carries
  `family` (the task) and `setting` (`baseline`, or the one factor varied from it, e.g. `vocab_size_32`) for a
  leaderboard to group by; neither changes the data.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tasks.base import Task


@dataclass
class MADTask(Task):
    family: str = ""
    setting: str = "baseline"


def first_occurrence(codes: np.ndarray) -> np.ndarray:
    """For each entry of each row of `codes` (n, S), the index of the first entry of that row with the same code.
    Rows are sorted stably, so the first of each run of equal codes is the earliest."""
    n, S = codes.shape
    order = np.argsort(codes, axis=1, kind="stable")
    ranked = np.take_along_axis(codes, order, axis=1)
    new = np.ones((n, S), dtype=bool)
    new[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    group_start = np.maximum.accumulate(np.where(new, np.arange(S), 0), axis=1)
    first = np.empty_like(order)
    np.put_along_axis(first, order, np.take_along_axis(order, group_start, axis=1), axis=1)
    return first


def in_chunks(
    make: Callable[[int], tuple[np.ndarray, np.ndarray]], n: int, rows_per_chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """Call make(rows) on chunks of at most rows_per_chunk rows and stack the (inputs, targets) it returns: bounds
    the memory of generators with large intermediate arrays. The random stream is consumed in order, so the
    result is deterministic (though not the same arrays as one call with all rows)."""
    parts = [make(min(rows_per_chunk, n - i)) for i in range(0, n, max(1, rows_per_chunk))]
    if not parts:
        return make(0)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def next_token(stream: np.ndarray, scored: np.ndarray, width: int, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """MAD's autoregressive shift: inputs stream[:-1], targets stream[1:] when training (every position scored),
    else scored[1:] (the probed tokens only). Arrays are cut or extended to `width`; an extended last position is
    not scored."""
    n, T = stream.shape
    inputs = stream[:, :width]
    targets = np.full((n, width), -100, dtype=np.int64)
    shifted = (stream if train else scored)[:, 1 : width + 1]
    targets[:, : shifted.shape[1]] = shifted
    return inputs, targets
