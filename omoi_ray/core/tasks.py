"""The task lifecycle: every status a task can have and every move between them.

Rules:
- ``TRANSITIONS`` is the only place that says which status may follow which, and which event a
  move emits. Code elsewhere asks ``event_for(old, new)``; it raises ``IllegalTransitionError``
  for any pair the table does not list, so an unlisted move cannot happen silently.
- A task is created in ``PENDING`` (event ``task.created``) and leaves it as soon as its
  dependencies allow.
- ``TERMINAL`` statuses have no outgoing moves. ``FAILED_FOR_GOOD`` are the terminal statuses
  that doom dependents: each dependent, direct or not, moves to ``UPSTREAM_FAILED`` with a reason
  naming the task that caused it.
- ``ACTIVE`` statuses are those in which an agent holds the task (an attempt is under way).

    PENDING --deps done--> READY --claim--> CLAIMED --start--> RUNNING --ok--> COMPLETED
       |                     ^                 |                  |
       |                     +---- lost -------+------------------+ (attempt + 1)
       |                     |                                    +--error, retries left--> RETRY_WAIT
       |                     +----------- backoff elapsed ------------------------------------+
       +--upstream failed--> UPSTREAM_FAILED         any non-terminal --cancel--> CANCELLED
       +--node settled (sync, loop: core.coordination)--> COMPLETED or FAILED
    READY or RETRY_WAIT (backoff elapsed) --held by its ticket (core.tickets)--> PENDING
                                                     any non-terminal --cannot be stored--> FAILED
"""

from __future__ import annotations

from enum import Enum

from omoi_ray.errors import IllegalTransitionError


class TaskStatus(str, Enum):
    """A task's status; the value is the stored text (``str()`` gives it too)."""

    PENDING = "pending"
    READY = "ready"
    CLAIMED = "claimed"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    UPSTREAM_FAILED = "upstream_failed"

    def __str__(self) -> str:
        """The stored value, e.g. ``"retry_wait"``."""
        return self.value


S = TaskStatus

#: old status -> {new status: event type emitted by that move}
TRANSITIONS: dict[TaskStatus, dict[TaskStatus, str]] = {
    S.PENDING: {
        S.READY: "task.ready",
        S.COMPLETED: "task.completed",  # a handler-less node (sync, loop) settled by the core

        S.CANCELLED: "task.cancelled",
        S.UPSTREAM_FAILED: "task.upstream_failed",
        S.FAILED: "task.failed",  # its change could not be stored (the scheduler's backstop)
    },
    S.READY: {
        S.CLAIMED: "task.claimed",
        S.PENDING: "task.held",  # its ticket recalled it (``core.tickets``: blocked, or moved back)
        S.CANCELLED: "task.cancelled",
        S.FAILED: "task.failed",  # its change could not be stored
    },
    S.CLAIMED: {
        S.RUNNING: "task.started",
        S.CLAIMED: "task.claimed",  # handed off (``core.handoff``): a new attempt, another agent
        S.READY: "task.requeued",  # the agent was lost before the handler started
        S.FAILED: "task.failed",  # ... and that was its last allowed attempt
        S.CANCELLED: "task.cancelled",
    },
    S.RUNNING: {
        S.COMPLETED: "task.completed",
        S.CLAIMED: "task.claimed",  # handed off (``core.handoff``): a new attempt, another agent
        S.FAILED: "task.failed",
        S.RETRY_WAIT: "task.retry_scheduled",
        S.TIMED_OUT: "task.timed_out",
        S.READY: "task.requeued",  # the agent was lost mid-attempt
        S.CANCELLED: "task.cancelled",
    },
    S.RETRY_WAIT: {
        S.READY: "task.ready",
        S.PENDING: "task.held",  # its backoff ended while its ticket holds it (``core.tickets``)
        S.CANCELLED: "task.cancelled",
        S.FAILED: "task.failed",  # its change could not be stored
    },
    S.COMPLETED: {},
    S.FAILED: {},
    S.CANCELLED: {},
    S.TIMED_OUT: {},
    S.UPSTREAM_FAILED: {},
}

TERMINAL: frozenset[TaskStatus] = frozenset(s for s, moves in TRANSITIONS.items() if not moves)
FAILED_FOR_GOOD: frozenset[TaskStatus] = TERMINAL - {S.COMPLETED}
ACTIVE: frozenset[TaskStatus] = frozenset({S.CLAIMED, S.RUNNING})
CREATED_EVENT = "task.created"
#: written for every attempt that runs past its timeout: by the move to TIMED_OUT on the last
#: attempt, on its own before the move to RETRY_WAIT otherwise
TIMED_OUT_EVENT = TRANSITIONS[S.RUNNING][S.TIMED_OUT]
#: a task failed for good (also written, with no move, for a final status that could not be stored)
FAILED_EVENT = TRANSITIONS[S.RUNNING][S.FAILED]


def event_for(old: TaskStatus, new: TaskStatus, task_id: str = "?") -> str:
    """Return the event type of the move ``old -> new``; raise if the table does not allow it.

    Args:
        old: the task's current status.
        new: the status it moves to.
        task_id: named in the error message.

    Returns:
        the event type, e.g. ``"task.ready"``.

    Raises:
        IllegalTransitionError: ``TRANSITIONS`` does not list the move.
    """
    try:
        return TRANSITIONS[old][new]
    except KeyError:
        raise IllegalTransitionError(
            f"task '{task_id}' cannot move from {old.value} to {new.value}",
            task_id=task_id,
            old=old.value,
            new=new.value,
        ) from None
