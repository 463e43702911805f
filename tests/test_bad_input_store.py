"""What the runtime produces is stored, or fails its task with a recorded reason: it never takes
the scheduler down. The scheduler's intake cleans agents' reports; behind it, a batch that still
fails on its values is committed change set by change set and the tasks whose change cannot be
stored are failed, on SQLite and PostgreSQL (in process, and end to end on Ray)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from omoi_ray.actors.group_commit import GroupCommit
from omoi_ray.actors.scheduler import _intake, repair_unstorable

import omoi_ray as omoi
from omoi_ray.core.claims import Report
from omoi_ray.core.model import AttemptOutcome, Event
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.core.storable import MAX_ERROR_CHARS
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.specs.coordination import LoopSpec, read_specs
from omoi_ray.store.store import Store
from omoi_ray.store.writes import is_data_error
from tests.graph_harness import spec

# --------------------------------------------------------------------------- the intake


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _finished(outcome=AttemptOutcome.COMPLETED, result=None, error=None) -> Report:
    return Report("finished", "t", 1, outcome, result, error)


@pytest.mark.parametrize(
    "result,problem",
    [
        ({"text": "a\x00b"}, "result['text'] holds the unstorable character '\\x00'"),
        ({"a\x00": 1}, "result has a key holding the unstorable character '\\x00'"),
        (["\ud800"], "result[0] holds the unstorable character '\\ud800'"),
        ({"x": float("nan")}, "result['x'] is nan; JSON numbers must be finite"),
        ([float("inf")], "result[0] is inf; JSON numbers must be finite"),
        ({1: "a"}, "result has the key 1; JSON object keys must be strings"),
        ({"s": {1, 2}}, "result['s'] is a set, which is not JSON"),
        (b"bytes", "result is a bytes, which is not JSON"),
        (_nested(65), "result is nested more than 64 levels deep"),
        ("x" * 2000, "2002 bytes of JSON, over the limit of 1000 (OMOI_RESULT_MAX_BYTES)"),
    ],
    ids=["nul", "nul-key", "surrogate", "nan", "inf", "int-key", "set", "bytes", "deep", "big"],
)
def test_a_result_that_cannot_be_stored_fails_its_attempt_for_good_saying_why(result, problem):
    [report] = _intake([_finished(result=result)], result_max_bytes=1000)
    assert report.outcome is AttemptOutcome.PERMANENT_FAILURE and report.result is None
    assert report.error == f"ResultNotSerializableError: task 't' returned a result that cannot be stored: {problem}"
    assert "\x00" not in report.error


@pytest.mark.parametrize(
    "error,cleaned",
    [
        ("boom\x00", "boom\ufffd"),
        ("line\nnext\ttab", "line\nnext\ttab"),
        ("\x1b[31mred\x1b[0m", "\ufffd[31mred\ufffd[0m"),
        ("half \ud800 pair", "half \ufffd pair"),
        ("x" * (MAX_ERROR_CHARS + 10), "x" * (MAX_ERROR_CHARS - 1) + "\u2026"),
    ],
    ids=["nul", "newlines-kept", "escape", "surrogate", "long"],
)
@pytest.mark.parametrize("outcome", [AttemptOutcome.FAILED, AttemptOutcome.PERMANENT_FAILURE, AttemptOutcome.TIMED_OUT])
def test_handler_error_text_is_cleaned_before_the_core_sees_it(error, cleaned, outcome):
    [report] = _intake([_finished(outcome, error=error)], result_max_bytes=1000)
    assert (report.outcome, report.error) == (outcome, cleaned)


def test_storable_reports_pass_the_intake_untouched():
    reports = [Report("started", "t", 1), _finished(result={"ok": [1, 2.5, None, True, "é"]}), _finished()]
    assert _intake(reports, result_max_bytes=1000) is reports


# ------------------------------------------------------------------ the backstop, in process


def _bad_text(url: str) -> str:
    # NUL is refused by PostgreSQL only (SQLite keeps it); a lone surrogate by both drivers.
    return "a\x00b" if url.startswith("postgresql") else "a\ud800b"


class _World:
    """A task graph, its store and its group commit, as the scheduler wires them."""

    def __init__(self, url: str) -> None:
        self.store = Store(url)
        self.graph = TaskGraph(lease_ttl=60, read_specs=read_specs(10_000))
        self.committed: list[TaskChanges] = []
        self.repairs: list[int] = []
        self.refused: dict[str, str] = {}
        self.commit: GroupCommit | None = None

    def _unstorable(self, changes, error, round_):
        self.repairs.append(round_)
        return repair_unstorable(self.graph, self.store, changes, error, round_, self.refused)

    async def start(self) -> None:
        self.commit = GroupCommit(self.store, self.committed.append, writer="test", on_unstorable=self._unstorable)

    def add(self) -> None:
        self.commit.add(self.graph.take_changes())

    def rows(self) -> dict[str, dict]:
        with self.store.engine.connect() as conn:
            return {r["id"]: dict(r) for r in conn.execute(sa.select(sa.table(
                "tasks", sa.column("id"), sa.column("status"), sa.column("reason"), sa.column("error"),
                sa.column("result"), sa.column("payload")))).mappings()}


def _poison(kind: str, graph: TaskGraph, agent, bad: str, now: float) -> None:
    task = graph.tasks["p"]
    if kind == "time":  # a time past year 9999: the rows cannot even be built
        task.started_at = 1e15
        graph.log.updated.add(task)
    elif kind == "text":  # refused by the database driver
        task.reason = bad
        graph.log.updated.add(task)
    elif kind == "event":  # an event payload the database refuses (PostgreSQL: JSONB)
        graph.log.events.add(Event("task.note", "task", "p", now, {"note": bad}, task_id="p"))
    elif kind == "result":  # a completion whose result slipped past the intake
        graph.apply_report(agent, Report("finished", "p", 1, AttemptOutcome.COMPLETED, {"r": bad}), now)
    elif kind == "too-long":  # PostgreSQL: a value too long for its column, which no rule here knows
        task.upstream = "u" * 200
        graph.log.updated.add(task)


@pytest.mark.parametrize("kind", ["time", "text", "event", "result", "too-long"])
def test_a_change_set_that_cannot_be_stored_fails_its_task_and_the_rest_of_the_batch_lands(db_url, kind):
    if kind == "too-long" and not db_url.startswith("postgresql"):
        pytest.skip("SQLite ignores declared string lengths")
    world = _World(db_url)
    graph = world.graph
    bad = _bad_text(db_url)

    async def main() -> None:
        await world.start()
        now = time.time()
        graph.submit([spec("p"), spec("b"), spec("c"), spec("after-p", "p"), spec("lone", requires=("nobody",))], now)
        agent = graph.register_agent("ag", "i1", frozenset(), 4, now)
        assert {t.id for t in graph.claim(agent, 4, now)} == {"p", "b", "c"}
        for tid in ("p", "b", "c"):
            graph.apply_report(agent, Report("started", tid, 1), now)
        world.add()
        await world.commit.sync()
        # Three change sets, queued together so they form one batch: the middle one is poisoned.
        graph.apply_report(agent, Report("finished", "b", 1, AttemptOutcome.COMPLETED, {"b": 1}), now)
        world.add()
        _poison(kind, graph, agent, bad, now)
        world.add()
        graph.apply_report(agent, Report("finished", "c", 1, AttemptOutcome.COMPLETED, {"c": 1}), now)
        graph.submit([spec("later")], now)
        world.add()
        await asyncio.wait_for(world.commit.sync(), 30)
        world.commit.close()

    asyncio.run(main())
    rows = world.rows()
    assert world.repairs == [0]
    assert (rows["b"]["status"], rows["c"]["status"], rows["later"]["status"]) == ("completed", "completed", "ready")
    assert rows["p"]["status"] == "failed"
    assert rows["p"]["reason"].startswith("could not be stored: ") and rows["p"]["error"] == rows["p"]["reason"]
    assert rows["lone"]["status"] == "ready"
    live = {"lone", "later"}
    if kind == "result":
        # p had completed in memory, so its dependent was made ready before the backstop ran;
        # it stays ready (the intake keeps such results from ever reaching the core)
        live.add("after-p")
    else:
        assert rows["after-p"]["status"] == "upstream_failed"
    if kind in ("text", "event", "result"):
        assert ("\\x00" if "\x00" in bad else "\\ud800") in rows["p"]["reason"]
    # memory is what the database holds: the failed task and its dependent left it, the rest is live
    assert set(graph.tasks) == live == {t.id for t in world.store.load().tasks}
    signals = [s for batch in world.committed for s in batch.signals]
    if kind != "result":  # the attempt was still under way: its agent is told to stop
        assert [(s.task_id, s.reason) for s in signals] == [("p", rows["p"]["reason"])]
    failed_events = [e for batch in world.committed for e in batch.events if e.task_id == "p" and e.type == "task.failed"]
    assert len(failed_events) == 1 and failed_events[0].payload["reason"] == rows["p"]["reason"]
    world.store.dispose()


def _stored_elsewhere(store: Store, *tids: str) -> None:
    """Tasks stored by another writer's decision: the graph under test does not know them."""
    other = TaskGraph()
    other.next_seq = 10_000  # seqs apart from the graph under test's
    other.submit([spec(t) for t in tids], time.time())
    store.apply(other.take_changes())


def _collide(world: _World, inject) -> None:
    """Runs ``inject(now)`` as the middle of three change sets queued together (the other two
    land), then waits for the commit."""

    async def main() -> None:
        await world.start()
        now = time.time()
        world.graph.submit([spec("before")], now)
        world.add()
        inject(now)
        world.add()
        world.graph.submit([spec("after")], now)
        world.add()
        await asyncio.wait_for(world.commit.sync(), 30)
        world.commit.close()

    asyncio.run(main())


def test_a_submission_whose_task_id_is_already_stored_is_dropped_whole_and_refused(db_url):
    world = _World(db_url)
    _stored_elsewhere(world.store, "dup")
    # past the scheduler's own checks (they look ids up before creating): the backstop alone
    _collide(world, lambda now: world.graph.submit([spec("new"), spec("dup"), spec("child", "dup")], now))
    rows = world.rows()
    why = "task id 'dup' already names a stored task"
    assert world.repairs == [0]
    assert world.refused == {"new": why, "dup": why, "child": why}  # submit raises it to its caller
    assert rows["dup"]["status"] == "ready" and "new" not in rows and "child" not in rows  # the stored one kept
    assert (rows["before"]["status"], rows["after"]["status"]) == ("ready", "ready")
    assert set(world.graph.tasks) == {"before", "after"} == {t.id for t in world.store.load().tasks} - {"dup"}
    assert not any(e.task_id in ("new", "child") for batch in world.committed for e in batch.events)
    world.store.dispose()


def test_a_collision_and_an_unstorable_value_in_one_change_set_are_repaired_in_one_round(db_url):
    world = _World(db_url)
    _stored_elsewhere(world.store, "dup")
    graph = world.graph
    bad = _bad_text(db_url)

    async def main() -> None:
        await world.start()
        now = time.time()
        graph.submit([spec("p"), spec("b")], now)
        agent = graph.register_agent("ag", "i1", frozenset(), 4, now)
        graph.claim(agent, 4, now)
        world.add()
        await world.commit.sync()
        # one change set: a submission colliding with a stored id, a bad text, a completion
        graph.submit([spec("dup")], now)
        _poison("text", graph, agent, bad, now)
        graph.apply_report(agent, Report("finished", "b", 1, AttemptOutcome.COMPLETED, {"b": 1}), now)
        world.add()
        await asyncio.wait_for(world.commit.sync(), 30)
        world.commit.close()

    asyncio.run(main())
    rows = world.rows()
    assert world.repairs == [0]
    assert world.refused == {"dup": "task id 'dup' already names a stored task"}
    assert rows["b"]["status"] == "completed"  # not failed wholesale by a second round
    assert rows["p"]["status"] == "failed" and "unstorable" in rows["p"]["reason"]
    assert set(graph.tasks) == set()
    world.store.dispose()


def test_an_idempotency_key_already_stored_refuses_the_submission(db_url):
    world = _World(db_url)
    other = TaskGraph()
    other.next_seq = 10_000
    other.submit([spec("first", key="k-1")], time.time())
    world.store.apply(other.take_changes())
    _collide(world, lambda now: world.graph.submit([spec("second", key="k-1")], now))
    assert world.refused == {"second": "idempotency key of task 'second' already names stored task 'first'"}
    assert "second" not in world.rows() and "second" not in world.graph.tasks and "k-1" not in world.graph.by_key
    world.store.dispose()


def test_split_children_whose_id_is_already_stored_fail_their_parent_and_exist_nowhere(db_url):
    from omoi_ray.specs.tasks import parse_new_tasks

    world = _World(db_url)
    _stored_elsewhere(world.store, "c1")
    graph = world.graph

    async def main() -> None:
        await world.start()
        now = time.time()
        graph.submit([spec("p"), spec("cont", "p")], now)
        agent = graph.register_agent("ag", "i1", frozenset(), 4, now)
        assert [t.id for t in graph.claim(agent, 4, now)] == ["p"]
        graph.apply_report(agent, Report("started", "p", 1), now)
        world.add()
        await world.commit.sync()
        children = parse_new_tasks([{"id": "c1", "type": "t"}, {"id": "c2", "type": "t"}], 10_000)
        graph.apply_report(agent, Report("finished", "p", 1, AttemptOutcome.COMPLETED, {"n": 2}, None, children), now)
        assert {"c1", "c2"} <= set(graph.tasks)
        world.add()
        await asyncio.wait_for(world.commit.sync(), 30)
        world.commit.close()

    asyncio.run(main())
    rows = world.rows()
    reason = "could not be stored: split of task 'p' refused: task id 'c1' already names a stored task"
    assert world.repairs == [0]
    assert (rows["p"]["status"], rows["p"]["reason"], rows["p"]["result"]) == ("failed", reason, None)
    assert rows["cont"]["status"] == "upstream_failed"
    assert "c2" not in rows and rows["c1"]["payload"] is None and rows["c1"]["status"] == "ready"  # the stored c1
    [attempt] = world.store.attempt_rows("p")
    assert (attempt["outcome"], attempt["error"]) == ("permanent_failure", reason)
    assert world.refused == {}
    assert graph.tasks == {} and [t.id for t in world.store.load().tasks] == ["c1"]  # the stored c1 only
    world.store.dispose()


def test_a_loop_round_whose_id_is_already_stored_fails_the_loop(db_url):
    world = _World(db_url)
    _stored_elsewhere(world.store, "L.r2.review")
    graph = world.graph
    [loop] = LoopSpec(id="L", check="review", until={"key": "verdict", "equals": "approve"}, max_rounds=3,
                      body=[{"id": "review", "type": "t"}]).to_new_tasks()

    async def main() -> None:
        await world.start()
        now = time.time()
        graph.submit([spec("review"), loop, spec("ship", "L")], now)
        agent = graph.register_agent("ag", "i1", frozenset(), 4, now)
        graph.claim(agent, 4, now)
        graph.apply_report(agent, Report("started", "review", 1), now)
        world.add()
        await world.commit.sync()
        graph.apply_report(agent, Report("finished", "review", 1, AttemptOutcome.COMPLETED, {"verdict": "no"}), now)
        world.add()
        await asyncio.wait_for(world.commit.sync(), 30)
        world.commit.close()

    asyncio.run(main())
    rows = world.rows()
    assert rows["review"]["status"] == "completed"
    assert rows["L"]["status"] == "failed"
    assert rows["L"]["reason"] == (
        "could not be stored: split of task 'L' refused: task id 'L.r2.review' already names a stored task"
    )
    assert rows["ship"]["status"] == "upstream_failed"
    assert set(graph.tasks) == set()
    world.store.dispose()


def test_a_ticket_change_that_cannot_be_stored_is_dropped_and_the_ticket_reloaded(db_url):
    from omoi_ray.core.phases import DEFAULT
    from omoi_ray.core.tickets import Ticket
    from omoi_ray.store.tickets import history

    world = _World(db_url)
    graph = world.graph
    bad = _bad_text(db_url)
    to = DEFAULT.next_phase(DEFAULT.first)

    async def main() -> None:
        await world.start()
        now = time.time()
        graph.tickets.create(Ticket("k", "a ticket", DEFAULT, DEFAULT.first, now, now), now)
        world.add()
        await world.commit.sync()
        world.graph.submit([spec("before")], now)
        world.add()
        graph.tickets.move("k", to, now, reason=f"moved {bad}")  # past the edge's text checks
        assert graph.tickets.get("k").phase == to
        world.add()
        world.graph.submit([spec("after")], now)
        world.add()
        await asyncio.wait_for(world.commit.sync(), 30)
        world.commit.close()

    asyncio.run(main())
    assert world.repairs == [0]
    stored = world.store.load().tickets
    [ticket] = stored.tickets
    assert ticket.phase == DEFAULT.first == graph.tickets.get("k").phase  # memory is what the database holds
    assert [h["to_phase"] for h in history(world.store.engine, "k")] == [DEFAULT.first]
    assert graph.tickets.history_seq["k"] == 1
    refused = [e for e in world.store.events_of("k") if e.type == "ticket.change.refused"]
    assert len(refused) == 1
    assert refused[0].payload["reason"].startswith("could not be stored: phase history reason holds the unstorable")
    rows = world.rows()
    assert (rows["before"]["status"], rows["after"]["status"]) == ("ready", "ready")
    world.store.dispose()


class _PickyStore:
    """Refuses (as a data error) any change set touching a task in ``refused``; can also fail
    with an outage first. Records what it committed."""

    def __init__(self, refused: set[str], outages: int = 0) -> None:
        self.refused = refused
        self.outages = outages
        self.written: list[set[str]] = []
        self.marks: list = []

    def _write(self, changes, mark) -> None:
        ids = {t.id for t in [*changes.created, *changes.updated]}
        if self.outages:
            self.outages -= 1
            raise sa_exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))
        if ids & self.refused:
            raise sa_exc.DataError("INSERT", {}, Exception("invalid input"))
        self.written.append(ids)
        self.marks.append(mark)

    def apply(self, changes, mark) -> None:
        self._write(changes, mark)

    def prepare(self, changes):
        return changes

    def write(self, prepared, mark) -> None:
        self._write(prepared, mark)

    def committed(self, mark) -> bool:
        return mark in self.marks


class _GaveUp(Exception):
    pass


def _salvage_run(store: _PickyStore, repair, monkeypatch) -> list[TaskChanges]:
    """Three change sets queued together (the middle one touches task p); raises ``_GaveUp``
    where the process would have exited."""
    import omoi_ray.actors.group_commit as gc

    seen: list[TaskChanges] = []

    async def main() -> None:
        gave_up = asyncio.Event()
        errors: list[BaseException] = []

        def give_up(exc):  # where the process would exit
            errors.append(exc)
            gave_up.set()
            raise _GaveUp(str(exc))

        monkeypatch.setattr(gc, "_exit_for_restart", give_up)
        commit = GroupCommit(store, seen.append, writer="test", on_unstorable=repair)
        for tid in ("a", "p", "b"):
            graph = TaskGraph()
            graph.submit([spec(tid)], 0.0)
            commit.add(graph.take_changes())
        synced = asyncio.ensure_future(commit.sync())
        stopped = asyncio.ensure_future(gave_up.wait())
        await asyncio.wait({synced, stopped}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        synced.cancel()
        stopped.cancel()
        commit.close()
        if errors:
            raise _GaveUp(str(errors[0]))
        assert len(seen) == 1, "every waiter is answered once, after all of it"

    asyncio.run(main())
    return seen


def test_each_refused_change_set_is_repaired_and_the_others_commit_in_order(monkeypatch):
    store = _PickyStore({"p"}, outages=1)  # an outage first: retried, then the data error
    rounds: list[int] = []

    def repair(changes, error, round_):
        rounds.append(round_)
        # stands for the owner's repair: the first one is still refused, the second is not
        return changes if round_ == 0 else TaskChanges(events=changes.events)

    seen = _salvage_run(store, repair, monkeypatch)
    assert rounds == [0, 1]
    assert store.written == [{"a"}, set(), {"b"}]  # the repair took the refused set's place
    assert [e.entity_id for e in seen[0].events] == ["a", "a", "p", "p", "b", "b"]


def test_a_repair_that_cannot_be_stored_either_gives_up_after_the_owner_says_so(monkeypatch):
    store = _PickyStore({"p"})
    rounds: list[int] = []

    def repair(changes, error, round_):
        rounds.append(round_)
        return None if round_ == 2 else changes  # the same, still refused

    with pytest.raises(_GaveUp, match="invalid input"):
        _salvage_run(store, repair, monkeypatch)
    assert rounds == [0, 1, 2]
    assert store.written == [{"a"}]  # what came before the refused set is committed


def test_outages_are_not_data_errors():
    assert not is_data_error(sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")))
    assert not is_data_error(ConnectionError("reset"))
    assert is_data_error(sa_exc.DataError("INSERT", {}, Exception("invalid byte sequence")))
    assert is_data_error(sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert is_data_error(ValueError("year 31690708 is out of range"))
    assert is_data_error(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))


# --------------------------------------------------------------------- end to end, on Ray


def _inject(scheduler, kind: str, bad: str, poison_id: str, cancel_id: str, later: dict) -> dict:
    """Runs inside the scheduler actor (``__ray_call__``): three change sets queued at once, the
    middle one unstorable, then waits for them to be committed."""
    import time as _time

    from omoi_ray.specs.tasks import parse_new_tasks

    async def go() -> dict:
        graph = scheduler.graph
        now = _time.time()
        graph.cancel_many([cancel_id], now, "not needed")
        scheduler._after_change()
        task = graph.tasks[poison_id]
        if kind == "time":
            task.started_at = 1e15
        else:
            task.reason = bad
        graph.log.updated.add(task)
        scheduler._after_change()
        graph.submit(parse_new_tasks([later], 10**6), now)
        scheduler._after_change()
        await scheduler.commit.sync()
        return {"pid": os.getpid(), "in_memory": poison_id in graph.tasks}

    loop = scheduler.timers._task.get_loop()
    return asyncio.run_coroutine_threadsafe(go(), loop).result(60)


@pytest.mark.ray
@pytest.mark.parametrize("kind", ["time", "text"])
def test_the_scheduler_survives_a_poisoned_batch_and_keeps_serving(runtime, uid, kind):
    import ray

    from tests.handlers import gate

    name = f"bs-store-{uid}"
    agent = runtime.spawn_agent(name, capabilities=[name], capacity=3, handler="tests.handlers:behave")
    try:
        before = runtime.describe()
        url = runtime.settings.resolved_database_url()
        poison = omoi.TaskSpec(id=f"{uid}-p", type="behave", requires=[name],
                               payload={"op": "wait_cancel", "started_gate": f"{uid}-p", "cancel_gate": f"{uid}-saw"})
        child = omoi.TaskSpec(id=f"{uid}-child", type="behave", requires=[name], depends_on=[poison.id])
        lone = omoi.TaskSpec(id=f"{uid}-lone", type="behave", requires=[f"nobody-{uid}"])
        runtime.submit([poison, child, lone])
        assert ray.get(gate().wait.remote(f"{uid}-p:1", 30))  # its handler runs
        later = {"id": f"{uid}-later", "type": "behave", "requires": [name], "payload": {"op": "echo"}}
        seen = ray.get(runtime.scheduler.__ray_call__.remote(_inject, kind, _bad_text(url), poison.id, lone.id, later))
        assert seen == {"pid": before["pid"], "in_memory": False}
        info = runtime.get(poison.id)
        assert info.status == "failed" and info.reason.startswith("could not be stored: ")
        assert info.error == info.reason and info.result is None
        if kind == "time":
            assert "task row cannot be built" in info.reason and "out of range" in info.reason
        else:
            assert "task reason holds the unstorable character" in info.reason
        [attempt] = runtime.attempts(poison.id)
        assert (attempt.outcome, attempt.error) == ("failed", info.reason)
        assert ray.get(gate().wait.remote(f"{uid}-saw", 30))  # its handler was told to stop
        assert runtime.get(child.id).status == "upstream_failed"
        assert (runtime.get(lone.id).status, runtime.get(lone.id).reason) == ("cancelled", "not needed")
        assert runtime.wait([later["id"]], timeout=30) == {later["id"]: "completed"}
        # the database says the same as the runtime
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                row = conn.execute(sa.text("SELECT status, reason FROM tasks WHERE id = :i"), {"i": poison.id}).one()
        finally:
            engine.dispose()
        assert tuple(row) == ("failed", info.reason)
        # and it keeps serving: same process, and a new submission runs on the same agent
        nxt = omoi.TaskSpec(id=f"{uid}-next", type="behave", requires=[name], payload={"op": "echo"})
        assert runtime.run([nxt], timeout=30)[nxt.id].status == "completed"
        after = runtime.describe()
        assert (after["pid"], after["restarted"]) == (before["pid"], before["restarted"])
    finally:
        agent.stop()


def _submit_blind(scheduler, items: list) -> dict:
    """Runs inside the scheduler actor (``__ray_call__``): a submission whose first id lookup
    (``submit``'s own) sees nothing stored, so only the backstop can find the collision."""
    real = scheduler.store.lookup
    calls = []

    def blind(ids, keys=()):
        calls.append(1)
        return ({}, {}) if len(calls) == 1 else real(ids, keys)

    async def go() -> dict:
        scheduler.store.lookup = blind
        try:
            await scheduler.submit(items)
            return {"raised": None}
        except Exception as exc:  # noqa: BLE001 - reported to the test
            return {"raised": type(exc).__name__, "message": str(exc), "pid": os.getpid(),
                    "in_memory": sorted(i["id"] for i in items if i["id"] in scheduler.graph.tasks)}
        finally:
            scheduler.store.lookup = real

    loop = scheduler.timers._task.get_loop()
    return asyncio.run_coroutine_threadsafe(go(), loop).result(60)


@pytest.mark.ray
def test_a_submission_colliding_with_a_stored_task_is_refused_by_the_backstop_and_the_scheduler_serves_on(runtime, uid):
    import ray

    name = f"bs-dup-{uid}"
    agent = runtime.spawn_agent(name, capabilities=[name], capacity=2, handler="tests.handlers:behave")
    try:
        pid = runtime.describe()["pid"]
        dup = omoi.TaskSpec(id=f"{uid}-dup", type="behave", requires=[name], payload={"op": "echo"})
        assert runtime.run([dup], timeout=30)[dup.id].status == "completed"
        items = [{"id": f"{uid}-new", "type": "behave", "requires": [f"nobody-{uid}"]},
                 {"id": dup.id, "type": "behave", "requires": [f"nobody-{uid}"]}]
        seen = ray.get(runtime.scheduler.__ray_call__.remote(_submit_blind, items))
        assert seen == {"raised": "TaskExistsError", "pid": pid, "in_memory": [],
                        "message": f"submission refused, nothing of it was stored: task id '{dup.id}' "
                                   "already names a stored task"}
        assert runtime.get(dup.id).status == "completed"  # the stored task is untouched
        with pytest.raises(omoi.TaskNotFoundError):
            runtime.get(f"{uid}-new")
        nxt = omoi.TaskSpec(id=f"{uid}-next", type="behave", requires=[name], payload={"op": "echo"})
        assert runtime.run([nxt], timeout=30)[nxt.id].status == "completed"
        assert runtime.describe()["pid"] == pid
    finally:
        agent.stop()


def poisonous(task, ctx):
    """A handler (run by an agent) whose result or error a store would refuse."""
    what = task.payload["what"]
    if what == "result":
        return {"text": "a\x00b", "ok": 1}
    if what == "key":
        return {"k\ud800": 1}
    raise RuntimeError("boom\x00 \x1b[31mred\x1b[0m")


@pytest.mark.ray
def test_handler_results_and_errors_that_cannot_be_stored_fail_their_attempt_readably(runtime, uid):
    name = f"bs-poison-{uid}"
    agent = runtime.spawn_agent(name, capabilities=[name], capacity=3, handler=f"{__name__}:poisonous")
    try:
        pid = runtime.describe()["pid"]
        specs = [omoi.TaskSpec(id=f"{uid}-{w}", type="x", requires=[name], payload={"what": w}, max_retries=2,
                               backoff_base=0.05, backoff_cap=0.05) for w in ("result", "key", "error")]
        infos = runtime.run(specs, timeout=60)
        result, key, error = (infos[s.id] for s in specs)
        assert (result.status, result.attempt, result.result) == ("failed", 1, None)  # permanent: not retried
        assert result.error == (f"ResultNotSerializableError: task '{uid}-result' returned a result that cannot "
                                "be stored: result['text'] holds the unstorable character '\\x00'")
        assert (key.status, key.attempt) == ("failed", 1)
        assert key.error.endswith("result has a key holding the unstorable character '\\ud800'")
        assert (error.status, error.attempt) == ("failed", 3)  # an ordinary error: retried
        assert error.error == "RuntimeError: boom\ufffd \ufffd[31mred\ufffd[0m"
        assert [a.error for a in runtime.attempts(error.id)] == [error.error] * 3
        assert runtime.describe()["pid"] == pid
    finally:
        agent.stop()


# ------------------------------------------------------------ the largest event positions


@pytest.mark.parametrize("major,minor", [(2**63 - 1, 2**63 - 1), (2**63 - 1, 0), (0, 2**63 - 1)])
def test_the_largest_event_positions_read_as_nothing_after_them_on_each_store(db_url, major, minor):
    # follow(since=...) accepts positions up to MAX_POSITION: each store must answer for them
    # (PostgreSQL's bigint and SQLite's integer), not raise (which follow reads as an outage)
    from omoi_ray.core.storable import MAX_POSITION
    from omoi_ray.specs.events import START, Position
    from omoi_ray.store.events import EventLog
    from omoi_ray.store.store import make_engine

    assert MAX_POSITION == 2**63 - 1
    engine = make_engine(db_url)
    try:
        log = EventLog(engine)
        pos = Position.parse(f"{major}-{minor}")
        assert log.read_after(pos, 10) == []
        assert log.read_after(START, 10, before=pos) == log.read_after(START, 10)
    finally:
        engine.dispose()
