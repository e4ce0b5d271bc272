"""Every task archbench has (each subclass of tasks/base.py's Task in this package), and what they declare about their
metrics: `directions()` maps each metric name to "higher" or "lower" (which way it is better), `LOWER_IS_BETTER` the
names better lower. The board, the race and a search read these, so a task that adds a metric declares its direction
once, beside the code that computes it."""

import importlib
import pkgutil
from functools import cache

import tasks
from tasks.base import HIGHER, LOWER, Task


@cache
def task_classes() -> tuple[type[Task], ...]:
    """Every subclass of Task defined in the tasks package (its modules imported once), by qualified name."""
    for info in pkgutil.walk_packages(tasks.__path__, "tasks."):
        importlib.import_module(info.name)
    found, todo = set(), [Task]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found and sub.__module__.startswith("tasks."):
                found.add(sub)
                todo.append(sub)
    return tuple(sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}"))


def directions(classes: tuple[type[Task], ...] | None = None) -> dict[str, str]:
    """Metric name -> "higher" or "lower", over the declarations (Task.metrics) of `classes` (every task's). A name
    declared in opposite directions, or a direction other than those two, is an error: one board ranks one metric
    over many tasks."""
    out: dict[str, str] = {}
    for cls in (Task, *(task_classes() if classes is None else classes)):
        for name, way in cls.metrics.items():
            if way not in (HIGHER, LOWER):
                raise ValueError(f"{cls.__name__}.metrics[{name!r}] = {way!r}: allowed {HIGHER!r} or {LOWER!r}")
            if out.setdefault(name, way) != way:
                raise ValueError(
                    f"metric {name!r} is declared {out[name]} is better by one task, {way} by {cls.__name__}"
                )
    return out


# which metrics are better lower (the board's ranks and marks, the race and a search read it); any other: higher
LOWER_IS_BETTER = frozenset(name for name, way in directions().items() if way == LOWER)
