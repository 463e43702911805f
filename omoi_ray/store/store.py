"""The store: load the scheduler's state, write change sets, answer reads.

Together with ``writes`` (the write path) this package is the only place that speaks SQL.

Rules:
- ``apply`` writes one ``TaskChanges`` in one transaction, with a commit mark that tells a retry
  whether a commit of unknown outcome went through (``committed``).
- Bulk statements only: never a statement per row.
- The caller owns threading: a ``Store`` is used from one thread at a time.
- URLs are shown masked (``safe_url``); passwords never reach a log or a message.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from omoi_ray.core import task_fields
from omoi_ray.core.claims import OUTCOME_RULES
from omoi_ray.core.coordination import pending_loop_checks
from omoi_ray.core.handoff import REQUEST_PREFIX, Handoff, HandoffStatus
from omoi_ray.core.locks import Grant, LockChanges, LockMode, Request
from omoi_ray.core.model import (
    Agent,
    AgentHealth,
    AgentStatus,
    Attempt,
    AttemptOutcome,
    EventBatch,
    Priority,
    RetryPolicy,
    Task,
    Thread,
    ThreadStatus,
)
from omoi_ray.core.ownership import Claim, OwnerId
from omoi_ray.core.submission import StoredTask
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.core.tasks import TERMINAL, TaskStatus
from omoi_ray.settings import mask_url
from omoi_ray.specs.events import EventRecord
from omoi_ray.store import ownership
from omoi_ray.store import schema as t
from omoi_ray.store.events import event_record
from omoi_ray.store.ownership import Fence
from omoi_ray.store.tickets import TicketSnapshot, load_tickets
from omoi_ray.store.writes import BatchWriter, Mark, Rows

LIVE_STATUSES = [s.value for s in TaskStatus if s not in TERMINAL]
#: attempt outcomes not charged to their task's max_retries (``OUTCOME_RULES``), counted on restore
UNCHARGED_OUTCOMES = [o.value for o, rule in OUTCOME_RULES.items() if not rule.charged]
_CHUNK = 500  # ids per IN (...) lookup


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


@dataclass(slots=True)
class LockSnapshot:
    """Everything the lock manager needs to rebuild its memory."""

    tokens: list[tuple[tuple[str, str], int]]
    grants: list[Grant]
    requests: list[Request]


@dataclass(slots=True)
class Snapshot:
    """Everything the scheduler needs to rebuild its memory."""

    tasks: list[Task]
    dependencies: list[tuple[str, str, TaskStatus]]
    agents: list[Agent]
    open_attempts: list[Attempt]
    next_seq: int
    #: active threads, and the ``seq`` the next message gets
    threads: list[Thread] = dataclasses.field(default_factory=list)
    next_message_seq: int = 1
    #: open hand-off offers, and accepted ones whose new attempt is still claimed (to deliver)
    handoffs: list[Handoff] = field(default_factory=list)
    #: managed tickets, their open ones' artifacts, and each ticket's last history seq
    tickets: TicketSnapshot = field(default_factory=TicketSnapshot)
    #: results of the completed current checks of pending loops: a loop whose check already
    #: ended is judged on restore (``TaskGraph.restore``'s ``stored_results``)
    node_results: dict[str, Any] = field(default_factory=dict)


def make_engine(url: str) -> sa.Engine:
    """An engine with sensible settings for each dialect (SQLite: WAL, foreign keys, busy wait)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)


class Store:
    """One database as the durable writers and readers see it: state loading, change-set
    writes (through its ``BatchWriter``), ownership, and reads.

    Args:
        url: a SQLAlchemy URL (``sqlite:///path`` or ``postgresql://...``); a SQLite file's
            directory is created if missing. The schema must already be migrated
            (``omoi_ray.store.migrate``); nothing is checked or connected here.
    """

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            from pathlib import Path

            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.safe_url = mask_url(url)
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        self.writer = BatchWriter(self.engine)
        self.owner: OwnerId | None = None  # set by ``claim``
        self._read_dialect = sqlite.dialect(paramstyle="named") if self.dialect == "sqlite" else self.engine.dialect

    def dispose(self) -> None:
        """Close the engine's pooled connections (the store can still be used: it reconnects)."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({self.safe_url!r})"

    # ------------------------------------------------------------------ writes

    def apply(self, changes: TaskChanges | LockChanges | EventBatch, mark: Mark | None = None) -> None:
        """Write a change set in one transaction (see ``writes.BatchWriter.apply``)."""
        self.writer.apply(changes, mark)

    def prepare(self, changes: TaskChanges | LockChanges | EventBatch) -> Rows:
        """Every row of a change set as plain values, ``[(statement name, [row dict, ...]),
        ...]``: a snapshot, safe to hand to another thread (see ``BatchWriter.prepare``).

        Raises:
            TypeError: not a change-set type this store writes.
        """
        return self.writer.prepare(changes)

    def write(self, prepared: Rows, mark: Mark | None = None) -> None:
        """Write rows from ``prepare`` (and ``mark``) in one transaction.

        Raises:
            OwnershipLostError: this writer was replaced (the transaction rolls back).
            sqlalchemy.exc.SQLAlchemyError: what the database raises otherwise.
        """
        self.writer.write(prepared, mark)

    def committed(self, mark: Mark) -> bool:
        """Whether the batch ``mark`` names is in the database: the writer's last recorded mark
        has the same epoch and a batch number at least ``mark.batch``. Asked before applying a
        batch again whose commit outcome is unknown."""
        return self.writer.committed(mark)

    # ------------------------------------------------------------------ ownership

    def claim(self, writer: str, me: OwnerId, lease: float) -> Claim:
        """Claim the database for ``writer`` of runtime ``me`` (see ``ownership.claim``); from
        then on every transaction of ``apply``/``write`` checks this writer's owner epoch.
        Raises ``DatabaseOwnedError`` if another runtime owns it with a live lease."""
        fence, outcome = ownership.claim(self.engine, writer, me, lease, f"the database {self.safe_url}")
        self.owner, self.writer.fence = me, fence
        return outcome

    @property
    def fence(self) -> Fence | None:
        """This writer's claim (writer name, owner epoch) after ``claim``; None before."""
        return self.writer.fence

    def renew_lease(self, lease: float) -> float:
        """Extend the owner's lease (raises ``OwnershipLostError`` once replaced)."""
        assert self.owner is not None and self.writer.fence is not None, "claim() first"
        return ownership.renew(self.engine, self.owner, self.writer.fence, lease)

    def release(self) -> bool:
        """End the owner's lease now, if this writer still holds the database."""
        if self.owner is None or self.writer.fence is None:
            return False
        return ownership.release(self.engine, self.owner, self.writer.fence)

    # ------------------------------------------------------------------ loading

    def load(self) -> Snapshot:
        """Read every live task, its dependency edges, live agents and open attempts."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.tasks).where(t.tasks.c.status.in_(LIVE_STATUSES))).mappings()
            tasks = [self._task_from_row(r) for r in rows]
            # Attempts that were not charged to their task's max_retries (see OUTCOME_RULES).
            ta = t.task_attempts
            uncharged = dict(
                conn.execute(
                    sa.select(ta.c.task_id, sa.func.count())
                    .join(t.tasks, t.tasks.c.id == ta.c.task_id)
                    .where(t.tasks.c.status.in_(LIVE_STATUSES), ta.c.outcome.in_(UNCHARGED_OUTCOMES))
                    .group_by(ta.c.task_id)
                ).all()
            )
            for task in tasks:
                task.uncharged = uncharged.get(task.id, 0)
            dep = t.task_dependencies
            upstream = t.tasks.alias("upstream")
            edges = conn.execute(
                sa.select(dep.c.task_id, dep.c.depends_on_id, upstream.c.status)
                .join(t.tasks, t.tasks.c.id == dep.c.task_id)
                .join(upstream, upstream.c.id == dep.c.depends_on_id)
                .where(t.tasks.c.status.in_(LIVE_STATUSES))
            ).all()
            agents = [
                _agent_from_row(r)
                for r in conn.execute(sa.select(t.agents).where(t.agents.c.status == AgentStatus.ALIVE.value))
            ]
            attempts = [
                _ATTEMPT_FROM_ROW(r, locks=tuple(tuple(lock) for lock in r["locks"] or ()))
                for r in conn.execute(
                    sa.select(t.task_attempts, t.tasks.c.locks)
                    .join(t.tasks, t.tasks.c.id == t.task_attempts.c.task_id)
                    .where(t.task_attempts.c.released_at.is_(None))
                ).mappings()
            ]
            next_seq = (conn.execute(sa.select(sa.func.max(t.tasks.c.seq))).scalar() or 0) + 1
            threads = [
                thread_from_row(r)
                for r in conn.execute(
                    sa.select(t.threads).where(t.threads.c.status == ThreadStatus.ACTIVE.value).order_by(t.threads.c.pos)
                ).mappings()
            ]
            next_message_seq = (conn.execute(sa.select(sa.func.max(t.messages.c.seq))).scalar() or 0) + 1
            handed = [
                task.claim_request_id[len(REQUEST_PREFIX):] for task in tasks
                if task.status is TaskStatus.CLAIMED and (task.claim_request_id or "").startswith(REQUEST_PREFIX)
            ]
            handoffs = self.handoff_rows(conn, handed)
            tickets = load_tickets(conn)
            # only a pending loop's current check is judged on restore: not every completed
            # dependency of every live node (a sync's members, a loop's earlier checks)
            checks = sorted(pending_loop_checks(tasks))
            node_results = {
                tid: result
                for chunk in _chunks(checks)
                for tid, result in conn.execute(
                    sa.select(t.tasks.c.id, t.tasks.c.result)
                    .where(t.tasks.c.id.in_(chunk), t.tasks.c.status == TaskStatus.COMPLETED.value)
                ).all()
            }
        return Snapshot(
            tasks=tasks,
            dependencies=[(a, b, TaskStatus(s)) for a, b, s in edges],
            agents=agents,
            open_attempts=attempts,
            next_seq=next_seq,
            threads=threads,
            next_message_seq=next_message_seq,
            handoffs=handoffs,
            tickets=tickets,
            node_results=node_results,
        )

    @staticmethod
    def handoff_rows(conn: Any, ids: Sequence[str] = (), *, open_ones: bool = True) -> list[Handoff]:
        """Hand-off offers: the open ones (``open_ones``) and those named by ``ids``."""
        h = t.handoffs
        found: dict[str, Handoff] = {}
        queries = [sa.select(h).where(h.c.status == HandoffStatus.OPEN.value)] if open_ones else []
        queries += [sa.select(h).where(h.c.id.in_(chunk)) for chunk in _chunks(list(ids))]
        for query in queries:
            for r in conn.execute(query):
                found[r.id] = Handoff(
                    id=r.id, task_id=r.task_id, attempt=r.attempt, from_agent=r.from_agent,
                    from_incarnation=r.from_incarnation, targets=tuple(r.targets or ()), reason=r.reason,
                    context=r.context, deadline=_epoch(r.deadline) or 0.0, created_at=_epoch(r.created_at) or 0.0,
                    capabilities=tuple(r.capabilities) if r.capabilities is not None else None,
                    status=HandoffStatus(r.status), thread_id=r.thread_id, declines=dict(r.declines or {}),
                    accepted_by=r.accepted_by, new_attempt=r.new_attempt, closed_at=_epoch(r.closed_at),
                    closed_reason=r.closed_reason, updated_at=_epoch(r.updated_at) or 0.0,
                )
        return list(found.values())

    def handoff(self, offer_id: str) -> Handoff | None:
        """One stored offer by id, or None."""
        with self.engine.connect() as conn:
            found = self.handoff_rows(conn, [offer_id], open_ones=False)
        return found[0] if found else None

    @staticmethod
    def _task_from_row(r: Any) -> Task:
        return _TASK_FROM_ROW(r)

    def load_locks(self) -> LockSnapshot:
        """Resource counters, active grants and waiting requests (the lock manager's memory)."""
        with self.engine.connect() as conn:
            tokens = [((r.resource_type, r.resource_id), r.token) for r in conn.execute(sa.select(t.lock_resources))]
            grants = [
                Grant(
                    id=r.id,
                    resource=(r.resource_type, r.resource_id),
                    mode=LockMode(r.mode),
                    holder=r.holder,
                    token=r.token,
                    request_id=r.request_id,
                    ttl=r.ttl,
                    granted_at=_epoch(r.granted_at) or 0.0,
                    expires_at=_epoch(r.expires_at) or 0.0,
                    task_id=r.task_id,
                    agent_id=r.agent_id,
                )
                for r in conn.execute(sa.select(t.lock_grants).where(t.lock_grants.c.ended_at.is_(None)))
            ]
            requests = [
                Request(
                    id=r.id,
                    holder=r.holder,
                    items=tuple(((k[0], k[1]), LockMode(k[2])) for k in r.items),
                    ttl=r.ttl,
                    seq=r.seq,
                    enqueued_at=_epoch(r.enqueued_at) or 0.0,
                    deadline=_epoch(r.deadline),
                    task_id=r.task_id,
                    agent_id=r.agent_id,
                )
                for r in conn.execute(sa.select(t.lock_requests).order_by(t.lock_requests.c.seq))
            ]
        return LockSnapshot(tokens, grants, requests)

    def grant_history(self, resource: tuple[str, str]) -> list[dict[str, Any]]:
        """Every grant ever made on a resource, oldest first (the audit trail)."""
        with self.engine.connect() as conn:
            query = (
                sa.select(t.lock_grants)
                .where(t.lock_grants.c.resource_type == resource[0], t.lock_grants.c.resource_id == resource[1])
                .order_by(t.lock_grants.c.token)
            )
            return [dict(r) for r in conn.execute(query).mappings()]

    # ------------------------------------------------------------------ reads

    def lookup(
        self, ids: Iterable[str], keys: Iterable[str] = ()
    ) -> tuple[dict[str, StoredTask], dict[str, StoredTask]]:
        """Stored tasks by id and by idempotency key (for submissions naming tasks not in memory).

        On the submission path, so it skips SQLAlchemy's per-execution work like ``write``.
        """
        by_id: dict[str, StoredTask] = {}
        by_key: dict[str, StoredTask] = {}
        with self.engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                for column, values, out in (("id", ids, by_id), ("idempotency_key", keys, by_key)):
                    for chunk in _chunks(sorted(set(values))):
                        cursor.execute(self._lookup_sql(column, len(chunk)), {f"p{i}": v for i, v in enumerate(chunk)})
                        for tid, status, fingerprint, key, cancelled in cursor.fetchall():
                            ref = StoredTask(tid, TaskStatus(status), fingerprint, key, upstream_cancelled=bool(cancelled))
                            out[tid if column == "id" else key] = ref
            finally:
                cursor.close()
        return by_id, by_key

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one Store per process; sizes are bounded
    def _lookup_sql(self, column: str, count: int) -> str:
        cols = (t.tasks.c.id, t.tasks.c.status, t.tasks.c.fingerprint, t.tasks.c.idempotency_key,
                t.tasks.c.upstream_cancelled)
        stmt = sa.select(*cols).where(t.tasks.c[column].in_([sa.bindparam(f"p{i}") for i in range(count)]))
        return str(stmt.compile(dialect=self._read_dialect))

    def task_rows(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Full rows (plus ``depends_on``) of the given task ids that exist."""
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                for r in conn.execute(sa.select(t.tasks).where(t.tasks.c.id.in_(chunk))).mappings():
                    out[r["id"]] = dict(r, depends_on=[])
                dep = t.task_dependencies
                for a, b in conn.execute(
                    sa.select(dep.c.task_id, dep.c.depends_on_id).where(dep.c.task_id.in_(chunk))
                ):
                    if a in out:
                        out[a]["depends_on"].append(b)
        return out

    def stored_agents(self, ids: Sequence[str] | None = None) -> list[Agent]:
        """Agents as their rows last recorded them (any status), by id: the named ones that
        exist, or all when ``ids`` is None. Slots are empty: only the scheduler's memory knows
        which attempts occupy a live agent."""
        with self.engine.connect() as conn:
            query = sa.select(t.agents).order_by(t.agents.c.id)
            if ids is None:
                return [_agent_from_row(r) for r in conn.execute(query)]
            out: list[Agent] = []
            for chunk in _chunks(list(dict.fromkeys(ids))):
                out += [_agent_from_row(r) for r in conn.execute(query.where(t.agents.c.id.in_(chunk)))]
            return out

    def attempt_rows(self, task_id: str) -> list[dict[str, Any]]:
        """The ``task_attempts`` rows of one task, as dicts by column, first attempt to last
        (empty for an unknown task or one never claimed)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.task_attempts)
                .where(t.task_attempts.c.task_id == task_id)
                .order_by(t.task_attempts.c.attempt)
            ).mappings()
            return [dict(r) for r in rows]

    def group_status(self, prefix: str) -> dict[str, str]:
        """The stored tasks of a group: an applied pattern's items and the rounds its loops
        created (``SchedulerActor.group_status`` adds the live ones' fresher statuses).

        Args:
            prefix: the group's prefix, checked by the caller (``check_prefix``); ``%`` and
                ``_`` in it are matched literally.

        Returns:
            ``{task id: status value}`` of every stored task whose id starts with
            ``prefix + "."``, in id order.
        """
        with self.engine.connect() as conn:
            query = (sa.select(t.tasks.c.id, t.tasks.c.status)
                     .where(t.tasks.c.id.startswith(prefix + ".", autoescape=True)).order_by(t.tasks.c.id))
            return {tid: status for tid, status in conn.execute(query)}

    def status_counts(self, ids: Sequence[str] | None = None) -> dict[str, int]:
        """Stored tasks counted by status, ``{status value: count}`` (statuses with none are
        left out).

        Args:
            ids: count only these task ids (unknown ones are ignored); None counts every task.
        """
        with self.engine.connect() as conn:
            query = sa.select(t.tasks.c.status, sa.func.count()).group_by(t.tasks.c.status)
            if ids is None:
                return {s: n for s, n in conn.execute(query)}
            out: dict[str, int] = {}
            for chunk in _chunks(list(ids)):
                for s, n in conn.execute(query.where(t.tasks.c.id.in_(chunk))):
                    out[s] = out.get(s, 0) + n
            return out

    def events_of(self, entity_id: str | None = None, limit: int = 1000) -> list[EventRecord]:
        """The oldest ``limit`` events (of one entity if ``entity_id`` is given), as the same
        ``EventRecord``s ``follow`` yields."""
        with self.engine.connect() as conn:
            query = sa.select(t.events).order_by(t.events.c.id).limit(limit)
            if entity_id is not None:
                query = query.where(t.events.c.entity_id == entity_id)
            return [event_record(r) for r in conn.execute(query)]

    # ------------------------------------------------------------------ threads and messages

    def thread_rows(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored rows of the given thread ids that exist, ``{id: row dict}``."""
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                for r in conn.execute(sa.select(t.threads).where(t.threads.c.id.in_(chunk))).mappings():
                    out[r["id"]] = dict(r)
        return out

    def list_threads(
        self,
        *,
        participant: str | None,
        ticket_id: str | None,
        task_id: str | None,
        status: str | None,
        limit: int,
        before: int | None,
    ) -> list[dict[str, Any]]:
        """Thread rows matching every given filter, newest first (by ``pos``), at most
        ``limit``, only those older than position ``before`` when it is given."""
        th = t.threads
        query = sa.select(th).order_by(th.c.pos.desc()).limit(limit)
        if participant is not None:
            tp = t.thread_participants
            query = query.where(th.c.id.in_(sa.select(tp.c.thread_id).where(tp.c.agent == participant)))
        for column, value in (("ticket_id", ticket_id), ("task_id", task_id), ("status", status)):
            if value is not None:
                query = query.where(th.c[column] == value)
        if before is not None:
            query = query.where(th.c.pos < before)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def message_rows(self, thread_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        """Messages of one thread with ``seq`` above ``after``, oldest first, at most ``limit``."""
        m = t.messages
        query = sa.select(m).where(m.c.thread_id == thread_id, m.c.seq > after).order_by(m.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def message_rows_by_id(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored messages by id (a post made again is answered with its stored message).

        Args:
            ids: message ids; repeats are looked up once, unknown ones left out.

        Returns:
            ``{message id: row dict}`` (the ``messages`` table's columns) of those stored.
        """
        m = t.messages
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                for r in conn.execute(sa.select(m).where(m.c.id.in_(chunk))).mappings():
                    out[r["id"]] = dict(r)
        return out

    def unread_rows(self, agent: str, after: int, limit: int, *, unread_only: bool = True) -> list[dict[str, Any]]:
        """Messages addressed to ``agent`` that it has not marked read (every one addressed to
        it unless ``unread_only``), across threads, with ``seq`` above ``after``, oldest first,
        at most ``limit``."""
        m, r = t.messages, t.message_receipts
        query = (
            sa.select(m)
            .join(r, r.c.message_id == m.c.id)
            .where(r.c.recipient == agent, r.c.seq > after)
            .order_by(r.c.seq)
            .limit(limit)
        )
        if unread_only:
            query = query.where(r.c.read_at.is_(None))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def receipt_rows(self, message_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The receipts of the given messages, by message order then recipient."""
        r = t.message_receipts
        out: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(message_ids))):
                query = sa.select(r).where(r.c.message_id.in_(chunk)).order_by(r.c.seq, r.c.recipient)
                out.extend(dict(row) for row in conn.execute(query).mappings())
        return out

    def addressed(self, message_ids: Sequence[str], recipient: str) -> set[str]:
        """Which of ``message_ids`` have a receipt for ``recipient`` (were addressed to it)."""
        r = t.message_receipts
        out: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(message_ids))):
                query = sa.select(r.c.message_id).where(r.c.message_id.in_(chunk), r.c.recipient == recipient)
                out.update(conn.execute(query).scalars())
        return out

    def prune_threads(self, older_than: float, batch: int = 1000) -> int:
        """Delete resolved and abandoned threads closed before ``older_than`` (Unix seconds),
        with their participants, messages and receipts; return how many threads went.

        Written by the scheduler's database thread (the tables' one writer), ``batch`` threads
        per transaction; each transaction checks this writer's owner epoch first (after
        ``claim``), so a replaced (zombie) scheduler deletes nothing (``OwnershipLostError``).
        """
        th = t.threads
        total = 0
        cutoff = datetime.fromtimestamp(older_than, tz=timezone.utc)
        while True:
            with self.engine.begin() as conn:
                if self.writer.fence is not None:
                    ownership.check_fence_conn(conn, self.writer.fence)
                ids = list(conn.execute(
                    sa.select(th.c.id)
                    .where(th.c.status != ThreadStatus.ACTIVE.value, th.c.closed_at < cutoff)
                    .limit(batch)
                ).scalars())
                if not ids:
                    return total
                # children first: SQLite cascades only with foreign keys on, which a copy of
                # the database may not have
                for table, column in ((t.message_receipts, "thread_id"), (t.messages, "thread_id"),
                                      (t.thread_participants, "thread_id"), (th, "id")):
                    conn.execute(table.delete().where(table.c[column].in_(ids)))
            total += len(ids)


def thread_from_row(r: Any) -> Thread:
    """A core ``Thread`` from a ``threads`` row mapping."""
    return Thread(
        id=r["id"],
        type=r["type"],
        participants=tuple(r["participants"] or ()),
        created_at=_epoch(r["created_at"]) or 0.0,
        updated_at=_epoch(r["updated_at"]) or 0.0,
        status=ThreadStatus(r["status"]),
        ticket_id=r["ticket_id"],
        task_id=r["task_id"],
        metadata=dict(r["meta"] or {}),
        outcome=r["outcome"],
        created_by=r["created_by"],
        closed_at=_epoch(r["closed_at"]),
    )


#: How a read row's value (JSON decoded, times as aware datetimes) becomes a task's, per kind.
FROM_ROW = {
    task_fields.PLAIN: "{v}",
    task_fields.JSON: "{v}",
    task_fields.TIME: "_epoch({v})",
    task_fields.STAMP: "(_epoch({v}) or 0.0)",
    task_fields.CAPS: "frozenset({v} or [])",
    task_fields.PRIORITY: "Priority({v})",
    task_fields.STATUS: "TaskStatus({v})",
    task_fields.LOCKS: "tuple(tuple(lock) for lock in {v} or ())",
    task_fields.OUTCOME: "(AttemptOutcome({v}) if {v} else None)",
}
_TASK_FROM_ROW = task_fields.compile_mapping(
    "task_from_row", task_fields.Shape.ROW, task_fields.Shape.TASK, FROM_ROW, build="Task",
    namespace={"Task": Task, "_epoch": _epoch, "Priority": Priority, "TaskStatus": TaskStatus,
               "RetryPolicy": RetryPolicy},
    groups={"retry": "RetryPolicy"}, params={"depends_on": "()"},
)
_ATTEMPT_FROM_ROW = task_fields.compile_mapping(
    "attempt_from_row", task_fields.Shape.ROW, task_fields.Shape.TASK, FROM_ROW, build="Attempt",
    namespace={"Attempt": Attempt, "_epoch": _epoch, "AttemptOutcome": AttemptOutcome},
    params={"locks": None}, fields=task_fields.ATTEMPT_FIELDS,
)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _agent_from_row(r: Any) -> Agent:
    """A core ``Agent`` from its ``agents`` row (no lease, no slots: the scheduler sets those)."""
    return Agent(
        id=r.id,
        incarnation=r.incarnation,
        capabilities=frozenset(r.capabilities or []),
        capacity=r.capacity,
        registered_at=_epoch(r.registered_at) or 0.0,
        lease_expires_at=0.0,
        health=AgentHealth(r.health),
        type=r.type,
        phase=r.phase,
        tags=frozenset(r.tags or []),
        handles=None if r.handles is None else frozenset(r.handles),  # NULL: every type (rows before 0012)
        last_heartbeat_at=_epoch(r.last_heartbeat_at) or 0.0,
        tasks_done=r.tasks_done,
        info=dict(r.info or {}),
    )
