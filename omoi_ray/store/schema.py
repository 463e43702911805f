"""The database schema as SQLAlchemy 2.0 models (the Alembic migrations create exactly this).

Rules:
- Times are stored as ``UTCDateTime``: timezone-aware UTC in PostgreSQL (``timestamptz``), naive
  UTC text in SQLite; both read back as aware UTC datetimes.
- JSON columns use JSONB on PostgreSQL and JSON text on SQLite.
- Single writer per table: tasks, task_dependencies, task_attempts, agents, tickets, threads,
  thread_participants, messages and message_receipts are written by the scheduler alone; every writer appends to ``events`` in the same transaction as
  the change an event describes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every dialect."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        """Convert a datetime (naive taken as UTC) or epoch seconds to UTC: naive for SQLite, aware otherwise."""
        if value is None:
            return None
        if isinstance(value, (int, float)):
            value = datetime.fromtimestamp(value, tz=timezone.utc)
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        """Return the stored value as an aware UTC datetime (None stays None)."""
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """The declarative base of every table; its metadata names constraints with ``NAMING``."""

    metadata = sa.MetaData(naming_convention=NAMING)


class TicketRow(Base):
    """A ticket grouping tasks (``tasks.ticket_id``): title, phase, status, free-form ``meta`` JSON.

    A ticket made by ``rt.tickets.create`` (``omoi_ray.core.tickets``) has ``phase_set`` (its
    ``PhaseSet`` as data), ``gates``, ``auto_advance``, ``priority``, ``description``, the
    aggregated ``context`` of its phases and its ``previous_phase``; a row made because a task
    named the ticket as a label has them NULL (``status`` "open").
    """

    __tablename__ = "tickets"

    id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    title: Mapped[str | None] = mapped_column(sa.String(500))
    phase: Mapped[str | None] = mapped_column(sa.String(128))
    status: Mapped[str] = mapped_column(sa.String(32), default="open")
    meta: Mapped[Any] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    description: Mapped[str | None] = mapped_column(sa.Text)
    priority: Mapped[int | None] = mapped_column(sa.Integer)
    phase_set: Mapped[Any] = mapped_column(JSONType, nullable=True)
    gates: Mapped[Any] = mapped_column(JSONType, nullable=True)
    auto_advance: Mapped[bool | None] = mapped_column(sa.Boolean)
    context: Mapped[Any] = mapped_column(JSONType, nullable=True)
    previous_phase: Mapped[str | None] = mapped_column(sa.String(64))


class TicketPhaseChangeRow(Base):
    """One phase move of a ticket: ``seq`` (1 = created), from, to, why, by whom (``moved_by``:
    no column is named ``by``, a reserved word in a ``COPY`` column list), and the gate result
    ``{"passed", "reasons"}`` when the move went through a gate."""

    __tablename__ = "ticket_phase_history"

    ticket_id: Mapped[str] = mapped_column(sa.ForeignKey("tickets.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    from_phase: Mapped[str | None] = mapped_column(sa.String(64))
    to_phase: Mapped[str] = mapped_column(sa.String(64))
    reason: Mapped[str] = mapped_column(sa.Text)
    moved_by: Mapped[str] = mapped_column(sa.String(128))
    gate: Mapped[Any] = mapped_column(JSONType, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class TicketArtifactRow(Base):
    """An artifact of a ticket's phase (``omoi_ray.core.gates.ARTIFACT_TYPES``): its type,
    ``content`` JSON, optional ``path``, and who added it (a task's agent, a driver, an approver)."""

    __tablename__ = "ticket_artifacts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(sa.ForeignKey("tickets.id"), index=True)
    phase: Mapped[str] = mapped_column(sa.String(64))
    type: Mapped[str] = mapped_column(sa.String(64))
    path: Mapped[str | None] = mapped_column(sa.Text)
    content: Mapped[Any] = mapped_column(JSONType)
    task_id: Mapped[str | None] = mapped_column(sa.String(128))
    added_by: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TicketGateResultRow(Base):
    """One evaluation of a phase's gate: passed, and every blocking reason (JSON list)."""

    __tablename__ = "ticket_gate_results"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(sa.ForeignKey("tickets.id"), index=True)
    phase: Mapped[str] = mapped_column(sa.String(64))
    passed: Mapped[bool] = mapped_column(sa.Boolean)
    reasons: Mapped[Any] = mapped_column(JSONType)
    judged_by: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TaskRow(Base):
    """A task: its submission (type, payload, requires, priority, retry policy in seconds, timeout_s),
    its status and current ``attempt``, the agent incarnation holding it, and its outcome.

    ``requires`` is a JSON list of capability names; ``locks`` a JSON list ``[[type, id, mode], ...]``;
    ``not_before`` is when a retry may start, ``deadline`` when the current attempt times out.
    """

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    seq: Mapped[int] = mapped_column(sa.BigInteger, unique=True)
    ticket_id: Mapped[str | None] = mapped_column(sa.ForeignKey("tickets.id"), index=True)
    phase: Mapped[str | None] = mapped_column(sa.String(128))
    type: Mapped[str] = mapped_column(sa.String(128))
    payload: Mapped[Any] = mapped_column(JSONType, nullable=True)
    requires: Mapped[Any] = mapped_column(JSONType)
    priority: Mapped[int] = mapped_column(sa.SmallInteger)
    status: Mapped[str] = mapped_column(sa.String(20), index=True)
    attempt: Mapped[int] = mapped_column(sa.Integer)
    max_retries: Mapped[int] = mapped_column(sa.Integer)
    backoff_base: Mapped[float] = mapped_column(sa.Float)
    backoff_cap: Mapped[float] = mapped_column(sa.Float)
    backoff_jitter: Mapped[float] = mapped_column(sa.Float)
    timeout_s: Mapped[float | None] = mapped_column(sa.Float)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(256), unique=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    agent_id: Mapped[str | None] = mapped_column(sa.String(128))
    agent_incarnation: Mapped[str | None] = mapped_column(sa.String(64))
    claim_request_id: Mapped[str | None] = mapped_column(sa.String(64))
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[Any] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text)
    reason: Mapped[str | None] = mapped_column(sa.Text)
    upstream: Mapped[str | None] = mapped_column(sa.String(128))
    #: for upstream_failed: its root was cancelled, not failed (``Task.upstream_cancelled``)
    upstream_cancelled: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locks: Mapped[Any] = mapped_column(JSONType, nullable=True)  # [[type, id, mode], ...]
    #: "task", or a handler-less coordination node ("sync", "loop": ``omoi_ray.core.coordination``)
    kind: Mapped[str] = mapped_column(sa.String(16), server_default="task")
    quorum: Mapped[int | None] = mapped_column(sa.Integer)  # a sync's k
    coordination: Mapped[Any] = mapped_column(JSONType, nullable=True)  # a node's state
    merge: Mapped[Any] = mapped_column(JSONType, nullable=True)  # a join's merge strategy (core.merge)


class TaskDependencyRow(Base):
    """An edge of the task graph: ``task_id`` depends on ``depends_on_id``."""

    __tablename__ = "task_dependencies"

    task_id: Mapped[str] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    depends_on_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class TaskAttemptRow(Base):
    """One attempt of a task by one agent incarnation: claim, start, finish and slot release times,
    ``outcome`` and ``error``; ``released_at IS NULL`` marks an attempt still occupying a slot."""

    __tablename__ = "task_attempts"
    __table_args__ = (
        sa.Index(
            "ix_task_attempts_open",
            "agent_id",
            postgresql_where=sa.text("released_at IS NULL"),
            sqlite_where=sa.text("released_at IS NULL"),
        ),
    )

    task_id: Mapped[str] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    agent_id: Mapped[str] = mapped_column(sa.String(128))
    agent_incarnation: Mapped[str] = mapped_column(sa.String(64))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(sa.String(32))
    error: Mapped[str | None] = mapped_column(sa.Text)


class AgentRow(Base):
    """A registered agent: current incarnation, capabilities (JSON list of names), capacity (slots),
    status (lifecycle, derived from ``health``), and the registry's fields (migration 0006): type,
    phase, tags (JSON list), health, last heartbeat and tasks done (as of the row's last write), and
    the task types it handles (migration 0012)."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    incarnation: Mapped[str] = mapped_column(sa.String(64))
    capabilities: Mapped[Any] = mapped_column(JSONType)
    capacity: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    info: Mapped[Any] = mapped_column(JSONType, nullable=True)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    type: Mapped[str] = mapped_column(sa.String(128), server_default="agent")
    phase: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    tags: Mapped[Any] = mapped_column(JSONType, nullable=True)
    health: Mapped[str] = mapped_column(sa.String(16), server_default="healthy")
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    tasks_done: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    #: the task types it has handlers for (JSON list), NULL when it handles every type (a
    #: default handler, or a row written before migration 0012)
    handles: Mapped[Any] = mapped_column(JSONType, nullable=True)


class EventRow(Base):
    """An event, appended by its writer in the same transaction as the change it describes.

    ``event_id`` is a unique text id; ``type`` a catalogue name (``omoi_ray.core.events``);
    ``entity_type``/``entity_id`` what it is about; ``payload`` JSON; ``(txid, id)`` its position.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    type: Mapped[str] = mapped_column(sa.String(64))
    entity_type: Mapped[str] = mapped_column(sa.String(32))
    #: a task id, agent name, lock request id, or a lock resource "type:id" (up to 577 characters)
    entity_id: Mapped[str] = mapped_column(sa.String(1024))
    payload: Mapped[Any] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    task_id: Mapped[str | None] = mapped_column(sa.String(128))
    agent_id: Mapped[str | None] = mapped_column(sa.String(128))
    ticket_id: Mapped[str | None] = mapped_column(sa.String(128))
    request_id: Mapped[str | None] = mapped_column(sa.String(128))
    #: PostgreSQL: the id of the transaction that wrote the row (``pg_current_xact_id()``, a
    #: server default). ``(txid, id)`` is the event's *position*: a reader that only takes rows
    #: with ``txid`` below the oldest running transaction never skips a row that commits late.
    #: SQLite commits one writer at a time, so ``id`` alone orders it and ``txid`` stays 0.
    txid: Mapped[int] = mapped_column(sa.BigInteger, server_default="0")

    __table_args__ = (
        sa.Index("ix_events_entity", "entity_type", "entity_id"),
        sa.Index("ix_events_position", "txid", "id"),
        sa.Index("ix_events_created_at", "created_at"),
    )


class RelayCursorRow(Base):
    """How far the event relay has mirrored (saved every second or so: a restart that lost Redis
    replays from a little before it)."""

    __tablename__ = "relay_cursors"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    txid: Mapped[int] = mapped_column(sa.BigInteger)
    event_pk: Mapped[int] = mapped_column(sa.BigInteger)
    #: identity of this database, also written next to the stream it owns
    token: Mapped[str | None] = mapped_column(sa.String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WriterCommitRow(Base):
    """The last batch each writer process committed: lets a retry tell whether a commit whose
    outcome was unknown went through."""

    __tablename__ = "writer_commits"

    writer: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    epoch: Mapped[str] = mapped_column(sa.String(32))
    batch: Mapped[int] = mapped_column(sa.BigInteger)
    committed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DbOwnerRow(Base):
    """The runtime that owns this database (one row, ``id`` 1; see ``omoi_ray.core.ownership``)."""

    __tablename__ = "db_owner"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(sa.String(64))
    cluster_id: Mapped[str] = mapped_column(sa.String(64))
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    #: renewed by the owner's scheduler; another runtime may take over once it has passed
    lease_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DbOwnerEpochRow(Base):
    """Each writer's owner epoch: checked in every commit of that writer, bumped when a new
    process of it (or a new owner) takes over. Distinct from ``writer_commits.epoch``."""

    __tablename__ = "db_owner_epochs"

    writer: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    owner_epoch: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LockResourceRow(Base):
    """A lockable resource and its fencing-token counter (never goes backwards)."""

    __tablename__ = "lock_resources"

    resource_type: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    token: Mapped[int] = mapped_column(sa.BigInteger)


class LockGrantRow(Base):
    """Every grant ever made (active while ``ended_at`` is null): the audit trail of who held what."""

    __tablename__ = "lock_grants"
    __table_args__ = (
        # A second active exclusive grant on one resource is impossible at the database level.
        sa.Index(
            "uq_lock_grants_one_active_exclusive",
            "resource_type",
            "resource_id",
            unique=True,
            postgresql_where=sa.text("ended_at IS NULL AND mode = 'exclusive'"),
            sqlite_where=sa.text("ended_at IS NULL AND mode = 'exclusive'"),
        ),
        sa.Index(
            "ix_lock_grants_active",
            "resource_type",
            "resource_id",
            postgresql_where=sa.text("ended_at IS NULL"),
            sqlite_where=sa.text("ended_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    resource_type: Mapped[str] = mapped_column(sa.String(64))
    resource_id: Mapped[str] = mapped_column(sa.String(512))
    mode: Mapped[str] = mapped_column(sa.String(16))
    holder: Mapped[str] = mapped_column(sa.String(256))
    token: Mapped[int] = mapped_column(sa.BigInteger)
    request_id: Mapped[str] = mapped_column(sa.String(128))
    ttl: Mapped[float] = mapped_column(sa.Float)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(sa.String(32))
    task_id: Mapped[str | None] = mapped_column(sa.String(128))
    agent_id: Mapped[str | None] = mapped_column(sa.String(128))


class LockRequestRow(Base):
    """A request waiting for its locks (deleted once granted or given up), in arrival order."""

    __tablename__ = "lock_requests"

    id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(256))
    items: Mapped[Any] = mapped_column(JSONType)  # [[type, id, mode], ...]
    ttl: Mapped[float] = mapped_column(sa.Float)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    task_id: Mapped[str | None] = mapped_column(sa.String(128))
    agent_id: Mapped[str | None] = mapped_column(sa.String(128))


class ThreadRow(Base):
    """A collaboration thread (``omoi_ray.core.threads``): its type, status, what it is about,
    ``meta`` (its metadata JSON object) and ``outcome`` (JSON, set when closed).

    ``pos`` is the database's insertion order: the order (newest first) and cursor of thread
    lists. Closed threads are pruned, with their messages, after ``OMOI_THREAD_RETENTION``.
    """

    __tablename__ = "threads"

    pos: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(sa.String(128), unique=True)
    type: Mapped[str] = mapped_column(sa.String(128))
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    participants: Mapped[Any] = mapped_column(JSONType)  # [agent name, ...] in the order given
    ticket_id: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    task_id: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    meta: Mapped[Any] = mapped_column(JSONType, nullable=True)
    outcome: Mapped[Any] = mapped_column(JSONType, nullable=True)
    created_by: Mapped[str | None] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class ThreadParticipantRow(Base):
    """Who takes part in a thread (the index behind "threads of this agent")."""

    __tablename__ = "thread_participants"

    thread_id: Mapped[str] = mapped_column(sa.ForeignKey("threads.id", ondelete="CASCADE"), primary_key=True)
    agent: Mapped[str] = mapped_column(sa.String(128), primary_key=True, index=True)


class MessageRow(Base):
    """A message: ``seq`` is its scheduler-assigned order (the cursor), ``to_agent`` its one
    recipient (null: a broadcast to every participant but the sender), ``body`` any JSON."""

    __tablename__ = "messages"
    __table_args__ = (sa.Index("ix_messages_thread_seq", "thread_id", "seq"),)

    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    thread_id: Mapped[str] = mapped_column(sa.ForeignKey("threads.id", ondelete="CASCADE"))
    sender: Mapped[str] = mapped_column(sa.String(128))
    to_agent: Mapped[str | None] = mapped_column(sa.String(128))
    kind: Mapped[str] = mapped_column(sa.String(128))
    body: Mapped[Any] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MessageReceiptRow(Base):
    """One recipient's copy of a message; ``read_at`` is its first read (null: unread)."""

    __tablename__ = "message_receipts"
    __table_args__ = (
        sa.Index(
            "ix_message_receipts_unread",
            "recipient",
            "seq",
            postgresql_where=sa.text("read_at IS NULL"),
            sqlite_where=sa.text("read_at IS NULL"),
        ),
    )

    message_id: Mapped[str] = mapped_column(sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    recipient: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    thread_id: Mapped[str] = mapped_column(sa.ForeignKey("threads.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


tickets = TicketRow.__table__
ticket_phase_history = TicketPhaseChangeRow.__table__
ticket_artifacts = TicketArtifactRow.__table__
ticket_gate_results = TicketGateResultRow.__table__
tasks = TaskRow.__table__
task_dependencies = TaskDependencyRow.__table__
task_attempts = TaskAttemptRow.__table__
agents = AgentRow.__table__
events = EventRow.__table__
relay_cursors = RelayCursorRow.__table__
writer_commits = WriterCommitRow.__table__
db_owner = DbOwnerRow.__table__
db_owner_epochs = DbOwnerEpochRow.__table__
lock_resources = LockResourceRow.__table__
lock_grants = LockGrantRow.__table__
lock_requests = LockRequestRow.__table__
threads = ThreadRow.__table__
thread_participants = ThreadParticipantRow.__table__
messages = MessageRow.__table__
message_receipts = MessageReceiptRow.__table__


class HandoffRow(Base):
    """A hand-off offer (``omoi_ray.core.handoff``): which attempt of which task, from which agent
    to which targets (JSON list of names; ``capabilities`` the JSON list asked for, if the offer
    was by capabilities), why (``reason``, ``context`` JSON), until when (``deadline``), and how it
    stands: ``status`` (open, accepted, declined, expired, withdrawn), ``declines`` (JSON object
    agent -> reason), the winner ``accepted_by`` and the task's ``new_attempt``."""

    __tablename__ = "handoffs"

    id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    task_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    attempt: Mapped[int] = mapped_column(sa.Integer)
    from_agent: Mapped[str] = mapped_column(sa.String(128))
    from_incarnation: Mapped[str] = mapped_column(sa.String(64))
    targets: Mapped[Any] = mapped_column(JSONType)
    capabilities: Mapped[Any] = mapped_column(JSONType, nullable=True)
    reason: Mapped[str] = mapped_column(sa.Text)
    context: Mapped[Any] = mapped_column(JSONType, nullable=True)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    thread_id: Mapped[str | None] = mapped_column(sa.String(256))
    declines: Mapped[Any] = mapped_column(JSONType, nullable=True)
    accepted_by: Mapped[str | None] = mapped_column(sa.String(128))
    new_attempt: Mapped[int | None] = mapped_column(sa.Integer)
    closed_reason: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


handoffs = HandoffRow.__table__
