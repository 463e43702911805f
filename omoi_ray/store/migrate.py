"""Schema migrations: upgrade a database to the code's head and check that it is there.

Rules:
- One linear Alembic history in the top-level ``migrations`` package, run on SQLite and
  PostgreSQL alike.
- The runtime never migrates behind a user's back: ``check`` raises
  ``DatabaseNotMigratedError`` with the command to run, unless the caller asked to migrate.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from omoi_ray.errors import DatabaseNotMigratedError
from omoi_ray.settings import mask_url
from omoi_ray.store.store import make_engine


def alembic_config(url: str) -> Config:
    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.attributes["url"] = url
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the migrations package has no revisions"
    return head


def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> str:
    """Upgrade the database at ``url``; returns the revision it is at afterwards."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)
    return current_revision(url) or ""


def check(url: str) -> None:
    """Raise ``DatabaseNotMigratedError`` unless the database is at the code's head revision."""
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
