"""The catalogue of event types: every event omoi-ray writes has its type listed here.

Rules:
- A type is ``<area>.<what happened>`` in lower case; its entity type says what ``entity_id``
  names (a task, an agent, a lock resource, a queued lock request, a thread...), and it is the
  entity type the emitter writes: ``lock.waiting``/``lock.wait_ended``/``lock.deadlock`` name the
  request (``lock_request``, its request id), the other ``lock.*`` types the resource (``lock``).
  tests/test_event_catalogue.py drives the core through every emitted type and checks both.
- ``EMITTED`` types are written today; ``DECLARED`` ones belong to features still being built
  (joins and merges). They are listed now so that consumers,
  filters and the README agree on the names before the features land.
- Filters are shell-style patterns (``task.*``, ``lock.granted``), matched by ``matches``.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import NamedTuple


class EventType(NamedTuple):
    """One catalogue entry: ``name`` (``area.what``), ``entity_type`` (what ``entity_id`` names), ``meaning``."""

    name: str
    entity_type: str
    meaning: str


_EMITTED = (
    EventType("task.created", "task", "a task was submitted (waiting for its dependencies)"),
    EventType("task.ready", "task", "every dependency completed: the task can be claimed"),
    EventType("task.claimed", "task", "an agent claimed the task (attempt number in the payload)"),
    EventType("task.started", "task", "the agent started the handler"),
    EventType("task.completed", "task", "the handler returned; the result is stored"),
    EventType("task.failed", "task", "the task failed for good (error in the payload)"),
    EventType("task.retry_scheduled", "task", "an attempt failed; the task waits for its backoff"),
    EventType(
        "task.timed_out", "task",
        "an attempt ran past the task's timeout (then `task.retry_scheduled`, or the task ends `timed_out`)",
    ),
    EventType("task.cancelled", "task", "the task was cancelled"),
    EventType("task.requeued", "task", "an attempt was lost with its agent; the task is ready again"),
    EventType(
        "task.held", "task",
        "its ticket holds it back (blocked, or moved back before its phase): pending, not claimable",
    ),
    EventType("task.upstream_failed", "task", "a dependency failed for good; the reason names it"),
    EventType("agent.registered", "agent", "an agent (or a new incarnation of it) joined"),
    EventType(
        "agent.capabilities.changed", "agent",
        "an agent's capabilities, tags, capacity, type or phase really changed (sets compared)",
    ),
    EventType("agent.health.changed", "agent", "an agent's health changed (payload: from, to, reason)"),
    EventType("agent.lost", "agent", "an agent died or its lease lapsed; its attempts are requeued"),
    EventType("agent.stopped", "agent", "an agent left on purpose"),
    EventType("agent.handoff.requested", "task", "an agent offered its task to others (offer id, targets, deadline)"),
    EventType(
        "agent.handoff.accepted", "task",
        "an offer was accepted: the task moved to the acceptor as a new attempt (not charged)",
    ),
    EventType("agent.handoff.declined", "task", "a target declined an offer (closed: every target declined)"),
    EventType("agent.handoff.expired", "task", "an offer's deadline passed with no acceptance; nothing moved"),
    EventType(
        "agent.handoff.withdrawn", "task",
        "an open offer closed because the offering attempt ended first (completed, failed, lost, cancelled)",
    ),
    EventType("agent.message.sent", "thread", "an agent posted a message in a thread"),
    EventType("agent.collab.started", "thread", "agents opened a collaboration thread"),
    EventType("agent.collab.ended", "thread", "a collaboration thread was closed"),
    EventType("ticket.created", "ticket", "a ticket was created in its first phase (title, phase)"),
    EventType(
        "ticket.phase.changed", "ticket",
        "a ticket moved phase (from, to, reason, by, and the gate result when the move went through one)",
    ),
    EventType("ticket.gate.evaluated", "ticket", "a phase's gate was judged (phase, passed, every blocking reason)"),
    EventType("ticket.cancelled", "ticket", "a ticket was cancelled; its unfinished tasks were cancelled with it"),
    EventType(
        "ticket.change.refused", "ticket",
        "a change of the ticket could not be stored and was dropped (phase, reason); the ticket is as stored",
    ),
    EventType("lock.granted", "lock", "a lease was granted (mode, holder, fencing token)"),
    EventType("lock.released", "lock", "a lease was released by its holder or in bulk"),
    EventType("lock.expired", "lock", "a lease ran out without renewal and was freed"),
    EventType("lock.waiting", "lock_request", "a request is queued behind a conflicting holder"),
    EventType("lock.wait_ended", "lock_request", "a queued request gave up (timeout, cancel, dropped)"),
    EventType("lock.deadlock", "lock_request", "a request would close a wait-for cycle and was refused"),
    EventType("coordination.sync.created", "coordination", "a sync point was submitted (members, k, timeout)"),
    EventType(
        "coordination.sync.ready", "coordination",
        "k of the sync's n members completed (once); the sync completes with their results",
    ),
    EventType(
        "coordination.sync.failed", "coordination",
        "a sync can no longer reach k (the reason names the failed members), its timeout passed, "
        "or its combined result is over OMOI_RESULT_MAX_BYTES plus 1 KiB and the key per member",
    ),
    EventType(
        "coordination.split.created", "coordination",
        "a task was split into children (a static split, a handler's split, a loop's next round)",
    ),
    EventType(
        "coordination.join.created", "coordination",
        "a task with a merge strategy was submitted (entity: the join task; strategy, sources)",
    ),
    EventType(
        "coordination.merge.completed", "coordination",
        "a join's handler merged its sources with `ctx.merged()` (strategy, sources, result keys, attempt)",
    ),
)

#: types named for features not built yet (none at present)
_DECLARED: tuple[EventType, ...] = ()

EMITTED: dict[str, EventType] = {t.name: t for t in _EMITTED}
DECLARED: dict[str, EventType] = {t.name: t for t in _DECLARED}
CATALOGUE: dict[str, EventType] = {**EMITTED, **DECLARED}


def matches(event_type: str, patterns: tuple[str, ...] | list[str] | None) -> bool:
    """True when ``patterns`` is empty/None or any pattern matches (``*`` wildcards)."""
    if not patterns:
        return True
    return any(fnmatchcase(event_type, p) for p in patterns)
