"""Graph rules a submission must satisfy before any of it is stored.

Rules:
- A submission is judged as a whole: the first rule it breaks rejects all of it.
- Ids are unique within a submission; a task may not depend on itself; every dependency names a
  task in the same submission or one that already exists; dependencies form no cycle.
- Cycles can only run through the submission itself: stored tasks never depend on tasks that did
  not exist when they were submitted. So the cycle check looks at the submission alone.
- Cycles are reported in "depends on" order, starting from the earliest submitted task of the
  cycle: ``a -> b -> a`` means a depends on b and b on a.
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable, Sequence

from omoi_ray.core.model import NewTask
from omoi_ray.errors import CycleError, DuplicateTaskError, UnknownDependencyError


def validate_submission(tasks: Sequence[NewTask], exists: Callable[[str], bool]) -> None:
    """Raise a typed ``InvalidSubmissionError`` for the first rule the submission breaks.

    ``exists(task_id)`` says whether a task outside the submission is already stored.
    """
    order: dict[str, int] = {}
    for index, task in enumerate(tasks):
        if task.id in order:
            raise DuplicateTaskError(
                f"task id '{task.id}' appears more than once in the submission", task_id=task.id
            )
        order[task.id] = index

    for task in tasks:
        for dep in task.depends_on:
            if dep == task.id:
                raise CycleError(
                    f"task '{task.id}' depends on itself (cycle: {task.id} -> {task.id})",
                    cycle=[task.id, task.id],
                )
            if dep not in order and not exists(dep):
                raise UnknownDependencyError(
                    f"task '{task.id}' depends on unknown task '{dep}'",
                    task_id=task.id,
                    dependency=dep,
                )

    sorter = graphlib.TopologicalSorter({t.id: [d for d in t.depends_on if d in order] for t in tasks})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = _depends_on_order(exc.args[1], order)
        raise CycleError("cycle: " + " -> ".join(cycle), cycle=cycle) from None


def _depends_on_order(cycle: list[str], order: dict[str, int]) -> list[str]:
    """graphlib lists a cycle predecessor-first; turn it into "depends on" order, rotated to
    start at the task submitted first."""
    nodes = list(reversed(cycle[:-1]))
    start = min(range(len(nodes)), key=lambda i: order[nodes[i]])
    nodes = nodes[start:] + nodes[:start]
    return nodes + [nodes[0]]
