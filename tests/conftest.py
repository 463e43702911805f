"""Shared fixtures: databases on SQLite and PostgreSQL, one Ray instance, runtimes per backend.

- PostgreSQL tests use ``OMOI_TEST_DATABASE_URL``; each test (or runtime) gets its own schema,
  dropped afterwards. Without the variable they skip with a reason, unless
  ``OMOI_REQUIRE_SERVICES=1`` (CI), where a missing service fails the run.
- A database that only needs to be at head is a copy of one migrated once per session (a SQLite
  file copied, a PostgreSQL database created from a template): upgrading each one anew cost
  seconds per test on PostgreSQL. Migrations themselves are tested in test_migrate_safety.py.
- Ray starts once per session (``ray.init`` costs ~5 s here); workers can import ``tests.*``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("OMOI_REQUIRE_SERVICES") == "1"
TEST_NAMESPACE = "omoi-tests"


def _pg_base_url() -> str | None:
    url = os.environ.get("OMOI_TEST_DATABASE_URL")
    if not url:
        if REQUIRE_SERVICES:
            pytest.fail("OMOI_REQUIRE_SERVICES=1 but OMOI_TEST_DATABASE_URL is not set")
        pytest.skip("PostgreSQL tests need OMOI_TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    return url


class PgSchemas:
    """Creates throwaway schemas and URLs that put them first on the search path."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.engine = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            message = f"PostgreSQL at OMOI_TEST_DATABASE_URL is not reachable: {str(exc).splitlines()[0]}"
            if REQUIRE_SERVICES:
                pytest.fail(message)
            pytest.skip(message)
        self.created: list[str] = []  # schemas
        self.databases: list[str] = []  # databases, the template first
        self.template: str | None = None

    def new(self) -> str:
        name = f"omoi_test_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        self.created.append(name)
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}options=-csearch_path%3D{name}"

    def migrated(self) -> str:
        """The URL of a new database at the migrations' head: a copy of a template database
        migrated once (``CREATE DATABASE ... TEMPLATE`` copies it in a fraction of a second)."""
        from omoi_ray.store import migrate

        if self.template is None:
            template = f"omoi_template_{uuid.uuid4().hex[:12]}"
            with self.engine.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{template}"'))
            self.databases.append(template)
            migrate.upgrade(self._database_url(template))  # leaves no connection open
            self.template = template
        name = f"omoi_test_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.databases.append(name)
        return self._database_url(name)

    def _database_url(self, name: str) -> str:
        return sa.engine.make_url(self.base_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        """Drop what ``new`` or ``migrated`` made for ``url``."""
        if "%3D" in url:
            name = url.rsplit("%3D", 1)[1]
            with self.engine.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            self.created.remove(name)
            return
        name = sa.engine.make_url(url).database
        self._drop_database(name)
        self.databases.remove(name)

    def _drop_database(self, name: str) -> None:
        with self.engine.connect() as conn:  # FORCE: a test's leftover pooled connections end too
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        for name in list(self.created):
            with self.engine.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        for name in reversed(self.databases):  # the template last
            self._drop_database(name)
        self.engine.dispose()


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[PgSchemas]:
    schemas = PgSchemas(_pg_base_url())  # type: ignore[arg-type]
    yield schemas
    schemas.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session, for ``migrated_sqlite`` to copy."""
    from omoi_ray.store import migrate

    path = tmp_path_factory.mktemp("sqlite-template") / "omoi.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


def migrated_sqlite(template: Path, path: Path) -> str:
    """The URL of ``path``, a copy of the migrated ``template`` (SQLite's backup API: a
    consistent copy whatever its journal holds)."""
    import sqlite3

    source, target = sqlite3.connect(template), sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend, migrated to head."""
    if request.param == "sqlite":
        yield migrated_sqlite(request.getfixturevalue("sqlite_template"), tmp_path / "omoi.db")
        return
    schemas: PgSchemas = request.getfixturevalue("pg_schemas")
    url = schemas.migrated()
    yield url
    schemas.drop(url)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            namespace=TEST_NAMESPACE,
            object_store_memory=150 * 1024 * 1024,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        )
    yield
    ray.shutdown()


def make_settings(tmp: Path, url: str | None, namespace: str, **overrides):
    from pydantic import SecretStr

    from omoi_ray.settings import Settings

    return Settings(
        home=tmp,
        database_url=SecretStr(url) if url else None,
        namespace=namespace,
        **overrides,
    )


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str | None]]:
    """("sqlite", None) or ("postgres", url of a fresh schema) for session-long runtimes."""
    if request.param == "sqlite":
        yield "sqlite", None
        return
    schemas: PgSchemas = request.getfixturevalue("pg_schemas")
    url = schemas.new()
    yield "postgres", url


@pytest.fixture(scope="session")
def runtime(ray_session: None, backend: tuple[str, str | None], tmp_path_factory: pytest.TempPathFactory):
    """A runtime shared by the end-to-end tests of one backend, with its own namespace."""
    import omoi_ray as omoi

    name, url = backend
    home = tmp_path_factory.mktemp(f"home-{name}")
    settings = make_settings(home, url, f"e2e-{name}-{uuid.uuid4().hex[:6]}", lease_ttl=6.0, long_poll=5.0)
    rt = omoi.connect(settings, migrate=True)
    yield rt
    rt.shutdown(agents_timeout=2.0)


@pytest.fixture
def own_runtime(request: pytest.FixtureRequest, ray_session: None, backend: tuple[str, str | None], tmp_path: Path):
    """A runtime with its own namespace and its own database (one scheduler per database), for
    tests that kill its singletons or agents."""
    import omoi_ray as omoi

    name, _ = backend
    url = request.getfixturevalue("pg_schemas").migrated() if name == "postgres" else None
    settings = make_settings(tmp_path, url, f"own-{uuid.uuid4().hex[:8]}", lease_ttl=6.0, long_poll=5.0)
    rt = omoi.connect(settings, migrate=True)
    yield rt
    rt.shutdown(agents_timeout=2.0)


def until(condition, what: str = "the condition", timeout: float = 60.0):
    """Poll ``condition`` until it returns something truthy, and return that; fail after
    ``timeout`` seconds naming ``what``. For states a test can only observe by asking (each look
    is one call), never as a wait for "long enough"."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@pytest.fixture
def uid() -> str:
    """A short unique prefix for task ids, so tests sharing a runtime never collide."""
    return uuid.uuid4().hex[:8]


# --------------------------------------------------------------------------------- Redis


def _redis_base_url() -> str:
    url = os.environ.get("OMOI_TEST_REDIS_URL")
    if not url:
        if REQUIRE_SERVICES:
            pytest.fail("OMOI_REQUIRE_SERVICES=1 but OMOI_TEST_REDIS_URL is not set")
        pytest.skip("Redis tests need OMOI_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis at OMOI_TEST_REDIS_URL is not reachable: {exc}"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()
    return url


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    """(Redis URL, a fresh key prefix); every key under the prefix is deleted afterwards."""
    import redis

    url = _redis_base_url()
    prefix = f"omoi-test-{uuid.uuid4().hex[:10]}"
    yield url, prefix
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


class RedisServer:
    """A redis-server of the test's own, on a free port, that a test may stop and start again
    (empty: nothing is saved)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        import socket

        self.binary = binary
        self.workdir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self) -> None:
        import subprocess

        import redis

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None:
                        raise RuntimeError(f"redis-server exited with {self.process.returncode}") from None
                    import time

                    time.sleep(0.02)  # the server is starting: nothing to await but its socket
            raise RuntimeError("redis-server did not answer within 4 s")
        finally:
            client.close()

    def stop(self) -> None:
        """``SHUTDOWN NOSAVE``: Redis dies and forgets everything."""
        if self.process is None:
            return
        import redis

        try:
            redis.Redis(port=self.port, socket_connect_timeout=1).shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the expected answer to SHUTDOWN
        try:
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        if REQUIRE_SERVICES:
            pytest.fail("OMOI_REQUIRE_SERVICES=1 but redis-server is not on PATH")
        pytest.skip("this test starts its own redis-server, which is not on PATH")
    server = RedisServer(binary, tmp_path)
    server.start()
    yield server
    server.stop()
