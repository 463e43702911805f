"""Upgrades are atomic and serialised: a killed upgrade leaves the previous revision, and
several processes upgrading one fresh database at once all end at head without an error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from omoi_ray.store import migrate
from omoi_ray.store.schema import Base

ROOT = Path(__file__).resolve().parent.parent

# The child kills itself (SIGKILL, no cleanup) just before executing the first statement that
# contains MARKER: the upgrade is cut off with earlier revisions' DDL already sent.
KILLED_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import sqlalchemy as sa
    from omoi_ray.store import migrate

    url, marker = sys.argv[1], sys.argv[2]

    @sa.event.listens_for(sa.engine.Engine, "before_cursor_execute")
    def _die(conn, cursor, statement, parameters, context, executemany):
        if marker in statement:
            os.kill(os.getpid(), signal.SIGKILL)

    migrate.upgrade(url)
    sys.exit(3)  # the marker was never executed: the test's premise is wrong
    """
)

UPGRADER = textwrap.dedent(
    """
    import sys
    from omoi_ray.store import migrate

    sys.stdin.readline()  # start together
    print(migrate.upgrade(sys.argv[1]))
    """
)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path):
    """A database on each backend with no omoi-ray schema at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh' / 'omoi.db'}"
        return
    schemas = request.getfixturevalue("pg_schemas")
    url = schemas.new()
    yield url
    schemas.drop(url)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _assert_at_head_with_exactly_the_models(url: str) -> None:
    migrate.check(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "marker",
    [
        "CREATE TABLE lock_grants",  # revision 2, after revision 1's tables and a tasks batch change
        "UPDATE alembic_version",  # the second revision recorded, its DDL all sent
    ],
)
def test_an_upgrade_killed_part_way_leaves_the_previous_revision_and_upgrades_later(empty_url, marker):
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, empty_url, marker],
        check=False,
        env=_env(),
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]

    assert migrate.current_revision(empty_url) is None
    assert _tables(empty_url) == set()  # nothing of the cut-off upgrade stayed

    assert migrate.upgrade(empty_url) == migrate.head_revision()
    _assert_at_head_with_exactly_the_models(empty_url)


def test_an_upgrade_killed_in_a_later_revision_keeps_the_earlier_one(empty_url):
    """A database at revision 2 whose upgrade is cut off after a batch table copy (revision 3) stays at revision 2."""
    migrate.upgrade(empty_url, "0002")
    before = _tables(empty_url)
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, empty_url, "CREATE TABLE db_owner"],
        check=False,
        env=_env(),
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    assert migrate.current_revision(empty_url) == "0002"
    assert _tables(empty_url) == before

    assert migrate.upgrade(empty_url) == migrate.head_revision()
    _assert_at_head_with_exactly_the_models(empty_url)


def test_processes_upgrading_one_fresh_database_at_once_all_end_at_head(empty_url):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADER, empty_url],
            env=_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for p in procs:  # all are up and imported before any starts
        p.stdin.write(b"go\n")
    for p in procs:
        p.stdin.flush()
    head = migrate.head_revision()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
        assert out.decode().strip() == head
    _assert_at_head_with_exactly_the_models(empty_url)
