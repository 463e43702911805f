"""The only module that speaks SQL: load the scheduler's state, write change sets, answer reads.

Rules:
- ``apply`` writes one ``ChangeSet`` in one transaction, and is idempotent: inserts skip rows
  that exist (by primary key or event id) and updates write absolute values, so a batch whose
  commit outcome is unknown (the connection dropped during COMMIT) can simply be applied again.
- Bulk statements only: one executemany per table per batch, never a statement per row.
- The caller owns threading: a ``Store`` is used from one thread at a time.
- URLs are shown masked; SQL errors are re-raised with the masked URL, never the password.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from omoi_ray.core.model import (
    Agent,
    AgentStatus,
    Attempt,
    AttemptOutcome,
    Priority,
    RetryPolicy,
    Task,
)
from omoi_ray.core.task_graph import ChangeSet, StoredTask
from omoi_ray.core.task_state import TERMINAL, TaskStatus
from omoi_ray.settings import mask_url
from omoi_ray.store import schema as t

LIVE_STATUSES = [s.value for s in TaskStatus if s not in TERMINAL]
_CHUNK = 500  # ids per IN (...) lookup
_WRITE_CHUNK = 2000  # rows built and sent per executemany


_TASK_MUTABLE = (
    "status", "attempt", "not_before", "agent_id", "agent_incarnation", "claim_request_id", "deadline",
    "result", "error", "reason", "upstream", "updated_at", "started_at", "finished_at",
)
_ATTEMPT_MUTABLE = ("started_at", "finished_at", "released_at", "outcome", "error")


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


def _sqlite_time(value: float | None) -> str | None:
    """UTC in the text form SQLAlchemy's SQLite DateTime reads back (microseconds always)."""
    if value is None:
        return None
    return datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _json(value: Any) -> str | None:
    """JSON text for a JSON column; ``None`` is SQL NULL (read back as None)."""
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


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
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        self._prepare_statements()

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({self.safe_url!r})"

    # ------------------------------------------------------------------ statements

    def _prepare_statements(self) -> None:
        """Compile the hot write statements once for this dialect.

        SQLAlchemy generates the SQL from the table definitions; execution skips its per-row bind
        processing (``exec_driver_sql`` with plain rows), which is most of the cost of small
        batches. ``_row_*`` below therefore convert values themselves: times to the dialect's
        form, JSON to text.
        """
        b = sa.bindparam
        ins = self._insert
        task_cols = [c.name for c in t.tasks.columns]
        attempt_cols = [c.name for c in t.task_attempts.columns]
        event_cols = [c.name for c in t.events.columns if c.name != "id"]
        agent_cols = [c.name for c in t.agents.columns]
        agent_insert = ins(t.agents).values({c: b(c) for c in agent_cols})
        self._sql = {
            "ticket": ins(t.tickets).values({c: b(c) for c in ("id", "status", "created_at", "updated_at")})
            .on_conflict_do_nothing(),
            "task": ins(t.tasks).values({c: b(c) for c in task_cols}).on_conflict_do_nothing(),
            "dep": ins(t.task_dependencies).values(task_id=b("task_id"), depends_on_id=b("depends_on_id"))
            .on_conflict_do_nothing(),
            "attempt": ins(t.task_attempts).values({c: b(c) for c in attempt_cols}).on_conflict_do_nothing(),
            # inline: the database assigns ids; nothing is pre-fetched or returned
            "event": ins(t.events).inline().values({c: b(c) for c in event_cols})
            .on_conflict_do_nothing(index_elements=["event_id"]),
            "agent": agent_insert.on_conflict_do_update(
                index_elements=["id"],
                set_={c: agent_insert.excluded[c] for c in agent_cols if c != "id"},
            ),
            "task_update": t.tasks.update()
            .where(t.tasks.c.id == b("b_id"))
            .values({c: b(c) for c in _TASK_MUTABLE}),
            "attempt_update": t.task_attempts.update()
            .where(t.task_attempts.c.task_id == b("b_task_id"))
            .where(t.task_attempts.c.attempt == b("b_attempt"))
            .values({c: b(c) for c in _ATTEMPT_MUTABLE}),
        }
        # Named parameters on both drivers (sqlite3 accepts dicts with the "named" style).
        dialect = sqlite.dialect(paramstyle="named") if self.dialect == "sqlite" else self.engine.dialect
        self._read_dialect = dialect
        self._compiled = {name: str(stmt.compile(dialect=dialect)) for name, stmt in self._sql.items()}
        self._time_form = _sqlite_time if self.dialect == "sqlite" else _ts
        self._time: Any = self._time_form

    # ------------------------------------------------------------------ writes

    def apply(self, changes: ChangeSet) -> None:
        """Write a change set in one transaction (idempotent; see the module rules).

        Rows are built and written a chunk at a time, so a large batch never exists twice in
        memory. The change set must not change meanwhile (the caller writes it synchronously).
        """
        with self.engine.begin() as conn, self._batched(conn):
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                for name, rows in self._rows(changes):
                    for chunk in _chunks(rows, _WRITE_CHUNK):
                        cursor.executemany(self._compiled[name], [row() for row in chunk])
            finally:
                cursor.close()

    def prepare(self, changes: ChangeSet) -> list[tuple[str, list[dict[str, Any]]]]:
        """All rows of a change set as plain values: a snapshot, safe to keep or to hand to
        another thread (used to retry a failed write off the event loop)."""
        return [(name, [row() for row in rows]) for name, rows in self._rows(changes)]

    def _rows(self, changes: ChangeSet) -> list[tuple[str, list[Callable[[], dict[str, Any]]]]]:
        """Statement by statement, in dependency order: a row builder per row (built on demand)."""
        # Most times in a batch are a handful of distinct values: convert each once.
        self._time = functools.lru_cache(maxsize=4096)(self._time_form)
        now = self._time(time.time())
        out: list[tuple[str, list[Callable[[], dict[str, Any]]]]] = []

        def add(name: str, builder: Callable[[Any], dict[str, Any]], items: Iterable[Any]) -> None:
            rows = [functools.partial(builder, item) for item in items]
            if rows:
                out.append((name, rows))

        tickets = sorted({task.ticket_id for task in changes.created if task.ticket_id})
        add("ticket", lambda i: {"id": i, "status": "open", "created_at": now, "updated_at": now}, tickets)
        add("task", self._task_row, changes.created)
        add("dep", lambda d: {"task_id": d[0], "depends_on_id": d[1]}, changes.dependencies)
        add("task_update", self._task_update, changes.updated)
        add("attempt", self._attempt_row,
            [a for a in changes.attempts if (a.task_id, a.attempt) in changes.new_attempts])
        add("attempt_update", self._attempt_update, changes.attempts)
        add("agent", lambda a: self._agent_row(a, now), changes.agents)
        add("event", self._event_row, changes.events)
        return out

    def write(self, prepared: list[tuple[str, list[dict[str, Any]]]]) -> None:
        """Execute prepared rows in one transaction: one executemany per statement."""
        with self.engine.begin() as conn, self._batched(conn):
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                for name, rows in prepared:
                    cursor.executemany(self._compiled[name], rows)
            finally:
                cursor.close()

    def _batched(self, conn: sa.Connection) -> Any:
        """On PostgreSQL, psycopg's pipeline mode: the transaction's statements go out together
        instead of one network round trip each."""
        if self.dialect != "postgresql":
            return contextlib.nullcontext()
        return conn.connection.dbapi_connection.pipeline()  # type: ignore[union-attr]

    def _task_row(self, task: Task) -> dict[str, Any]:
        ts = self._time
        return {
            "id": task.id,
            "seq": task.seq,
            "ticket_id": task.ticket_id,
            "phase": task.phase,
            "type": task.type,
            "payload": _json(task.payload),
            "requires": _json(sorted(task.requires)),
            "priority": int(task.priority),
            "max_retries": task.retry.max_retries,
            "backoff_base": task.retry.backoff_base,
            "backoff_cap": task.retry.backoff_cap,
            "backoff_jitter": task.retry.jitter,
            "timeout_s": task.timeout,
            "idempotency_key": task.idempotency_key,
            "fingerprint": task.fingerprint,
            "created_at": ts(task.created_at),
            **self._task_mutable(task),
        }

    def _task_update(self, task: Task) -> dict[str, Any]:
        return {"b_id": task.id, **self._task_mutable(task)}

    def _task_mutable(self, task: Task) -> dict[str, Any]:
        ts = self._time
        return {
            "status": task.status.value,
            "attempt": task.attempt,
            "not_before": ts(task.not_before),
            "agent_id": task.agent_id,
            "agent_incarnation": task.agent_incarnation,
            "claim_request_id": task.claim_request_id,
            "deadline": ts(task.deadline),
            "result": _json(task.result),
            "error": task.error,
            "reason": task.reason,
            "upstream": task.upstream,
            "updated_at": ts(task.updated_at),
            "started_at": ts(task.started_at),
            "finished_at": ts(task.finished_at),
        }

    def _attempt_row(self, a: Attempt) -> dict[str, Any]:
        return {
            "task_id": a.task_id,
            "attempt": a.attempt,
            "agent_id": a.agent_id,
            "agent_incarnation": a.agent_incarnation,
            "claimed_at": self._time(a.claimed_at),
            **self._attempt_mutable(a),
        }

    def _attempt_update(self, a: Attempt) -> dict[str, Any]:
        return {"b_task_id": a.task_id, "b_attempt": a.attempt, **self._attempt_mutable(a)}

    def _attempt_mutable(self, a: Attempt) -> dict[str, Any]:
        ts = self._time
        return {
            "started_at": ts(a.started_at),
            "finished_at": ts(a.finished_at),
            "released_at": ts(a.released_at),
            "outcome": a.outcome.value if a.outcome else None,
            "error": a.error,
        }

    def _agent_row(self, a: Agent, now: Any) -> dict[str, Any]:
        return {
            "id": a.id,
            "incarnation": a.incarnation,
            "capabilities": _json(sorted(a.capabilities)),
            "capacity": a.capacity,
            "status": a.status.value,
            "info": _json(a.info),
            "registered_at": self._time(a.registered_at),
            "updated_at": now,
        }

    def _event_row(self, e: Any) -> dict[str, Any]:
        return {
            "event_id": e.id,
            "type": e.type,
            "entity_type": e.entity_type,
            "entity_id": e.entity_id,
            "payload": _json(e.payload),
            "created_at": self._time(e.at),
            "task_id": e.task_id,
            "agent_id": e.agent_id,
            "ticket_id": e.ticket_id,
            "request_id": e.request_id,
        }

    # ------------------------------------------------------------------ loading

    def load(self) -> Snapshot:
        """Read every live task, its dependency edges, live agents and open attempts."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.tasks).where(t.tasks.c.status.in_(LIVE_STATUSES))).mappings()
            tasks = [self._task_from_row(r) for r in rows]
            dep = t.task_dependencies
            upstream = t.tasks.alias("upstream")
            edges = conn.execute(
                sa.select(dep.c.task_id, dep.c.depends_on_id, upstream.c.status)
                .join(t.tasks, t.tasks.c.id == dep.c.task_id)
                .join(upstream, upstream.c.id == dep.c.depends_on_id)
                .where(t.tasks.c.status.in_(LIVE_STATUSES))
            ).all()
            agents = [
                Agent(
                    id=r.id,
                    incarnation=r.incarnation,
                    capabilities=frozenset(r.capabilities or []),
                    capacity=r.capacity,
                    registered_at=_epoch(r.registered_at) or 0.0,
                    lease_expires_at=0.0,
                    status=AgentStatus(r.status),
                    info=dict(r.info or {}),
                )
                for r in conn.execute(sa.select(t.agents).where(t.agents.c.status == AgentStatus.ALIVE.value))
            ]
            attempts = [
                Attempt(
                    task_id=r.task_id,
                    attempt=r.attempt,
                    agent_id=r.agent_id,
                    agent_incarnation=r.agent_incarnation,
                    claimed_at=_epoch(r.claimed_at) or 0.0,
                    started_at=_epoch(r.started_at),
                    finished_at=_epoch(r.finished_at),
                    outcome=AttemptOutcome(r.outcome) if r.outcome else None,
                    error=r.error,
                )
                for r in conn.execute(sa.select(t.task_attempts).where(t.task_attempts.c.released_at.is_(None)))
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
        return Task(
            id=r["id"],
            seq=r["seq"],
            type=r["type"],
            payload=r["payload"],
            requires=frozenset(r["requires"] or []),
            priority=Priority(r["priority"]),
            depends_on=(),
            retry=RetryPolicy(
                max_retries=r["max_retries"],
                backoff_base=r["backoff_base"],
                backoff_cap=r["backoff_cap"],
                jitter=r["backoff_jitter"],
            ),
            timeout=r["timeout_s"],
            ticket_id=r["ticket_id"],
            phase=r["phase"],
            idempotency_key=r["idempotency_key"],
            fingerprint=r["fingerprint"],
            created_at=_epoch(r["created_at"]) or 0.0,
            status=TaskStatus(r["status"]),
            attempt=r["attempt"],
            not_before=_epoch(r["not_before"]),
            agent_id=r["agent_id"],
            agent_incarnation=r["agent_incarnation"],
            claim_request_id=r["claim_request_id"],
            deadline=_epoch(r["deadline"]),
            result=r["result"],
            error=r["error"],
            reason=r["reason"],
            upstream=r["upstream"],
            started_at=_epoch(r["started_at"]),
            finished_at=_epoch(r["finished_at"]),
            updated_at=_epoch(r["updated_at"]) or 0.0,
        )

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

    def attempt_rows(self, task_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.task_attempts)
                .where(t.task_attempts.c.task_id == task_id)
                .order_by(t.task_attempts.c.attempt)
            ).mappings()
            return [dict(r) for r in rows]

    def status_counts(self, ids: Sequence[str] | None = None) -> dict[str, int]:
        with self.engine.connect() as conn:
            query = sa.select(t.tasks.c.status, sa.func.count()).group_by(t.tasks.c.status)
            if ids is None:
                return {s: n for s, n in conn.execute(query)}
            out: dict[str, int] = {}
            for chunk in _chunks(list(ids)):
                for s, n in conn.execute(query.where(t.tasks.c.id.in_(chunk))):
                    out[s] = out.get(s, 0) + n
            return out

    def events_of(self, entity_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            query = sa.select(t.events).order_by(t.events.c.id).limit(limit)
            if entity_id is not None:
                query = query.where(t.events.c.entity_id == entity_id)
            return [dict(r) for r in conn.execute(query).mappings()]


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
