"""Reading the ``events`` table in position order without ever skipping a row: the SQL of the relay,
``follow`` and the CLI, and the retention pruning.

Rules:
- PostgreSQL: a row is readable once its writing transaction id (``txid``) is below the xmin of
  the reading statement's snapshot, i.e. once every transaction that could still add a row
  before it has ended. Reading ``id > last_seen`` alone would skip rows whose transaction took
  its id early and committed late. The cost: a long *writing* transaction anywhere on the
  PostgreSQL cluster delays (never drops) what comes after it.
- SQLite: one writer at a time, so row ids are assigned in commit order and ``id > last_seen``
  is exact. Its positions are ``0-<id>``; a position with a larger first number lies past
  every event (nothing is after it), as on PostgreSQL.
- Readers take prefixes of one order, so a reader that stops at position P and another that
  starts after P together see every event exactly once.
- Pruning deletes in batches and never deletes past ``upto`` (the relay's saved cursor when
  Redis is configured), so nothing is pruned before it was mirrored. It keeps the newest row,
  so ids (and positions) never go backwards.
- Writes (cursors, pruning) of a relay that claimed the database check its owner epoch first
  (``fence``), so a replaced relay writes nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from omoi_ray.errors import ConfigurationError
from omoi_ray.specs.events import START, EventRecord, Position
from omoi_ray.store import schema as t
from omoi_ray.store.ownership import Fence, check_fence_conn

_COLUMNS = ("id", "txid", "event_id", "type", "entity_type", "entity_id", "payload", "created_at",
            "task_id", "agent_id", "ticket_id", "request_id")


class EventLog:
    """Position-ordered reads, cursors and pruning of the events table."""

    def __init__(self, engine: sa.Engine) -> None:
        """Prepare the dialect's position expressions for ``engine`` (SQLite or PostgreSQL); ``fence`` starts unset."""
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        e = t.events.c
        cols = [e[c] for c in _COLUMNS]
        if self.postgres:
            pos = sa.tuple_(e.txid, e.id)
            safe = e.txid < sa.text("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            self._after = lambda p: pos > sa.tuple_(sa.literal(p.major), sa.literal(p.minor))
            self._before = lambda p: pos < sa.tuple_(sa.literal(p.major), sa.literal(p.minor))
            self._upto = lambda p: pos <= sa.tuple_(sa.literal(p.major), sa.literal(p.minor))
            self._order = (e.txid, e.id)
            self._desc = (e.txid.desc(), e.id.desc())
        else:
            # SQLite positions are all "0-<id>": one with a larger major lies past every event.
            safe = sa.true()
            self._after = lambda p: e.id > p.minor if p.major == 0 else sa.false()
            self._before = lambda p: e.id < p.minor if p.major == 0 else sa.true()
            self._upto = lambda p: e.id <= p.minor if p.major == 0 else sa.true()
            self._order = (e.id,)
            self._desc = (e.id.desc(),)
        self._safe = safe
        self._select = sa.select(*cols)
        #: the relay's claim on the database: when set, every write here checks its owner epoch
        self.fence: Fence | None = None

    def _check_fence(self, conn: sa.Connection) -> None:
        if self.fence is not None:
            check_fence_conn(conn, self.fence)

    # ------------------------------------------------------------------ reading

    def read_after(
        self,
        after: Position,
        limit: int = 1000,
        *,
        before: Position | None = None,
    ) -> list[EventRecord]:
        """Committed events after ``after`` (and before ``before``), in position order. Type
        filters are the caller's: skipped events must still advance its position.

        Args:
            after: read strictly after this position (``START``: from the beginning).
            limit: most events to return.
            before: if given, read strictly before this position.

        Returns:
            list[EventRecord], at most ``limit``, in position order.
        """
        q = self._select.where(self._safe, self._after(after))
        if before is not None:
            q = q.where(self._before(before))
        q = q.order_by(*self._order).limit(limit)
        with self.engine.connect() as conn:
            return [event_record(r) for r in conn.execute(q)]

    def latest(self, *, readable: bool = True) -> Position:
        """The position of the newest readable event (``START`` if there is none). With
        ``readable=False``: of the newest committed one, even if a running transaction still
        holds it back from readers (what a flush must wait for)."""
        e = t.events.c
        q = sa.select(e.txid, e.id).order_by(*self._desc).limit(1)
        if readable:
            q = q.where(self._safe)
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return START if row is None else _position(row.txid, row.id)

    def last(self, count: int, *, upto: Position | None = None) -> list[EventRecord]:
        """The newest ``count`` readable events (at or before ``upto``), oldest first."""
        q = self._select.where(self._safe)
        if upto is not None:
            q = q.where(self._upto(upto))
        q = q.order_by(*self._desc).limit(count)
        with self.engine.connect() as conn:
            rows = [event_record(r) for r in conn.execute(q)]
        rows.reverse()
        return rows

    def rewind(self, pos: Position, count: int) -> Position:
        """A position ``count`` events before ``pos``: reading after it yields those ``count``
        events again (``START`` when fewer exist)."""
        if count <= 0:
            return pos
        e = t.events.c
        q = (sa.select(e.txid, e.id).where(self._upto(pos)).order_by(*self._desc)
             .offset(count).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return START if row is None else _position(row.txid, row.id)

    def check_positions(self) -> None:
        """PostgreSQL: refuse events whose transaction ids are ahead of the server's (the table was
        copied from another cluster, e.g. by dump and restore): their positions would hide every
        new event from readers. Raises ``ConfigurationError``."""
        if not self.postgres:
            return
        with self.engine.connect() as conn:
            row = conn.execute(sa.text(
                "SELECT (SELECT max(txid) FROM events), pg_current_xact_id()::text::bigint"
            )).first()
        if row is not None and row[0] is not None and row[0] > row[1]:
            raise ConfigurationError(
                f"events carry transaction ids up to {row[0]}, beyond this PostgreSQL server's "
                f"{row[1]}: the table was copied from another cluster. New events would sort before "
                "them; renumber them (UPDATE events SET txid = 0) before mirroring"
            )

    # ------------------------------------------------------------------ cursors

    def identity(self, name: str, *, create: bool = True) -> str | None:
        """A random token naming this database to a mirror (created on first use unless
        ``create`` is False, then None)."""
        import secrets

        table = t.relay_cursors
        with self.engine.begin() as conn:
            token = conn.execute(sa.select(table.c.token).where(table.c.name == name)).scalar()
            if token is None and create:
                self._check_fence(conn)
                token = secrets.token_hex(16)
                conn.execute(table.insert().values(name=name, txid=0, event_pk=0, token=token,
                                                   updated_at=datetime.now(timezone.utc)))
        return token

    def load_cursor(self, name: str) -> Position | None:
        """Return the position cursor ``name`` (a relay) saved last, or None if it has none."""
        c = t.relay_cursors.c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(c.txid, c.event_pk).where(c.name == name)).first()
        return None if row is None else Position(row.txid, row.event_pk)

    def save_cursor(self, name: str, pos: Position) -> None:
        """Record that everything up to ``pos`` was mirrored (never moves a cursor backwards).

        Raises:
            OwnershipLostError: ``fence`` is set and no longer holds (nothing is written).
        """
        table = t.relay_cursors
        now = datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            self._check_fence(conn)
            row = conn.execute(
                sa.select(table.c.txid, table.c.event_pk).where(table.c.name == name)
            ).first()
            if row is None:
                conn.execute(table.insert().values(name=name, txid=pos.major, event_pk=pos.minor, token=None,
                                                   updated_at=now))
            elif Position(row.txid, row.event_pk) < pos:
                conn.execute(table.update().where(table.c.name == name)
                             .values(txid=pos.major, event_pk=pos.minor, updated_at=now))

    # ------------------------------------------------------------------ retention

    def prune(self, older_than: float, *, upto: Position | None = None, batch: int = 5000) -> int:
        """Delete events created before epoch second ``older_than`` (and at or before ``upto``),
        ``batch`` rows per transaction; the newest row always stays.

        Returns:
            how many rows were deleted.

        Raises:
            OwnershipLostError: ``fence`` is set and no longer holds (the current batch rolls back).
        """
        e = t.events.c
        cutoff = datetime.fromtimestamp(older_than, tz=timezone.utc)
        # The newest row always stays: SQLite would otherwise hand out its id again and a
        # position could go backwards.
        newest = sa.select(sa.func.max(e.id)).scalar_subquery()
        victims = sa.select(e.id).where(e.created_at < cutoff, e.id < newest)
        if upto is not None:
            victims = victims.where(self._upto(upto))
        victims = victims.limit(batch)
        deleted = 0
        while True:
            with self.engine.begin() as conn:
                self._check_fence(conn)
                n = conn.execute(t.events.delete().where(e.id.in_(victims.scalar_subquery()))).rowcount
            deleted += n
            if n < batch:
                return deleted


def _position(txid: int, pk: int) -> Position:
    return Position(int(txid or 0), int(pk))


def event_record(r: Any) -> EventRecord:
    """The ``EventRecord`` of one ``events`` row (all columns selected); the one row -> record
    mapping, shared by ``EventLog`` and ``Store.events_of``."""
    return EventRecord.model_construct(
        position=f"{int(r.txid or 0)}-{r.id}",
        id=r.event_id,
        type=r.type,
        entity_type=r.entity_type,
        entity_id=r.entity_id,
        payload=r.payload,
        at=r.created_at,
        task_id=r.task_id,
        agent_id=r.agent_id,
        ticket_id=r.ticket_id,
        request_id=r.request_id,
    )
