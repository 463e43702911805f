"""The store on SQLite and PostgreSQL: schema, idempotent writes, and rebuilding the scheduler."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from omoi_ray.core.model import AttemptOutcome
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.core.tasks import TaskStatus
from omoi_ray.errors import DatabaseNotMigratedError
from omoi_ray.store import migrate
from omoi_ray.store.schema import Base
from omoi_ray.store.store import Store
from omoi_ray.store.writes import Mark, is_permanent_error
from tests.graph_harness import Harness, spec


def test_migrations_build_exactly_the_models(db_url):
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []
    engine.dispose()
    migrate.check(db_url)


def test_a_database_behind_the_code_is_refused_with_the_command_to_run(db_url):
    command.downgrade(migrate.alembic_config(db_url), "base")
    with pytest.raises(DatabaseNotMigratedError) as err:
        migrate.check(db_url)
    assert "omoi-ray db upgrade" in str(err.value)
    assert migrate.upgrade(db_url) == migrate.head_revision()
    migrate.check(db_url)


def _run_some_work(h: Harness) -> None:
    h.submit(spec("a"), spec("b", "a"), spec("c", max_retries=0), spec("d", "c"), spec("e"), spec("f", key="k-f"))
    ag = h.agent(capacity=4)
    h.claim(ag)  # a, c, e, f
    h.run(ag, "a", result={"rows": 3, "name": "α"})
    h.run(ag, "c", outcome=AttemptOutcome.PERMANENT_FAILURE, error="PermanentError: no")
    h.start(ag, "e")


def test_changes_round_trip_through_a_restart(db_url):
    store = Store(db_url)
    h = Harness()
    _run_some_work(h)
    store.apply(h.graph.take_changes())

    snap = store.load()
    rebuilt = TaskGraph(lease_ttl=30.0, rng=random.Random(1))
    rebuilt.restore(snap.tasks, snap.dependencies, snap.agents, snap.open_attempts, snap.next_seq, h.now)
    assert {tid: task.status for tid, task in rebuilt.tasks.items()} == {
        tid: task.status for tid, task in h.graph.tasks.items()
    }
    assert rebuilt.tasks["e"].status is TaskStatus.RUNNING
    assert set(rebuilt.agents["a1"].busy) == {("e", 1), ("f", 1)}
    assert rebuilt.next_seq == h.graph.next_seq
    assert rebuilt.by_key == {"k-f": "f"}
    assert "b" in rebuilt.ready and "e" not in rebuilt.ready

    rows = store.task_rows(["a", "d"])
    assert rows["a"]["result"] == {"rows": 3, "name": "α"} and rows["a"]["status"] == "completed"
    assert rows["d"]["status"] == "upstream_failed" and rows["d"]["reason"] == "upstream task 'c' failed"
    attempts = store.attempt_rows("c")
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "permanent_failure")]
    store.dispose()


def test_a_cancelled_task_still_running_keeps_its_declared_locks_across_a_restart(db_url):
    import dataclasses

    store = Store(db_url)
    h = Harness()
    agent = h.agent()
    h.submit(dataclasses.replace(spec("x"), locks=(("file", "shared.txt", "exclusive"),)))
    assert h.claim(agent) == ["x"]
    h.start(agent, "x")
    h.graph.cancel("x", h.now)  # its handler is still running: the slot and the lock stay taken
    assert h.graph.lock_usage == {("file", "shared.txt"): [1, 0]}
    store.apply(h.graph.take_changes())

    snap = store.load()
    rebuilt = TaskGraph(lease_ttl=30.0, rng=random.Random(1))
    rebuilt.restore(snap.tasks, snap.dependencies, snap.agents, snap.open_attempts, snap.next_seq, h.now)
    assert rebuilt.lock_usage == {("file", "shared.txt"): [1, 0]}
    store.dispose()


def test_a_commit_mark_tells_whether_a_batch_committed(db_url):
    store = Store(db_url)
    h = Harness()
    _run_some_work(h)
    mark = Mark("scheduler", "epoch-1", 7)
    assert not store.committed(mark)
    store.apply(h.graph.take_changes(), mark)
    assert store.committed(mark)
    assert not store.committed(mark._replace(batch=8))
    assert not store.committed(mark._replace(epoch="epoch-2"))
    store.dispose()


def test_a_failed_transaction_leaves_nothing_behind(db_url):
    store = Store(db_url)
    h = Harness()
    _run_some_work(h)
    prepared = store.prepare(h.graph.take_changes())
    broken = [(name, [dict(r, type=None) if name == "event" else r for r in rows]) for name, rows in prepared]
    with pytest.raises(Exception) as err:
        store.write(broken, Mark("scheduler", "e", 1))
    assert is_permanent_error(err.value)  # so a writer gives up instead of retrying it
    assert not store.committed(Mark("scheduler", "e", 1))
    assert store.status_counts() == {}
    store.write(prepared, Mark("scheduler", "e", 1))
    assert store.status_counts() == {"completed": 1, "failed": 1, "upstream_failed": 1, "running": 1, "claimed": 1, "ready": 1}
    store.dispose()


def test_events_are_written_with_the_change_they_describe(db_url):
    store = Store(db_url)
    h = Harness()
    _run_some_work(h)
    store.apply(h.graph.take_changes())
    types = [e.type for e in store.events_of("a")]
    assert types == ["task.created", "task.ready", "task.claimed", "task.started", "task.completed"]
    assert [e.type for e in store.events_of("a1")] == ["agent.registered"]
    store.dispose()


def test_lookup_by_id_and_idempotency_key(db_url):
    store = Store(db_url)
    h = Harness()
    _run_some_work(h)
    store.apply(h.graph.take_changes())
    by_id, by_key = store.lookup(["a", "nope"], ["k-f", "k-none"])
    assert set(by_id) == {"a"} and by_id["a"].status is TaskStatus.COMPLETED
    assert by_key["k-f"].id == "f" and by_key["k-f"].status is TaskStatus.CLAIMED
    store.dispose()


def test_many_tasks_are_written_in_one_batch(db_url):
    store = Store(db_url)
    h = Harness()
    n = 3000
    h.submit(*[spec(f"t{i}", *([f"t{i-1}"] if i else [])) for i in range(n)])
    store.apply(h.graph.take_changes())
    assert store.status_counts() == {"ready": 1, "pending": n - 1}
    store.dispose()


def test_prepared_rows_are_a_snapshot_that_later_changes_do_not_move(db_url):
    store = Store(db_url)
    h = Harness()
    h.submit(spec("a"))
    prepared = store.prepare(h.graph.take_changes())
    h.claim(h.agent())  # the live task moves on before the write
    store.write(prepared)
    assert store.task_rows(["a"])["a"]["status"] == "ready"
    store.dispose()


def test_a_stored_pending_loop_whose_check_completed_is_judged_after_a_restart(db_url):
    """Rows as older code could leave them: the loop's check completed (and left memory), the
    loop still pending, unjudged. The restarted scheduler starts the next round, and what it
    commits is what the next restart reads."""
    from omoi_ray.specs.coordination import LoopSpec, SyncSpec, read_specs

    store = Store(db_url)
    h = Harness()
    h.graph = TaskGraph(lease_ttl=30.0, rng=random.Random(1), read_specs=read_specs(10_000))
    loop = LoopSpec(id="L", check="review", until={"key": "verdict", "equals": "approve"}, max_rounds=3,
                    body=[{"id": "review", "type": "t"}]).to_new_tasks()[0]
    approved = LoopSpec(id="A", check="ok", until={"key": "verdict", "equals": "approve"}, max_rounds=3,
                        body=[{"id": "ok", "type": "t"}]).to_new_tasks()[0]
    sync = SyncSpec(id="S", members=["ok", "other"], k=2).to_new_tasks()[0]
    h.submit(spec("review"), loop, spec("ok"), approved, spec("ship", "A"), spec("other"), sync)
    store.apply(h.graph.take_changes())
    with store.engine.begin() as conn:  # the checks completed; the loops' decisions were never written
        for tid, verdict in (("review", "changes"), ("ok", "approve")):
            conn.execute(sa.text("UPDATE tasks SET status = 'completed', result = :r WHERE id = :i"),
                         {"r": f'{{"verdict": "{verdict}"}}', "i": tid})
    # a restart reads the results of pending loops' current checks only (not a sync's members)
    assert store.load().node_results == {"review": {"verdict": "changes"}, "ok": {"verdict": "approve"}}

    def restart() -> TaskGraph:
        snap = store.load()
        g = TaskGraph(lease_ttl=30.0, rng=random.Random(1), read_specs=read_specs(10_000))
        g.restore(snap.tasks, snap.dependencies, snap.agents, snap.open_attempts, snap.next_seq, h.now,
                  stored_results=snap.node_results)
        return g

    g = restart()
    assert g.tasks["L"].coordination["round"] == 2 and g.tasks["L.r2.review"].status is TaskStatus.READY
    assert "A" not in g.tasks and g.tasks["ship"].status is TaskStatus.READY  # approved: completed
    store.apply(g.take_changes())
    assert store.task_rows(["A"])["A"]["result"] == {"outcome": "approved", "rounds": 1, "last": {"verdict": "approve"}}
    again = restart()
    assert again.tasks["L"].coordination == g.tasks["L"].coordination and again.tasks["L"].waiting_on == 1
    assert set(again.tasks) == {"L", "L.r2.review", "ship", "other", "S"} and not again.take_changes().created
    assert store.load().node_results == {}  # "review" is an earlier check of L now
    store.dispose()
