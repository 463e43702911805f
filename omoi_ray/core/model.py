"""Plain data the core works on: priorities, retry policy, tasks, attempts, agents, events.

Rules:
- Times are floats, seconds since the epoch, taken from the caller's clock (the core never
  reads a clock).
- These are dataclasses with slots: the scheduler keeps every live task in memory, so a task's
  footprint matters (see ``benchmarks/scale.py``).
- ``AgentStatus`` lives in ``core.health`` (derived from ``AgentHealth``) and is re-exported here.
- Validation of user input happens before these are built (``omoi_ray.specs.tasks``); the core trusts
  field types and checks only graph-level rules.
"""

from __future__ import annotations

import itertools
import random
import secrets
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

from omoi_ray.core.health import STATUS_OF, AgentHealth, AgentStatus
from omoi_ray.core.ready import handles_type
from omoi_ray.core.tasks import TaskStatus


class Priority(IntEnum):
    """Higher runs first; within one priority, earlier submissions run first."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: Any) -> Priority:
        """A priority by name (exactly, ignoring ASCII case only: ``"hıgh"`` with a dotless i is
        not ``HIGH``) or by its int value; ``ValueError`` otherwise."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str) and value.isascii() and value.upper() in cls.__members__:
            return cls[value.upper()]
        if isinstance(value, int) and not isinstance(value, bool) and value in cls._value2member_map_:
            return cls(value)
        names = ", ".join(cls.__members__)
        raise ValueError(f"priority must be one of {names}, not {value!r}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how late a failed attempt is retried.

    Retry ``n`` (0 for the first retry) waits ``base * 2**n * U(1 - jitter, 1 + jitter)``
    seconds, capped at ``cap``. ``max_retries`` bounds charged attempts: a task makes at most
    ``max_retries + 1`` of them, whether they end in an error, a timeout or a lost agent. Only an
    attempt interrupted by the replacement of its agent's process is not charged.
    """

    max_retries: int = 3
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    jitter: float = 0.25

    def delay(self, retry_number: int, rng: random.Random) -> float:
        """Seconds to wait before retry ``retry_number``.

        Args:
            retry_number: 0 for the first retry, 1 for the second, ... (the exponent is capped
                at 60, so any count is safe).
            rng: the jitter's source (the caller's, so tests can seed it).

        Returns:
            ``backoff_base * 2**retry_number`` times a uniform factor in ``[1 - jitter,
            1 + jitter]``, at most ``backoff_cap`` (seconds).
        """
        raw = self.backoff_base * (2.0 ** min(retry_number, 60))
        factor = rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return min(raw * factor, self.backoff_cap)


DEFAULT_RETRY = RetryPolicy()

#: the ``kind`` of a task an agent runs; every other kind is a handler-less node
#: (``core.coordination.NODE_KINDS``)
TASK_KIND = "task"


@dataclass(slots=True)
class NewTask:
    """A validated task definition, as submitted."""

    id: str
    type: str
    payload: Any = None
    requires: frozenset[str] = frozenset()
    priority: Priority = Priority.MEDIUM
    depends_on: tuple[str, ...] = ()
    retry: RetryPolicy = DEFAULT_RETRY
    timeout: float | None = None
    ticket_id: str | None = None
    phase: str | None = None
    idempotency_key: str | None = None
    fingerprint: str = ""  # hash of the definition; equal fingerprints mean "same task"
    locks: tuple[tuple[str, str, str], ...] = ()  # (resource type, resource id, mode) to hold while running
    #: ``"task"`` (run by an agent) or a handler-less node the core settles (``core.coordination``)
    kind: str = TASK_KIND
    quorum: int | None = None  # a sync's k: members that must complete
    #: a node's state as JSON (``core.coordination``): a sync's members' results, a loop's rounds
    coordination: Any = None
    merge: dict[str, Any] | None = None  # a join's merge strategy (``core.merge``), normalised


@dataclass(slots=True)
class Task:
    """A task the scheduler holds in memory (every task not yet in a terminal status)."""

    id: str
    seq: int
    type: str
    payload: Any
    requires: frozenset[str]
    priority: Priority
    depends_on: tuple[str, ...]
    retry: RetryPolicy
    timeout: float | None
    ticket_id: str | None
    phase: str | None
    idempotency_key: str | None
    fingerprint: str
    created_at: float
    locks: tuple[tuple[str, str, str], ...] = ()
    kind: str = TASK_KIND
    quorum: int | None = None
    coordination: Any = None
    merge: dict[str, Any] | None = None  # a join's merge strategy (``core.merge``), normalised
    status: TaskStatus = TaskStatus.PENDING
    attempt: int = 0
    waiting_on: int = 0
    not_before: float | None = None
    agent_id: str | None = None
    agent_incarnation: str | None = None
    claim_request_id: str | None = None
    deadline: float | None = None
    result: Any = None
    error: str | None = None
    reason: str | None = None
    upstream: str | None = None  # for upstream_failed: the task whose failure doomed this one
    #: for upstream_failed: that task (the root) was cancelled, not failed (its ticket treats the
    #: end as a cancel, ``core.tickets``); stored, so a dependent submitted later inherits it
    upstream_cancelled: bool = False
    #: attempts that ended through no fault of the task (``OUTCOME_RULES``: not charged)
    uncharged: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0


class AttemptOutcome(str, Enum):
    """How an attempt ended (its stored value); what each means for its task is data,
    ``core.claims.OUTCOME_RULES`` (retry or not, charged or not)."""

    COMPLETED = "completed"
    FAILED = "failed"  # the handler raised a retryable error
    PERMANENT_FAILURE = "permanent_failure"  # the handler raised PermanentError (or similar)
    TIMED_OUT = "timed_out"
    LOST = "lost"  # the agent died or its lease ran out
    CANCELLED = "cancelled"
    #: the agent's process was replaced to free a slot a zombie handler held (not charged)
    INTERRUPTED = "interrupted"
    #: another agent accepted a hand-off of the task (``core.handoff``): not charged
    HANDED_OFF = "handed_off"


@dataclass(slots=True)
class Attempt:
    """One try at running a task on one agent."""

    task_id: str
    attempt: int
    agent_id: str
    agent_incarnation: str
    claimed_at: float
    started_at: float | None = None
    finished_at: float | None = None
    outcome: AttemptOutcome | None = None
    error: str | None = None
    released_at: float | None = None  # when the agent reported the handler ended (slot freed)
    locks: tuple[tuple[str, str, str], ...] = ()  # the task's declared locks (loaded from the task row)


@dataclass(slots=True)
class Agent:
    """An agent as the scheduler sees it: what it is and can do, its health, and which attempts
    occupy its slots.

    ``health`` is the one source of truth about where it stands (``core.health``); ``status``
    (alive, lost, stopped) is derived from it.
    """

    id: str
    incarnation: str
    capabilities: frozenset[str]
    capacity: int
    registered_at: float
    lease_expires_at: float
    health: AgentHealth = AgentHealth.HEALTHY
    type: str = "agent"  # what kind of agent it is (a name; "agent" unless given)
    phase: str | None = None  # the phase of work it serves, if any
    tags: frozenset[str] = frozenset()
    #: the task types it has handlers for, or None when it has a default handler (every type);
    #: fixed per incarnation. Stored agents written before routing by type have None.
    handles: frozenset[str] | None = None
    #: when it last called the scheduler (seconds); 0.0 until it does
    last_heartbeat_at: float = 0.0
    tasks_done: int = 0  # attempts it completed (successful results accepted)
    #: since when it has had a free slot (seconds), None while every slot is busy: "longest
    #: waiting" in ranking ties
    idle_since: float | None = None
    #: (task id, attempt) -> claimed_at, for every attempt whose handler has not yet ended
    busy: dict[tuple[str, int], float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # node, pid: shown, never interpreted
    #: busy attempts whose handler ignored its stop past the grace period: the agent is draining
    #: to have its process replaced, so it gets no more work
    zombies: set[tuple[str, int]] = field(default_factory=set)

    @property
    def status(self) -> AgentStatus:
        """Its lifecycle status, derived from ``health`` (``core.health.STATUS_OF``)."""
        return STATUS_OF[self.health]

    @property
    def free_slots(self) -> int:
        """How many more attempts it may be handed: ``capacity`` minus busy slots, never below
        0, and 0 while a zombie handler holds a slot (the agent is draining)."""
        if self.zombies:
            return 0
        return max(0, self.capacity - len(self.busy))

    def can_run(self, requires: frozenset[str], task_type: str) -> bool:
        """Whether it is able to run a task requiring ``requires`` of type ``task_type``: it has
        every required capability and handles the type (the claiming rule, ``core.ready``)."""
        return requires <= self.capabilities and handles_type(self.handles, task_type)


_EVENT_PREFIX = secrets.token_hex(8)  # differs per process, so ids never repeat across restarts
_EVENT_COUNTER = itertools.count(1)


def new_event_id() -> str:
    """A unique event id: 16 random hex digits of this process, then a counter (32 chars at most)."""
    return f"{_EVENT_PREFIX}{next(_EVENT_COUNTER):016x}"


@dataclass(slots=True)
class Event:
    """A fact worth telling the world, written in the same transaction as the change it describes."""

    type: str
    entity_type: str
    entity_id: str
    at: float
    payload: dict[str, Any] = field(default_factory=dict)
    task_id: str | None = None
    agent_id: str | None = None
    ticket_id: str | None = None
    request_id: str | None = None
    id: str = field(default_factory=new_event_id)


@dataclass(slots=True)
class EventBatch:
    """Events with no other change: the change set of a writer that only reports facts.

    Written by the same ``BatchWriter`` path as task and lock changes (one transaction, same
    ``events`` rows), so there is one way an event reaches the database.
    """

    events: list[Event] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events)

    def worth_flushing(self) -> bool:
        """True when there are events to write (as ``ChangeSet.worth_flushing``; nobody to tell)."""
        return bool(self.events)

    @staticmethod
    def merge(batches: list[EventBatch]) -> EventBatch:
        """One batch holding the events of ``batches``, in order (as ``ChangeSet.merge``).

        Args:
            batches: event batches in commit order.

        Returns:
            A new ``EventBatch`` (empty for no batches).
        """
        return EventBatch([e for b in batches for e in b.events])


@dataclass(slots=True)
class CancelSignal:
    """Tell an agent to stop an attempt (its result will be discarded anyway)."""

    agent_id: str
    agent_incarnation: str
    task_id: str
    attempt: int
    reason: str


class ThreadStatus(str, Enum):
    """Where a collaboration thread stands (its stored value): only ``active`` threads take posts."""

    ACTIVE = "active"
    RESOLVED = "resolved"
    ABANDONED = "abandoned"


@dataclass(slots=True)
class Thread:
    """A conversation between agents (``core.threads``): who takes part, about what, and how it ended.

    ``type`` is ``handoff``, ``review``, ``consultation`` or any other name; ``ticket_id`` and
    ``task_id`` say what it is about (shown, not enforced); ``outcome`` is what its closer
    recorded (a handoff's winner, say). Times are seconds since the epoch.
    """

    id: str
    type: str
    participants: tuple[str, ...]
    created_at: float
    updated_at: float
    status: ThreadStatus = ThreadStatus.ACTIVE
    ticket_id: str | None = None
    task_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, Any] | None = None
    created_by: str | None = None
    closed_at: float | None = None


def new_message_id() -> str:
    """A fresh message id, 32 random lowercase hex digits: the one scheme for the id a client
    picks for its post before the first try (``specs.messages.with_ids``) and the one the
    scheduler gives a post sent without one. Random, not a per-process counter, so processes
    forked after import never pick the same id (a repeat would be taken for the same post)."""
    return secrets.token_hex(16)


@dataclass(slots=True)
class Message:
    """One message in a thread.

    ``seq`` is assigned by the scheduler in posting order (restored as the stored maximum + 1
    on start): it is the order of messages and of cursors. ``to`` is one participant, or None
    for a broadcast to every other participant. ``kind`` is ``"message"`` unless a protocol
    (``"handoff.offer"``...) says otherwise; ``body`` is any storable JSON value.
    """

    id: str
    seq: int
    thread_id: str
    sender: str
    to: str | None
    body: Any
    created_at: float
    kind: str = "message"


@dataclass(slots=True)
class Receipt:
    """One recipient's copy of a message: unread until ``read_at`` (the first read) is set."""

    message_id: str
    thread_id: str
    recipient: str
    seq: int
    read_at: float | None = None
