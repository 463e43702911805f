"""Database ownership in SQL: read the owner, claim, renew, release, take over; fence commits.

The rules (who may claim, what an owner epoch is) live in ``omoi_ray.core.ownership``; this
module only stores them.

Rules:
- A claim runs in one transaction that first writes to ``db_owner`` (taking its row lock, or
  SQLite's write lock), so claims, takeovers and renewals are serialised.
- A change of owner bumps every writer's owner epoch; a writer's restart bumps its own.
- ``Fence`` is what a writer carries: its name and owner epoch. ``fence_sql`` reads the stored
  epoch in the writer's own transaction (``FOR SHARE`` on PostgreSQL, so a takeover waits for
  commits under way and every later commit sees the new epoch); a mismatch raises
  ``OwnershipLostError`` and the transaction rolls back.
- A database without the ownership tables (not migrated yet) is unowned.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from omoi_ray.core.ownership import WRITERS, Claim, OwnerId, Ownership, decide, describe_owner
from omoi_ray.errors import DatabaseOwnedError, OwnershipLostError
from omoi_ray.store import schema as t

_CLAIM_TRIES = 3  # two first claims can race to insert the owner row: the loser tries again


class Fence(NamedTuple):
    """A writer's claim on the database: its name and the owner epoch it got (``owner_epoch``
    is unrelated to the random ``epoch`` of a commit mark)."""

    writer: str
    owner_epoch: int


def _aware(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def read(engine: sa.Engine) -> Ownership | None:
    """The stored owner, or None when the database is unowned (or has no ownership table)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(t.db_owner.name):
            return None
        row = conn.execute(sa.select(t.db_owner).where(t.db_owner.c.id == 1)).first()
    return None if row is None else _ownership(row)


def _ownership(row: Any) -> Ownership:
    return Ownership(
        OwnerId(row.namespace, row.cluster_id),
        _epoch(row.since),
        _epoch(row.lease_expires_at),
    )


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def refusal(current: Ownership, me: OwnerId, what: str) -> DatabaseOwnedError:
    """The error for a runtime ``me`` that may not use a database another runtime owns."""
    left = max(0.0, current.lease_expires_at - time.time())
    return DatabaseOwnedError(
        f"{what} is owned by the runtime in {describe_owner(current)}, whose lease is live for "
        f"{left:.0f}s more (its scheduler renews it while it runs); this runtime ({me}) may not use it. "
        "Point it at another database, or, if that runtime is gone, retry after its lease lapses "
        "or run `omoi-ray db takeover`",
        owner_namespace=current.owner.namespace,
        owner_cluster_id=current.owner.cluster_id,
        owner_since=current.since,
        lease_expires_at=current.lease_expires_at,
    )


def check_free(engine: sa.Engine, me: OwnerId, what: str, now: float | None = None) -> None:
    """Raise ``DatabaseOwnedError`` if another runtime owns the database with a live lease
    (read only: a driver calls it before migrating anything)."""
    current = read(engine)
    if current is not None and decide(current, me, time.time() if now is None else now) is Claim.REFUSED:
        raise refusal(current, me, what)


def claim(engine: sa.Engine, writer: str, me: OwnerId, lease: float, what: str) -> tuple[Fence, Claim]:
    """Claim the database for writer ``writer`` of runtime ``me``.

    Args:
        engine: the database.
        writer: one of ``WRITERS``.
        me: the claiming runtime.
        lease: owner lease length, seconds from now.
        what: how messages name the database (e.g. a masked URL).

    Returns:
        ``(fence, claim)``: the writer's fence (new owner epoch) and how the claim went
        (``Claim.NEW_OWNER`` or ``Claim.SAME_OWNER``).

    Raises:
        DatabaseOwnedError: another runtime owns it with a live lease.
        ValueError: ``writer`` is not one of ``WRITERS``.
        sqlalchemy.exc.IntegrityError: concurrent first claims kept racing (after 3 tries).
    """
    if writer not in WRITERS:
        raise ValueError(f"unknown writer {writer!r}; the writers are {', '.join(WRITERS)}")
    for attempt in range(_CLAIM_TRIES):
        try:
            return _claim_once(engine, writer, me, lease, what)
        except sa.exc.IntegrityError:
            if attempt == _CLAIM_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _claim_once(engine: sa.Engine, writer: str, me: OwnerId, lease: float, what: str) -> tuple[Fence, Claim]:
    owner, epochs = t.db_owner, t.db_owner_epochs
    with engine.begin() as conn:
        # A write first: it takes the row's lock (PostgreSQL) or the database's (SQLite).
        conn.execute(owner.update().where(owner.c.id == 1).values(id=1))
        row = conn.execute(sa.select(owner).where(owner.c.id == 1)).first()
        current = None if row is None else _ownership(row)
        now = time.time()
        outcome = decide(current, me, now)
        if outcome is Claim.REFUSED:
            assert current is not None
            raise refusal(current, me, what)
        values = {"namespace": me.namespace, "cluster_id": me.cluster_id, "lease_expires_at": _aware(now + lease)}
        if row is None:
            conn.execute(owner.insert().values(id=1, since=_aware(now), **values))
        elif outcome is Claim.NEW_OWNER:
            conn.execute(owner.update().where(owner.c.id == 1).values(since=_aware(now), **values))
            # every writer of the old owner is fenced off
            conn.execute(epochs.update().values(owner_epoch=epochs.c.owner_epoch + 1, updated_at=_aware(now)))
        else:
            conn.execute(owner.update().where(owner.c.id == 1).values(**values))
        return Fence(writer, _bump(conn, writer, now)), outcome


def _bump(conn: sa.Connection, writer: str, now: float) -> int:
    epochs = t.db_owner_epochs
    current = conn.execute(sa.select(epochs.c.owner_epoch).where(epochs.c.writer == writer)).scalar()
    if current is None:
        conn.execute(epochs.insert().values(writer=writer, owner_epoch=1, updated_at=_aware(now)))
        return 1
    conn.execute(
        epochs.update().where(epochs.c.writer == writer).values(owner_epoch=current + 1, updated_at=_aware(now))
    )
    return int(current) + 1


def _still_mine(me: OwnerId, fence: Fence) -> Any:
    owner, epochs = t.db_owner, t.db_owner_epochs
    return sa.and_(
        owner.c.id == 1,
        owner.c.namespace == me.namespace,
        owner.c.cluster_id == me.cluster_id,
        sa.exists().where(epochs.c.writer == fence.writer, epochs.c.owner_epoch == fence.owner_epoch),
    )


def renew(engine: sa.Engine, me: OwnerId, fence: Fence, lease: float) -> float:
    """Extend the owner's lease by ``lease`` seconds from now; returns the new expiry.

    Raises ``OwnershipLostError`` if ``fence`` no longer holds (another owner, or a newer process
    of this writer)."""
    expires = time.time() + lease
    with engine.begin() as conn:
        updated = conn.execute(
            t.db_owner.update().where(_still_mine(me, fence)).values(lease_expires_at=_aware(expires))
        ).rowcount
    if updated != 1:
        raise lost(fence)
    return expires


def release(engine: sa.Engine, me: OwnerId, fence: Fence) -> bool:
    """End the owner's lease now (a clean shutdown), if ``fence`` still holds; True if it did.
    Another runtime may then claim the database at once."""
    with engine.begin() as conn:
        return conn.execute(
            t.db_owner.update().where(_still_mine(me, fence)).values(lease_expires_at=_aware(time.time()))
        ).rowcount == 1


def release_owner(engine: sa.Engine, me: OwnerId) -> bool:
    """End runtime ``me``'s lease now if it owns the database (for a driver whose local Ray
    cluster ends with it). A scheduler of ``me`` still running renews it again."""
    owner = t.db_owner
    with engine.begin() as conn:
        return conn.execute(
            owner.update()
            .where(owner.c.id == 1, owner.c.namespace == me.namespace, owner.c.cluster_id == me.cluster_id)
            .values(lease_expires_at=_aware(time.time()))
        ).rowcount == 1


def takeover(engine: sa.Engine) -> Ownership | None:
    """Forget the owner and fence off every one of its writers, whatever its lease says; the next
    runtime to start claims the database. Returns the owner that was removed (None: unowned)."""
    with engine.begin() as conn:
        conn.execute(t.db_owner.update().where(t.db_owner.c.id == 1).values(id=1))
        row = conn.execute(sa.select(t.db_owner).where(t.db_owner.c.id == 1)).first()
        epochs = t.db_owner_epochs
        conn.execute(epochs.update().values(owner_epoch=epochs.c.owner_epoch + 1, updated_at=_aware(time.time())))
        conn.execute(t.db_owner.delete())
    return None if row is None else _ownership(row)


def lost(fence: Fence) -> OwnershipLostError:
    """Return (not raise) the error for a writer whose ``fence`` no longer holds, naming writer and epoch."""
    return OwnershipLostError(
        f"the {fence.writer} lost the database: its owner epoch {fence.owner_epoch} was replaced "
        "(a newer process of it, another runtime, or `omoi-ray db takeover` took over); it must "
        "not commit",
        writer=fence.writer,
        owner_epoch=fence.owner_epoch,
    )


def fence_statement(dialect: sa.Dialect) -> str:
    """The per-commit check, compiled for ``dialect``: one primary-key row, bound as ``writer``."""
    epochs = t.db_owner_epochs
    stmt = sa.select(epochs.c.owner_epoch).where(epochs.c.writer == sa.bindparam("writer"))
    if dialect.name == "postgresql":
        stmt = stmt.with_for_update(read=True)  # FOR SHARE: a takeover waits for this commit
    return str(stmt.compile(dialect=dialect))


def send_fence_check(dbapi_connection: Any, statement: str, fence: Fence) -> Any:
    """Send the per-commit check inside the writer's transaction (in a PostgreSQL pipeline it
    travels with the batch); returns the cursor to hand to ``check_fence`` before committing."""
    cursor = dbapi_connection.cursor()
    cursor.execute(statement, {"writer": fence.writer})
    return cursor


def check_fence(cursor: Any, fence: Fence) -> None:
    """Raise ``OwnershipLostError`` unless the check sent on ``cursor`` found ``fence``'s epoch."""
    try:
        row = cursor.fetchone()
    finally:
        cursor.close()
    if row is None or row[0] != fence.owner_epoch:
        raise lost(fence)


def check_fence_conn(conn: sa.Connection, fence: Fence) -> None:
    """The same check on a SQLAlchemy connection (writers that do not use the batch writer)."""
    epochs = t.db_owner_epochs
    stmt = sa.select(epochs.c.owner_epoch).where(epochs.c.writer == fence.writer)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(read=True)
    if conn.execute(stmt).scalar() != fence.owner_epoch:
        raise lost(fence)
