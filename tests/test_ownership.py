"""One database, one runtime: owner, lease, owner epochs and takeovers (SQLite and PostgreSQL).

Store-level tests drive ``Store.claim`` directly, as the scheduler, lock manager and relay do
when they start; the runtime tests at the end show the same rules through ``connect``.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
import ray
import sqlalchemy as sa

import omoi_ray as omoi
from omoi_ray.core.ownership import Claim, OwnerId, Ownership, decide
from omoi_ray.errors import ConfigurationError, DatabaseOwnedError, OwnershipLostError
from omoi_ray.naming import EVENTS_NAME, LOCKS_NAME, SCHEDULER_NAME
from omoi_ray.store import ownership
from omoi_ray.store import schema as t
from omoi_ray.store.store import Store
from tests.conftest import make_settings
from tests.graph_harness import Harness, spec

A = OwnerId("rt-a", "a" * 56)
B = OwnerId("rt-b", "b" * 56)


def _task_count(store: Store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(t.tasks)).scalar()


_SEQ = iter(range(1, 10**9, 10))


def _some_changes(prefix: str):
    h = Harness()
    h.graph.next_seq = next(_SEQ)  # unique ``seq`` across the graphs of one test
    h.submit(spec(f"{prefix}-1"), spec(f"{prefix}-2"))
    return h.graph.take_changes()


# ------------------------------------------------------------------ the rule, as data


def test_decide_covers_every_case():
    now = 1000.0
    live = Ownership(A, since=900.0, lease_expires_at=now + 5)
    lapsed = Ownership(A, since=900.0, lease_expires_at=now - 0.001)
    assert decide(None, A, now) is Claim.NEW_OWNER
    assert decide(live, A, now) is Claim.SAME_OWNER
    assert decide(lapsed, A, now) is Claim.SAME_OWNER
    assert decide(live, B, now) is Claim.REFUSED
    assert decide(lapsed, B, now) is Claim.NEW_OWNER
    # same namespace on another Ray cluster is another runtime
    assert decide(live, OwnerId("rt-a", "c" * 56), now) is Claim.REFUSED


# ------------------------------------------------------------------ store level, both backends


def test_a_restarted_writer_takes_over_at_once_and_the_zombie_commits_nothing(db_url):
    old, new = Store(db_url), Store(db_url)
    try:
        assert old.claim("scheduler", A, lease=30) is Claim.NEW_OWNER
        old.apply(_some_changes("before"))
        assert new.claim("scheduler", A, lease=30) is Claim.SAME_OWNER  # live lease: same owner
        assert new.fence.owner_epoch == old.fence.owner_epoch + 1
        with pytest.raises(OwnershipLostError) as err:
            old.apply(_some_changes("zombie"))
        assert "scheduler" in str(err.value) and "owner epoch" in str(err.value)
        assert _task_count(new) == 2  # the zombie's batch rolled back as a whole
        new.apply(_some_changes("after"))
        assert _task_count(new) == 4
        with pytest.raises(OwnershipLostError):
            old.renew_lease(30)
    finally:
        old.dispose()
        new.dispose()


def test_each_writer_has_its_own_epoch_so_one_restart_fences_only_that_writer(db_url):
    scheduler, locks, locks_again = Store(db_url), Store(db_url), Store(db_url)
    try:
        scheduler.claim("scheduler", A, lease=30)
        locks.claim("locks", A, lease=30)
        locks_again.claim("locks", A, lease=30)
        scheduler.apply(_some_changes("s"))  # the scheduler is untouched by the locks restart
        with pytest.raises(OwnershipLostError):
            locks.apply(_some_changes("l"))
        assert _task_count(scheduler) == 2
    finally:
        for s in (scheduler, locks, locks_again):
            s.dispose()


def test_another_live_owner_is_refused_with_an_error_naming_it(db_url):
    a, b = Store(db_url), Store(db_url)
    try:
        a.claim("scheduler", A, lease=30)
        before = ownership.read(a.engine)
        with pytest.raises(DatabaseOwnedError) as err:
            b.claim("scheduler", B, lease=30)
        assert isinstance(err.value, ConfigurationError)
        message = str(err.value)
        assert "namespace 'rt-a'" in message and A.cluster_id in message and "owner since" in message
        assert "omoi-ray db takeover" in message and "retry after its lease lapses" in message
        assert re.search(r"whose lease is live for \d+s more", message)
        assert (err.value.owner_namespace, err.value.owner_cluster_id) == (A.namespace, A.cluster_id)
        assert ownership.read(a.engine) == before  # nothing changed
        with pytest.raises(DatabaseOwnedError):
            ownership.check_free(b.engine, B, "the database")
        a.apply(_some_changes("a"))  # the owner keeps working
    finally:
        a.dispose()
        b.dispose()


def test_an_owner_whose_lease_lapsed_is_taken_over_and_fenced(db_url):
    a, a_locks, b = Store(db_url), Store(db_url), Store(db_url)
    try:
        a.claim("scheduler", A, lease=0.2)
        a_locks.claim("locks", A, lease=0.2)
        deadline = time.monotonic() + 10
        while ownership.read(a.engine).live(time.time()):  # lapses 0.2 s after the claim
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert b.claim("scheduler", B, lease=30) is Claim.NEW_OWNER
        assert ownership.read(b.engine).owner == B
        for zombie in (a, a_locks):  # every writer of the old owner is fenced, not just one
            with pytest.raises(OwnershipLostError):
                zombie.apply(_some_changes(uuid.uuid4().hex[:6]))
        with pytest.raises(OwnershipLostError):
            a.renew_lease(30)
        b.apply(_some_changes("b"))
        assert _task_count(b) == 2
    finally:
        for s in (a, a_locks, b):
            s.dispose()


def test_takeover_frees_a_live_owners_database_at_once_and_fences_it(db_url):
    a, b = Store(db_url), Store(db_url)
    try:
        a.claim("scheduler", A, lease=3600)
        removed = ownership.takeover(a.engine)
        assert removed is not None and removed.owner == A
        assert ownership.read(a.engine) is None
        with pytest.raises(OwnershipLostError):
            a.apply(_some_changes("a"))
        assert b.claim("scheduler", B, lease=30) is Claim.NEW_OWNER
        assert ownership.takeover(b.engine).owner == B
        assert ownership.takeover(b.engine) is None  # unowned: nothing to remove
    finally:
        a.dispose()
        b.dispose()


def test_renew_extends_the_lease_and_release_ends_it(db_url):
    a, b = Store(db_url), Store(db_url)
    try:
        a.claim("scheduler", A, lease=1)
        first = ownership.read(a.engine).lease_expires_at
        assert a.renew_lease(60) > first
        assert ownership.read(a.engine).lease_expires_at > first + 30
        assert a.release()
        assert b.claim("scheduler", B, lease=30) is Claim.NEW_OWNER  # released: at once
        assert not a.release()  # no longer its to release
    finally:
        a.dispose()
        b.dispose()


def test_a_replaced_relay_saves_no_cursor_and_prunes_nothing(db_url):
    from omoi_ray.specs.events import Position
    from omoi_ray.store.events import EventLog

    engine = sa.create_engine(db_url)
    try:
        old, new = EventLog(engine), EventLog(engine)
        old.fence, _ = ownership.claim(engine, "events", A, 30, "the database")
        old.save_cursor("redis", Position(0, 5))
        new.fence, _ = ownership.claim(engine, "events", A, 30, "the database")
        with pytest.raises(OwnershipLostError):
            old.save_cursor("redis", Position(0, 9))
        with pytest.raises(OwnershipLostError):
            old.prune(time.time() + 3600)
        assert new.load_cursor("redis") == Position(0, 5)
        new.save_cursor("redis", Position(0, 9))
        assert new.load_cursor("redis") == Position(0, 9)
    finally:
        engine.dispose()


def test_a_replaced_scheduler_prunes_no_threads(db_url):
    from omoi_ray.core.model import Thread, ThreadStatus
    from omoi_ray.core.task_changes import TaskChanges

    old, new = Store(db_url), Store(db_url)
    try:
        old.claim("scheduler", A, lease=30)
        now = time.time()
        closed = Thread("closed", "x", ("a", "b"), now - 100, now - 100, ThreadStatus.RESOLVED, closed_at=now - 50)
        old.apply(TaskChanges(threads=[closed]))
        new.claim("scheduler", A, lease=30)  # the restart: ``old`` is a zombie now
        with pytest.raises(OwnershipLostError):
            old.prune_threads(now - 10)
        assert set(new.thread_rows(["closed"])) == {"closed"}  # nothing deleted
        assert new.prune_threads(now - 10) == 1  # the live scheduler prunes as before
    finally:
        old.dispose()
        new.dispose()


def test_a_database_without_the_ownership_tables_is_unowned(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = sa.create_engine(url)
    try:
        assert ownership.read(engine) is None
        ownership.check_free(engine, A, "the database")
        assert not (tmp_path / "empty.db").exists() or not sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


# ------------------------------------------------------------------ through connect (Ray)

FOREIGN = OwnerId("elsewhere", "f" * 56)  # a runtime on another Ray cluster


def _no_actors_in(namespace: str) -> bool:
    """No scheduler, lock manager or event relay runs in ``namespace``."""
    for name in (SCHEDULER_NAME, LOCKS_NAME, EVENTS_NAME):
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            continue
        return False
    return True


def _fresh_settings(request, backend, tmp_path, **overrides):
    """Settings of a new namespace on a new database of the backend (migrated to head)."""
    from omoi_ray.store import migrate

    name, _ = backend
    url = request.getfixturevalue("pg_schemas").migrated() if name == "postgres" else None
    settings = make_settings(tmp_path, url, f"own-{uuid.uuid4().hex[:8]}", **overrides)
    migrate.upgrade(settings.resolved_database_url())
    return settings


def _claim_for(settings, owner: OwnerId, lease: float) -> None:
    store = Store(settings.resolved_database_url())
    try:
        store.claim("scheduler", owner, lease)
    finally:
        store.dispose()


def test_a_second_runtime_on_a_live_runtimes_database_is_refused_and_changes_nothing(runtime, backend, tmp_path):
    _, url = backend
    cap = f"owned-{uuid.uuid4().hex[:6]}"
    owners_agent = runtime.spawn_agent(cap, capabilities=[cap], handler="tests.handlers:behave")
    before = runtime.status()
    pid = runtime.describe()["pid"]
    intruder = make_settings(runtime.settings.home, url, f"intruder-{uuid.uuid4().hex[:6]}")
    assert intruder.resolved_database_url() == runtime.settings.resolved_database_url()
    with pytest.raises(DatabaseOwnedError) as err:
        omoi.connect(intruder, migrate=True)
    assert type(err.value) is DatabaseOwnedError
    message = str(err.value)
    assert f"namespace '{runtime.settings.namespace}'" in message and "owner since" in message
    assert _no_actors_in(intruder.namespace)  # no scheduler marked the owner's agents lost
    alive_before = {a.id for a in before.agents if a.status == "alive"}
    alive_after = {a.id for a in runtime.status().agents if a.status == "alive"}
    assert owners_agent.name in alive_before and alive_before <= alive_after
    for agent_id in alive_before:
        assert "agent.lost" not in [e.type for e in runtime.events(agent_id)]
    assert runtime.describe()["pid"] == pid  # the owner's scheduler never restarted
    task = omoi.TaskSpec(id=f"{cap}-t", type="behave", requires=[cap], payload={"op": "echo"})
    assert runtime.run([task], timeout=60)[task.id].status == "completed"  # the owner keeps working
    owners_agent.stop(timeout=2)


def test_the_singletons_refuse_another_runtimes_database_themselves(request, ray_session, backend, tmp_path,
                                                                   monkeypatch):
    """A driver that raced the owner past its own check still gets the typed refusal: each
    singleton claims the database when it starts."""
    import omoi_ray.client.runtime as runtime_module

    settings = _fresh_settings(request, backend, tmp_path)
    _claim_for(settings, FOREIGN, lease=3600)
    monkeypatch.setattr(runtime_module, "_check_owner", lambda settings, url: None)
    with pytest.raises(DatabaseOwnedError) as err:
        omoi.connect(settings)
    assert type(err.value) is DatabaseOwnedError and "namespace 'elsewhere'" in str(err.value)
    assert _no_actors_in(settings.namespace)
    engine = sa.create_engine(settings.resolved_database_url())
    try:
        assert ownership.read(engine).owner == FOREIGN  # the owner is untouched
    finally:
        engine.dispose()


def test_a_refused_driver_does_not_migrate_the_other_runtimes_database(request, ray_session, backend, tmp_path):
    from alembic import command

    from omoi_ray.store import migrate

    settings = _fresh_settings(request, backend, tmp_path)
    url = settings.resolved_database_url()
    _claim_for(settings, FOREIGN, lease=3600)
    command.stamp(migrate.alembic_config(url), "0003")  # as if the owner ran an older omoi-ray
    with pytest.raises(DatabaseOwnedError, match="namespace 'elsewhere'"):
        omoi.connect(settings, migrate=True)
    assert migrate.current_revision(url) == "0003"  # untouched
    assert _no_actors_in(settings.namespace)


def test_an_owner_whose_lease_lapsed_is_taken_over_by_the_next_runtime(request, ray_session, backend, tmp_path):
    settings = _fresh_settings(request, backend, tmp_path, lease_ttl=6.0, long_poll=5.0)
    _claim_for(settings, FOREIGN, lease=1.0)
    engine = sa.create_engine(settings.resolved_database_url())
    try:
        deadline = time.monotonic() + 30
        while ownership.read(engine).live(time.time()):  # the foreign cluster is gone: no renewal
            assert time.monotonic() < deadline
            time.sleep(0.1)
        rt = omoi.connect(settings)
        try:
            owner = ownership.read(engine)
            assert owner.owner.namespace == settings.namespace and owner.live(time.time())
            assert rt.status().tasks == {}
        finally:
            rt.shutdown(agents_timeout=1.0)
        assert not ownership.read(engine).live(time.time())  # a clean shutdown releases the lease
    finally:
        engine.dispose()


def test_db_takeover_frees_a_database_whose_owner_is_gone_at_once(request, ray_session, backend, tmp_path, capsys):
    from omoi_ray.cli import main

    settings = _fresh_settings(request, backend, tmp_path, lease_ttl=6.0, long_poll=5.0)
    _claim_for(settings, FOREIGN, lease=3600)
    with pytest.raises(DatabaseOwnedError):
        omoi.connect(settings)
    argv = ["db", "takeover", "--home", str(tmp_path)]
    if settings.database_url is not None:
        argv += ["--db", settings.database_url.get_secret_value()]
    assert main(argv) == 0
    assert "namespace 'elsewhere'" in capsys.readouterr().out
    rt = omoi.connect(settings)
    try:
        assert rt.status().tasks == {}
    finally:
        rt.shutdown(agents_timeout=1.0)


def test_a_replaced_scheduler_commits_nothing_and_its_restart_takes_over_at_once(
    request, ray_session, backend, tmp_path
):
    from omoi_ray.actors.scheduler import SchedulerActor

    from omoi_ray.errors import RuntimeUnavailableError, TaskNotFoundError

    settings = _fresh_settings(request, backend, tmp_path, lease_ttl=6.0, long_poll=5.0)
    rt = omoi.connect(settings)
    try:
        first = rt.describe()
        first_pid = first["pid"]
        # A second scheduler process of the same runtime (as Ray would start after losing track
        # of the first): it takes over at once, and the first one becomes a zombie.
        rogue = ray.remote(SchedulerActor).options(
            name="rogue-scheduler", namespace=settings.namespace, num_cpus=0, max_restarts=0,
        ).remote(settings)
        assert ray.get(rogue.describe.remote(), timeout=60)["pid"] != first_pid
        task = omoi.TaskSpec(id=f"z-{uuid.uuid4().hex[:8]}", type="nobody-runs-this")
        try:  # the zombie's commit is refused: it exits, and Ray restarts it
            rt.submit([task])
        except RuntimeUnavailableError:
            rt.submit([task])  # the same ids: idempotent
        described = rt.describe()
        assert described["pid"] != first_pid and described["restarted"]
        assert described["owner_epoch"] == first["owner_epoch"] + 2  # the rogue's claim, then its own
        assert rt.get(task.id).status == "ready"
        # The restarted scheduler took over in turn: now the rogue is the zombie.
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(rogue.submit.remote([{"id": "rogue-task", "type": "x"}]), timeout=60)
        with pytest.raises(TaskNotFoundError):
            rt.get("rogue-task")
        assert [e.type for e in rt.events(task.id)].count("task.created") == 1
    finally:
        rt.shutdown(agents_timeout=1.0)


def test_a_singleton_that_cannot_start_raises_its_typed_error_and_is_ended(
    request, ray_session, tmp_path, monkeypatch
):
    from omoi_ray.errors import DatabaseNotMigratedError
    from omoi_ray.store import migrate

    # The driver sees a migrated database; the actors see an empty one (as an actor on another
    # node would open its own SQLite file there).
    settings = make_settings(tmp_path, None, f"unmigrated-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(migrate, "check", lambda url: None)
    with pytest.raises(DatabaseNotMigratedError) as err:
        omoi.connect(settings)
    assert type(err.value) is DatabaseNotMigratedError  # the plain typed error, not Ray's wrapper
    assert str(err.value).startswith("the database sqlite:///") and "omoi-ray db upgrade" in str(err.value)
    assert _no_actors_in(settings.namespace)  # ended, so the next connect starts them afresh


def test_on_sqlite_the_singletons_are_pinned_to_the_drivers_node(ray_session):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from omoi_ray.client.runtime import _placement

    strategy = _placement("sqlite:////tmp/x/omoi.db")["scheduling_strategy"]
    assert isinstance(strategy, NodeAffinitySchedulingStrategy)
    assert strategy.node_id == ray.get_runtime_context().get_node_id()
    assert strategy.soft is False
    assert _placement("postgresql+psycopg://u@h/db") == {}


def test_a_driver_whose_local_ray_ends_with_it_leaves_the_database_free_at_once(tmp_path):
    """A script that starts its own Ray and exits without ``shutdown()``: the next runtime (on
    a new local cluster) need not wait for the lease to lapse."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = dict(os.environ, OMOI_HOME=str(tmp_path), OMOI_NAMESPACE="exits", OMOI_OWNER_LEASE="3600",
               PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled")
    env.pop("OMOI_DATABASE_URL", None)
    env.pop("RAY_ADDRESS", None)
    script = (
        "import omoi_ray as omoi\n"
        "rt = omoi.connect(migrate=True, ray_init={'num_cpus': 1, 'include_dashboard': False})\n"
        "print(rt.status().namespace)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'omoi.db'}")
    try:
        owner = ownership.read(engine)
        assert owner.owner.namespace == "exits" and not owner.live(time.time())
    finally:
        engine.dispose()
