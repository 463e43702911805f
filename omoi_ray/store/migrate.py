"""Schema migrations: upgrade a database to the code's head and check that it is there.

Rules:
- One linear Alembic history in the top-level ``migrations`` package, run on SQLite and
  PostgreSQL alike.
- The runtime never migrates behind a user's back: ``check`` raises
  ``DatabaseNotMigratedError`` with the command to run, unless the caller asked to migrate.
- An upgrade is one transaction, all revisions of it included, so a process killed part-way
  leaves the database at the revision it had before (SQLite too: ``migration_engine`` makes
  its DDL transactional).
- Upgrades are serialised: the transaction first takes ``MIGRATION_LOCK_KEY`` (PostgreSQL,
  advisory) or the write lock (SQLite, ``BEGIN IMMEDIATE``) before Alembic reads the version,
  so of several processes upgrading at once one migrates and the others then find the head.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from omoi_ray.errors import DatabaseNotMigratedError
from omoi_ray.settings import mask_url
from omoi_ray.store.store import make_engine

#: The PostgreSQL advisory lock key that serialises upgrades: a fixed signed 64-bit number
#: derived from a constant name (advisory locks are database-wide, so all schemas share it).
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"omoi-ray schema migration").digest()[:8], "big", signed=True
)


def migration_engine(url: str) -> sa.Engine:
    """The engine migrations run on: ``make_engine``'s, and on SQLite with transactional DDL.

    Python's sqlite3 driver commits on its own before DDL; with its ``isolation_level`` set
    to ``None`` it never does, and every transaction SQLAlchemy begins is ``BEGIN IMMEDIATE``
    (the write lock at once, waiting up to the busy timeout for another upgrader), so DDL,
    batch table copies and the version row commit or roll back together. The connection
    pragmas (``PRAGMA foreign_keys`` among them) run on connect, outside any transaction."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _no_driver_transactions(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def lock_for_migration(connection: sa.Connection) -> None:
    """Wait for and hold, until this transaction ends, the right to migrate (PostgreSQL: the
    advisory lock ``MIGRATION_LOCK_KEY``; SQLite already holds the write lock since BEGIN)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


def alembic_config(url: str) -> Config:
    """Return an Alembic config for the database at ``url``, with the ``migrations`` package as script location."""
    from omoi_ray import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.attributes["url"] = url
    return cfg


def head_revision() -> str:
    """Return the code's head revision id (the last migration in ``migrations``)."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the migrations package has no revisions"
    return head


def current_revision(url: str) -> str | None:
    """Return the revision id the database at ``url`` is at, or None when it has no schema yet."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> str:
    """Upgrade the database at ``url`` to ``revision`` in one transaction, waiting for any
    other upgrader of it first (a SQLite file's folder is created if missing).

    Returns:
        the revision id the database is at afterwards ("" if it has none).
    """
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)
    return current_revision(url) or ""


def check(url: str) -> None:
    """Check that the database at ``url`` is at the code's head revision.

    Raises:
        DatabaseNotMigratedError: it has no schema, is behind, or is at an unknown revision;
            the message names the command to run.
    """
    current = current_revision(url)
    head = head_revision()
    if current == head:
        return
    where = mask_url(url)
    if current is None:
        state = "has no omoi-ray schema yet"
    elif ScriptDirectory.from_config(alembic_config(url)).get_revision(current) is None:
        state = f"is at revision {current}, which this version of omoi-ray does not know (is it newer?)"
    else:
        state = f"is at revision {current}, behind the code's revision {head}"
    raise DatabaseNotMigratedError(
        f"the database {where} {state}: run `omoi-ray db upgrade` "
        "(or connect(migrate=True)) before starting the runtime",
        current=current,
        head=head,
    )
