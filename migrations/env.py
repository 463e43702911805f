"""Alembic environment: runs migrations on the connection or URL that omoi-ray hands it.

omoi-ray builds the Alembic config in code (``omoi_ray.store.migrate``), so there is no
alembic.ini; the URL travels in ``config.attributes`` and is never interpolated or logged.
Online, the whole upgrade is one transaction that first takes the migration lock (see
``omoi_ray.store.migrate``): Alembic runs inside it as in an external transaction.
"""

from __future__ import annotations

from alembic import context

from omoi_ray.store.migrate import lock_for_migration, migration_engine
from omoi_ray.store.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.attributes["url"],
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = migration_engine(config.attributes["url"])
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def _run(connection) -> None:
    if connection.in_transaction():  # the caller's transaction: the caller commits it
        lock_for_migration(connection)
        _configure(connection)
        context.run_migrations()
        return
    with connection.begin():
        lock_for_migration(connection)
        _configure(connection)
        context.run_migrations()


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
