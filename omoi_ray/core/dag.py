"""The DAG: the rules a submission must satisfy, and the live tasks with their settlement.

``validate_submission`` judges a submission before any of it is stored. ``LiveTasks`` holds the
live (non-terminal) tasks, the dependency counters between them and the ready index; every
status move of a task goes through its ``move``, which records the move's event and settles the
task's dependents when it is terminal.

Rules:
- Status moves follow the table in ``core.tasks`` (``event_for``); each move records its event.
- A task that reaches a terminal status leaves memory. If it completed, each dependent's counter
  drops and dependents at zero become ready. If it failed for good (failed, timed out, cancelled,
  upstream failed), every dependent, direct or not, becomes ``upstream_failed`` with a reason
  naming the root task.
- Except for handler-less nodes (``kind`` not ``"task"``): their dependencies' ends go to
  ``nodes`` (``core.coordination``), whose rules settle them; a sync is not doomed by one
  member's failure while k of its n members can still complete.
- Settlement is iterative (a worklist, not recursion), so a failure at the head of a chain of any
  length dooms the whole chain; ``settling_after`` holds it back until several moves are made.
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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from omoi_ray.core.changes import ChangeRecorder
from omoi_ray.core.model import TASK_KIND, Event, NewTask, Task
from omoi_ray.core.ready import ReadyIndex
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.core.tasks import TERMINAL, TaskStatus, event_for
from omoi_ray.errors import CycleError, DuplicateTaskError, UnknownDependencyError

S = TaskStatus


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


class LiveTasks:
    """The live tasks of the scheduler core, the edges between them, and their moves.

    Attributes:
        tasks: task id -> live task.
        dependents: task id -> ids of live tasks that wait on it.
        by_key: idempotency key -> id of the live task that holds it.
        ready: the ready index (tasks in ``ready``, by capability and priority).
        next_seq: the submission sequence number the next new task gets.
        log: the shared change recorder every move is recorded in.
    """

    def __init__(self, log: ChangeRecorder[TaskChanges]) -> None:
        self.tasks: dict[str, Task] = {}
        self.dependents: dict[str, list[str]] = {}
        self.by_key: dict[str, str] = {}
        self.ready = ReadyIndex()
        self.next_seq = 1
        self.log = log
        self._settling: deque[Task] = deque()
        self._draining = False
        #: the rules of handler-less nodes (``core.coordination.Coordination`` sets itself here):
        #: a dependent whose ``kind`` is not ``"task"`` is settled by them, never made ready
        self.nodes: Any = None
        #: why a task may not become ready yet (``core.tickets``: its ticket's phase), or None
        self.hold: Callable[[Task], str | None] | None = None
        #: raises when a new task (``NewTask``: id, ticket_id, phase) may not be created
        #: (``core.tickets``: a cancelled ticket, a phase it lacks); run by ``core.submission``
        self.admit: Callable[[Any], None] | None = None
        #: told of each task joining memory, of each leaving it (final), and of each forgotten
        #: (``forget``: it never existed, so it ended nothing)
        self.on_add: Callable[[Task], None] | None = None
        self.on_leave: Callable[[Task, float], None] | None = None
        self.on_forget: Callable[[Task], None] | None = None

    def add(self, task: Task) -> None:
        """Hold ``task`` in memory (new or restored); its idempotency key now names it."""
        self.tasks[task.id] = task
        if task.idempotency_key:
            self.by_key[task.idempotency_key] = task.id
        if self.on_add is not None and task.ticket_id is not None:
            self.on_add(task)

    def link(self, task: Task, dep_id: str) -> bool:
        """Make ``task`` wait on ``dep_id`` if that task is live; return whether it is (a
        dependency that is not live is terminal: the caller reads its stored status)."""
        if dep_id not in self.tasks:
            return False
        task.waiting_on += 1
        self.dependents.setdefault(dep_id, []).append(task.id)
        return True

    def move(self, task: Task, new: TaskStatus, now: float, **payload: Any) -> None:
        """Move ``task`` to ``new`` (the table in ``core.tasks`` decides whether it may: raises
        ``IllegalTransitionError`` if not) and record it with its event; ``payload`` entries that
        are not None (``request_id`` apart) become the event's payload. A terminal move settles
        the task's dependents and takes it out of memory."""
        event_type = event_for(task.status, new, task.id)
        task.status = new
        task.updated_at = now
        if task.id not in self.log.created:
            self.log.updated.add(task)
        request_id = payload.pop("request_id", None)
        self.emit(event_type, task, now, payload=payload, request_id=request_id)
        if new in TERMINAL:
            task.finished_at = now
            self._settle(task, now)

    def make_ready(self, task: Task, now: float) -> None:
        """Move ``task`` to ``ready`` and offer it in the ready index; a task ``hold`` holds back
        stays (or goes back to, from ``retry_wait``) ``pending`` with the hold's reason (its
        ticket releases it later)."""
        why = self.held_back(task)
        if why is not None:
            if task.status is not S.PENDING:
                self.hold_back(task, why, now)
            elif task.reason != why:
                task.reason = why
                if task.id not in self.log.created:
                    self.log.updated.add(task)
            return
        self.move(task, S.READY, now)
        self.ready.push(task.id, task.requires, task.priority, task.seq, task_type=task.type)

    def held_back(self, task: Task) -> str | None:
        """Why ``task`` may not be claimed now (its ticket holds it back).

        Args:
            task: a task about to be offered in the ready index.

        Returns:
            The reason ``hold`` gives (stored as the task's reason), or None: no ``hold``, no
            ticket, or its ticket lets it run.
        """
        if self.hold is None or task.ticket_id is None:
            return None
        return self.hold(task)

    def hold_back(self, task: Task, why: str, now: float) -> None:
        """Take a ``ready`` (or ``retry_wait``) task back to ``pending``, out of the ready index:
        its ticket recalled it (event ``task.held``).

        Args:
            task: the task held back.
            why: the reason, stored as the task's ``reason`` (from ``held_back``).
            now: the time of the change.
        """
        self.ready.discard(task.id)
        task.reason = why
        self.move(task, S.PENDING, now, reason=why)

    def push_ready(self, task: Task, now: float) -> None:
        """Offer a task that is already ``ready`` (requeued, or restored) in the ready index,
        unless ``hold`` holds it back: then it goes back to ``pending`` (``hold_back``).

        Args:
            task: a task of status ``ready``.
            now: the time of the change (if it is held back).
        """
        why = self.held_back(task)
        if why is not None:
            self.hold_back(task, why, now)
        else:
            self.ready.push(task.id, task.requires, task.priority, task.seq, task_type=task.type)

    def doom(self, task: Task, root: str, reason: str, now: float, *, cancelled: bool = False) -> None:
        """Fail ``task`` as ``upstream_failed`` because task ``root`` failed for good
        (``cancelled``: ``root`` was cancelled, not failed; ``Task.upstream_cancelled``)."""
        task.upstream = root
        task.upstream_cancelled = cancelled
        task.reason = reason
        self.move(task, S.UPSTREAM_FAILED, now, reason=reason, upstream=root)

    def forget(self, task: Task, now: float) -> list[str]:
        """Take ``task`` out of memory as if it had never been created (the storage backstop:
        its row could not be stored); no move, no event. Its dependents wait on it no longer.

        Returns:
            The ids of its dependents (the caller decides their fate).
        """
        del self.tasks[task.id]
        self.ready.discard(task.id)
        if task.idempotency_key and self.by_key.get(task.idempotency_key) == task.id:
            del self.by_key[task.idempotency_key]
        for dep_id in task.depends_on:
            waiting = self.dependents.get(dep_id)
            if waiting and task.id in waiting:
                waiting.remove(task.id)
        if self.on_forget is not None and task.ticket_id is not None:
            self.on_forget(task)  # only uncounted from its ticket's phase: it ended nothing
        dependents = self.dependents.pop(task.id, [])
        for dep_id in dependents:
            dep = self.tasks.get(dep_id)
            if dep is not None:
                dep.waiting_on -= 1
        return dependents

    def emit(
        self, event_type: str, task: Task, now: float, payload: dict[str, Any], request_id: str | None = None
    ) -> None:
        """Record a task event (payload entries that are None are left out)."""
        self.log.events.add(
            Event(
                type=event_type,
                entity_type="task",
                entity_id=task.id,
                at=now,
                payload={k: v for k, v in payload.items() if v is not None},
                task_id=task.id,
                agent_id=task.agent_id,
                ticket_id=task.ticket_id,
                request_id=request_id,
            )
        )

    @contextmanager
    def settling_after(self, now: float) -> Iterator[None]:
        """Hold settlement back until the block ends: tasks that become terminal inside it
        settle their dependents only then (so a dependent of two of them is doomed once)."""
        outer = self._draining
        self._draining = True
        try:
            yield
        finally:
            self._draining = outer
        if not outer:
            self._settle_queued(now)

    def _settle(self, task: Task, now: float) -> None:
        self._settling.append(task)
        if self._draining:
            return  # an outer call is draining the worklist
        self._settle_queued(now)

    def _settle_queued(self, now: float) -> None:
        self._draining = True
        try:
            while self._settling:
                self._leave_memory(self._settling.popleft(), now)
        finally:
            self._draining = False

    def _leave_memory(self, task: Task, now: float) -> None:
        del self.tasks[task.id]
        self.ready.discard(task.id)
        if task.idempotency_key:
            self.by_key.pop(task.idempotency_key, None)
        self.log.finished.add(task.id)
        if self.on_leave is not None and task.ticket_id is not None:
            self.on_leave(task, now)
        dependents = self.dependents.pop(task.id, ())
        if task.status is S.COMPLETED:
            for dep_id in dependents:
                dep = self.tasks.get(dep_id)
                if dep is not None and dep.status is S.PENDING:
                    dep.waiting_on -= 1
                    if dep.kind != TASK_KIND and self.nodes is not None:
                        self.nodes.upstream_completed(dep, task, now)
                    elif dep.waiting_on == 0:
                        self.make_ready(dep, now)
            return
        if task.status is S.UPSTREAM_FAILED and task.upstream:
            root, reason, cancelled = task.upstream, task.reason or "", task.upstream_cancelled
        else:
            root, reason, cancelled = task.id, f"upstream task '{task.id}' {task.status.value}", task.status is S.CANCELLED
        for dep_id in dependents:
            dep = self.tasks.get(dep_id)
            if dep is not None and dep.status is S.PENDING:
                dep.waiting_on -= 1
                if dep.kind == TASK_KIND or self.nodes is None or not self.nodes.upstream_failed(dep, task, now):
                    self.doom(dep, root, reason, now, cancelled=cancelled)
