"""Submission: turning a batch of new task specs into live tasks, atomically and idempotently.

Rules:
- A submission is judged as a whole (``core.dag.validate_submission``): the first rule it breaks
  raises a typed ``InvalidSubmissionError`` and nothing of it is created.
- A spec whose id, or idempotency key, already names a task (live, stored, or earlier in the same
  submission) with the same fingerprint is not created again: its existing id is returned in its
  place, and specs of the submission that depend on it depend on the existing task.
- The same id or idempotency key with a different fingerprint is a conflict
  (``TaskExistsError``, ``IdempotencyConflictError``).
- New tasks get increasing ``seq`` numbers in submission order and a ``task.created`` event; a
  task whose dependencies are all completed becomes ready at once, one with a dependency that
  failed for good becomes ``upstream_failed``.
- Every task created (a submission's, a split's children, a loop's rounds) passes the ticket
  checks first (``check_new``: the live tasks' ``admit`` hook): one refused task refuses them all.
- Handler-less nodes (a ``kind`` other than ``TASK_KIND``) are never made ready: the live tasks'
  ``nodes`` (``core.coordination``) take them as they are created and once the submission is in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omoi_ray.core.dag import LiveTasks, validate_submission
from omoi_ray.core.merge import join_created
from omoi_ray.core.model import TASK_KIND, NewTask, Task
from omoi_ray.core.task_fields import task_from_new
from omoi_ray.core.tasks import CREATED_EVENT, FAILED_FOR_GOOD, TaskStatus
from omoi_ray.errors import IdempotencyConflictError, InvalidSubmissionError, TaskExistsError, TicketError

S = TaskStatus


@dataclass(frozen=True, slots=True)
class StoredTask:
    """What the owner found in storage about a task that is not in memory (it is terminal)."""

    id: str
    status: TaskStatus
    fingerprint: str
    idempotency_key: str | None = None
    result: Any = None  # a completed task's result (a sync member's, submitted after it ended)
    upstream_cancelled: bool = False  # upstream_failed because its root was cancelled

    @property
    def cancelled(self) -> bool:
        """It ended by a cancel, directly or through others (a dependent's end is a cancel too)."""
        return self.status is TaskStatus.CANCELLED or (
            self.status is TaskStatus.UPSTREAM_FAILED and self.upstream_cancelled
        )


def submit(
    live: LiveTasks,
    new: Sequence[NewTask],
    now: float,
    stored: Mapping[str, StoredTask] | None = None,
    stored_keys: Mapping[str, StoredTask] | None = None,
    request_id: str | None = None,
) -> list[str]:
    """Create the tasks of one submission atomically.

    Args:
        live: the live tasks the new ones join.
        new: the specs, in submission order.
        now: the caller's clock reading (seconds since the epoch).
        stored: task id -> what storage knows of tasks not in memory that the specs name (as
            their own id or as a dependency).
        stored_keys: idempotency key -> the stored task that holds it, for keys not in memory.
        request_id: the submission's request id, recorded on the ``task.created`` events.

    Returns:
        The task id of each spec, in order (an existing task's id for a duplicate).

    Raises:
        InvalidSubmissionError: a duplicate id in the submission, an unknown dependency, a cycle,
            or a conflicting id or idempotency key (``TaskExistsError``,
            ``IdempotencyConflictError``); nothing changes.
    """
    stored = dict(stored or {})
    known_keys = dict(stored_keys or {})  # grows with keys first seen in this submission
    submitted = {spec.id for spec in new}
    alias: dict[str, str] = {}
    fresh: list[NewTask] = []
    for spec in new:
        existing = _existing(live, spec, stored, known_keys)
        if existing is None:
            fresh.append(spec)
            if spec.idempotency_key:
                known_keys[spec.idempotency_key] = StoredTask(
                    spec.id, TaskStatus.PENDING, spec.fingerprint, spec.idempotency_key
                )
        else:
            alias[spec.id] = existing.id
            if existing.id not in live.tasks and existing.id not in submitted:
                stored[existing.id] = existing
    if alias:
        fresh = [
            dataclasses.replace(spec, depends_on=tuple(alias.get(d, d) for d in spec.depends_on))
            for spec in fresh
        ]

    validate_submission(fresh, lambda tid: tid in live.tasks or tid in stored or tid in alias.values())

    created = create_tasks(live, fresh, now, stored, request_id)
    if live.nodes is not None:
        live.nodes.submitted(created, now)
    for task in created:
        if task.status is S.PENDING and task.waiting_on == 0 and task.kind == TASK_KIND:
            live.make_ready(task, now)
    return [alias.get(spec.id, spec.id) for spec in new]


def _existing(
    live: LiveTasks, spec: NewTask, stored: Mapping[str, StoredTask], stored_keys: Mapping[str, StoredTask]
) -> StoredTask | None:
    """The task this spec duplicates (by id or idempotency key), if any; raise if it conflicts
    with one."""
    found = _known(live, spec.id, stored)
    if found is not None:
        if found.fingerprint != spec.fingerprint:
            raise TaskExistsError(
                f"task '{spec.id}' already exists with a different definition; choose another id",
                task_id=spec.id,
            )
        return found
    if spec.idempotency_key:
        key_id = live.by_key.get(spec.idempotency_key)
        found = _known(live, key_id, stored) if key_id else stored_keys.get(spec.idempotency_key)
        if found is not None:
            if found.fingerprint != spec.fingerprint:
                raise IdempotencyConflictError(
                    f"idempotency key '{spec.idempotency_key}' of task '{spec.id}' was already "
                    f"used by task '{found.id}' with a different definition",
                    task_id=spec.id,
                    idempotency_key=spec.idempotency_key,
                )
            return found
    return None


def _known(live: LiveTasks, task_id: str, stored: Mapping[str, StoredTask]) -> StoredTask | None:
    task = live.tasks.get(task_id)
    if task is not None:
        return StoredTask(task.id, task.status, task.fingerprint, task.idempotency_key)
    return stored.get(task_id)


def check_new(live: LiveTasks, new: Sequence[NewTask]) -> None:
    """Run the live tasks' ``admit`` check (a ticket's rules) on every spec before any is created.

    Raises:
        InvalidSubmissionError: names the task and why its ticket refuses it (a cancelled
            ticket, a phase the ticket does not have); nothing was created.
    """
    if live.admit is None:
        return
    for spec in new:
        try:
            live.admit(spec)
        except TicketError as exc:
            raise InvalidSubmissionError(str(exc), task_id=spec.id, ticket_id=spec.ticket_id) from None


def create_tasks(
    live: LiveTasks,
    new: Sequence[NewTask],
    now: float,
    stored: Mapping[str, StoredTask],
    request_id: str | None,
) -> list[Task]:
    """Create tasks already judged as a submission (``validate_submission``): each gets its
    ``seq`` and ``task.created`` event, waits on its live dependencies, and is doomed at once by
    a stored dependency that failed for good. None is made ready here (the caller does, once
    everything of its change set is wired).

    Args:
        live: the live tasks the new ones join.
        new: the tasks, in creation order.
        now: the caller's clock reading (seconds).
        stored: task id -> what storage knows of each dependency that is not live.
        request_id: recorded on the ``task.created`` events.

    Returns:
        The created tasks, in order.

    Raises:
        InvalidSubmissionError: a ticket refuses one of them (``check_new``); nothing was created.
    """
    check_new(live, new)
    created: list[Task] = []
    doomed: list[tuple[Task, str, str, bool]] = []  # (task, dependency, reason, it was cancelled)
    nodes = live.nodes
    for spec in new:
        task = task_from_new(spec, seq=live.next_seq, created_at=now, updated_at=now)
        live.next_seq += 1
        live.add(task)
        live.log.created.add(task)
        live.emit(
            CREATED_EVENT,
            task,
            now,
            request_id=request_id,
            payload={
                "type": task.type,
                "priority": task.priority.name,
                "requires": sorted(task.requires),
                "depends_on": list(task.depends_on),
                "kind": None if task.kind == TASK_KIND else task.kind,
            },
        )
        if task.kind != TASK_KIND and nodes is not None:
            nodes.created(task, now)
        if task.merge is not None:
            live.log.events.add(join_created(task, now, request_id))
        created.append(task)

    for task in created:
        for dep in task.depends_on:
            live.log.dependencies.add((task.id, dep))
            if not live.link(task, dep):
                ref = stored[dep]
                if task.kind != TASK_KIND and nodes is not None and nodes.stored_upstream(task, dep, ref.status, ref.result, now):
                    continue
                if ref.status in FAILED_FOR_GOOD:
                    reason = f"upstream task '{dep}' {ref.status.value}"
                    doomed.append((task, dep, reason, ref.cancelled))

    if created:
        live.log.decisions.add(tuple(t.id for t in created))
    for task, dep_id, reason, cancelled in doomed:
        if task.status is S.PENDING:
            live.doom(task, dep_id, reason, now, cancelled=cancelled)
    return created
