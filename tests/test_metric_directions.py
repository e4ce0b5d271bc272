"""Which way each metric is better is declared once, by the tasks (Task.metrics), and read by the board, the race and
a search through tasks/registry.py."""

from dataclasses import dataclass

import pytest
from hydra.utils import instantiate

from harness.report import marking
from harness.run import search
from tasks import registry
from tasks.base import HIGHER, LOWER, Task
from tests.conftest import options
from tests.test_tasks import small


@pytest.mark.parametrize("name", options("task"))
def test_every_metric_a_task_records_has_a_declared_direction(compose, name):
    """The trainer's loss and accuracy on every split, and the task's derived metrics, are each declared by the task,
    and the readers agree with the declaration."""
    task = small(instantiate(compose([f"task={name}"]).task))
    assert type(task) in registry.task_classes()
    trained = {f"{split}/{m}": 0.5 for split in task.split_names for m in ("loss", "accuracy")}
    recorded = {*trained, *task.derived_metrics(trained)}
    for key in recorded:
        metric = key.rsplit("/", 1)[-1]
        assert metric in type(task).metrics, f"{type(task).__name__} records {key} but does not declare {metric}"
        lower = type(task).metrics[metric] == LOWER
        assert registry.directions()[metric] == type(task).metrics[metric]
        assert (metric in registry.LOWER_IS_BETTER) == lower
        assert marking.higher_is_better(metric) == (not lower)
        assert search.lower_is_better(key) == lower


def test_a_metric_declared_both_ways_or_neither_is_an_error():
    @dataclass
    class Backwards(Task):
        metrics = {"loss": HIGHER}

    with pytest.raises(ValueError, match="metric 'loss' is declared lower is better by one task, higher by Backwards"):
        registry.directions((*registry.task_classes(), Backwards))
    Backwards.metrics = {"loss": "down"}
    with pytest.raises(ValueError, match=r"Backwards.metrics\['loss'\] = 'down': allowed 'higher' or 'lower'"):
        registry.directions((Backwards,))
