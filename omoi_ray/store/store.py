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

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from omoi_ray.core import task_fields
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
from omoi_ray.store.writes import BatchWriter, Mark, Rows

LIVE_STATUSES = [s.value for s in TaskStatus if s not in TERMINAL]
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
                    .where(t.tasks.c.status.in_(LIVE_STATUSES), ta.c.outcome == AttemptOutcome.INTERRUPTED.value)
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
        return Snapshot(
            tasks=tasks,
            dependencies=[(a, b, TaskStatus(s)) for a, b, s in edges],
            agents=agents,
            open_attempts=attempts,
            next_seq=next_seq,
        )

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
                        for tid, status, fingerprint, key in cursor.fetchall():
                            ref = StoredTask(tid, TaskStatus(status), fingerprint, key)
                            out[tid if column == "id" else key] = ref
            finally:
                cursor.close()
        return by_id, by_key

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one Store per process; sizes are bounded
    def _lookup_sql(self, column: str, count: int) -> str:
        cols = (t.tasks.c.id, t.tasks.c.status, t.tasks.c.fingerprint, t.tasks.c.idempotency_key)
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
        last_heartbeat_at=_epoch(r.last_heartbeat_at) or 0.0,
        tasks_done=r.tasks_done,
        info=dict(r.info or {}),
    )
