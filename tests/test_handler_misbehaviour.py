"""Whatever a handler does ends its attempt, and the agent's own work never waits on handler code.

- Any ``BaseException`` a handler lets out (sync or async) ends the attempt with readable error
  text; the same agent process serves the next task.
- An async handler that blocks its event loop (``time.sleep`` in ``async def``) does not stop the
  agent's heartbeat: one attempt, the agent's lease and the task's lock lease are kept.
- A handler that ignores its timeout past ``OMOI_HARD_TIMEOUT_GRACE`` is a zombie: the agent stops
  claiming, lets its other attempts finish, and has its process replaced; the slot comes back,
  and attempts the replacement ends are not charged to ``max_retries``.

Agent behaviour does not depend on the store: one SQLite runtime for the module (short leases);
the core rule and its persistence are tested without Ray, on both stores.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid

import pytest
import ray
from omoi_ray.actors.agent import AgentActor, _Running

import omoi_ray as omoi
from omoi_ray.core.claims import OUTCOME_RULES, Report
from omoi_ray.core.model import AgentStatus, AttemptOutcome, NewTask, RetryPolicy
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.errors import AgentNotFoundError
from omoi_ray.protocol import Assignment
from omoi_ray.testing import MemoryStore
from tests.conftest import make_settings, until
from tests.handlers import gate, misbehave_async

SYNC = "tests.handlers:misbehave"
ASYNC = "tests.handlers:misbehave_async"
GRACE = 1.0


# --------------------------------------------------------------------------- the core rule (no Ray)


def _graph_with_running(task_ids, max_retries=0, capacity=2):
    graph = TaskGraph(lease_ttl=30.0)
    graph.submit([NewTask(id=t, type="x", retry=RetryPolicy(max_retries=max_retries)) for t in task_ids], 0.0)
    agent = graph.register_agent("a", "inc-1", frozenset(), capacity, 0.0)
    claimed = graph.claim(agent, capacity, 1.0)
    for task in claimed:
        graph.apply_report(agent, Report("started", task.id, task.attempt), 1.0)
    return graph, agent


def test_every_unsuccessful_outcome_has_a_rule():
    assert set(OUTCOME_RULES) == set(AttemptOutcome) - {AttemptOutcome.COMPLETED}
    uncharged = {o for o, rule in OUTCOME_RULES.items() if not rule.charged}
    assert uncharged == {AttemptOutcome.INTERRUPTED, AttemptOutcome.HANDED_OFF}


def test_a_replaced_agent_requeues_its_attempts_without_charging_them():
    graph, _ = _graph_with_running(["t"], max_retries=0, capacity=1)
    graph.take_changes()
    assert graph.agent_replaced("a", "inc-1", 2.0, "replaced its process", restarting=True)
    task = graph.tasks["t"]
    assert (task.status.value, task.attempt, task.uncharged) == ("ready", 1, 1)
    changes = graph.take_changes()
    assert [(a.task_id, a.outcome) for a in changes.attempts] == [("t", AttemptOutcome.INTERRUPTED)]
    assert [e.type for e in changes.events if e.entity_type == "task"] == ["task.requeued"]
    assert graph.agents["a"].status is AgentStatus.LOST
    assert not graph.agent_replaced("a", "inc-1", 2.0, "again", restarting=True)  # idempotent
    # The next attempt is the one charged: with max_retries=0 it may still fail for good.
    fresh = graph.register_agent("a", "inc-2", frozenset(), 1, 3.0)
    assert [t.id for t in graph.claim(fresh, 1, 3.0)] == ["t"]
    graph.apply_report(fresh, Report("started", "t", 2), 3.0)
    graph.apply_report(fresh, Report("finished", "t", 2, AttemptOutcome.FAILED, None, "boom"), 4.0)
    assert "t" not in graph.tasks  # failed for good: the charged attempt was its only one


def test_a_lost_agent_still_charges_its_attempts():
    graph, _ = _graph_with_running(["t"], max_retries=0, capacity=1)
    assert graph.agent_lost("a", "inc-1", 2.0, "died")
    assert "t" not in graph.tasks  # failed: a lost attempt counts


def test_an_agent_stopped_on_purpose_requeues_its_attempts_without_charging_them():
    graph, _ = _graph_with_running(["t"], max_retries=0, capacity=1)
    graph.take_changes()
    assert graph.agent_stopped("a", "inc-1", 2.0)
    task = graph.tasks["t"]  # still there: with max_retries=0 a charged attempt would fail it
    assert (task.status.value, task.uncharged) == ("ready", 1)
    assert [(a.task_id, a.outcome) for a in graph.take_changes().attempts] == [("t", AttemptOutcome.INTERRUPTED)]
    assert graph.agents["a"].status is AgentStatus.STOPPED


def test_a_replacement_that_will_not_restart_reports_the_agent_stopped():
    graph, _ = _graph_with_running(["t"], max_retries=0, capacity=1)
    assert graph.agent_replaced("a", "inc-1", 2.0, "replaced its process", restarting=False)
    assert graph.agents["a"].status is AgentStatus.STOPPED
    assert graph.tasks["t"].status.value == "ready"


def test_an_agent_reporting_a_zombie_gets_no_more_work_until_replaced():
    graph, agent = _graph_with_running(["z"], max_retries=1, capacity=2)
    graph.submit([NewTask(id="later", type="x")], 2.0)
    graph.advance(0.0)
    assert graph.apply_report(agent, Report("zombie", "z", 1), 2.0) is None
    assert agent.zombies == {("z", 1)} and agent.free_slots == 0
    assert graph.claim(agent, 2, 2.0) == []
    assert graph.tasks["later"].status.value == "ready"
    # The zombie's slot is freed with the agent's process; the new incarnation takes the work.
    graph.agent_replaced("a", "inc-1", 3.0, "replaced", restarting=True)
    fresh = graph.register_agent("a", "inc-2", frozenset(), 2, 3.0)
    assert sorted(t.id for t in graph.claim(fresh, 2, 3.0)) == ["later", "z"]


def test_a_zombie_report_for_an_attempt_that_already_timed_out_still_marks_its_slot():
    graph = TaskGraph(lease_ttl=30.0)
    graph.submit([NewTask(id="z", type="x", timeout=1.0, retry=RetryPolicy(max_retries=0))], 0.0)
    agent = graph.register_agent("a", "inc-1", frozenset(), 1, 0.0)
    graph.claim(agent, 1, 0.0)
    graph.apply_report(agent, Report("started", "z", 1), 0.0)
    graph.advance(1.5)  # timed out for good; the handler still occupies its slot
    assert "z" not in graph.tasks and ("z", 1) in agent.busy
    graph.apply_report(agent, Report("zombie", "z", 1), 2.0)
    assert agent.zombies == {("z", 1)}
    graph.apply_report(agent, Report("finished", "z", 1, AttemptOutcome.TIMED_OUT, None, "late"), 3.0)
    assert agent.zombies == set() and not agent.busy


def test_uncharged_attempts_survive_a_scheduler_restart_in_memory_store():
    graph, _ = _graph_with_running(["t"], max_retries=0, capacity=1)
    store = MemoryStore()
    graph.agent_replaced("a", "inc-1", 2.0, "replaced", restarting=True)
    store.apply(graph.take_changes())
    snap = store.load()
    assert [(t.id, t.uncharged) for t in snap.tasks] == [("t", 1)]


def test_uncharged_attempts_are_restored_from_the_database(db_url):
    from omoi_ray.store.store import Store

    store = Store(db_url)
    try:
        graph, _ = _graph_with_running(["t", "u"], max_retries=0, capacity=2)
        store.apply(graph.take_changes())
        graph.agent_replaced("a", "inc-1", 2.0, "replaced", restarting=True)
        store.apply(graph.take_changes())
        rebuilt = TaskGraph(lease_ttl=30.0)
        snap = store.load()
        rebuilt.restore(snap.tasks, snap.dependencies, snap.agents, snap.open_attempts, snap.next_seq, 3.0)
        assert {tid: t.uncharged for tid, t in rebuilt.tasks.items()} == {"t": 1, "u": 1}
        # Still not charged after the restart: the next failure is the task's first charged one.
        fresh = rebuilt.register_agent("b", "inc-9", frozenset(), 1, 3.0)
        [task] = rebuilt.claim(fresh, 1, 3.0)
        rebuilt.apply_report(fresh, Report("started", task.id, 2), 3.0)
        rebuilt.apply_report(fresh, Report("finished", task.id, 2, AttemptOutcome.LOST, None, "x"), 4.0)
        assert task.id not in rebuilt.tasks
    finally:
        store.dispose()


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 3600.5, True, "soon"])
def test_the_hard_timeout_grace_is_a_bounded_number_of_seconds(bad):
    from omoi_ray.errors import ConfigurationError
    from omoi_ray.settings import Settings

    with pytest.raises(ConfigurationError, match="hard_timeout_grace"):
        Settings(hard_timeout_grace=bad)


def test_the_hard_timeout_grace_is_read_from_the_environment(monkeypatch):
    from omoi_ray.settings import Settings

    assert Settings().hard_timeout_grace == 10.0
    monkeypatch.setenv("OMOI_HARD_TIMEOUT_GRACE", "2.5")
    assert Settings().hard_timeout_grace == 2.5


# --------------------------------------------------------------------------- the watchdog (no Ray)


def test_the_watchdog_logs_a_blocked_async_handler_naming_it_and_the_task(caplog):
    """A blocking call inside an async handler holds that handler's own loop: the agent's
    watchdog (on its control loop) logs it, naming the handler and the task, and logs its end."""
    agent = AgentActor.__new__(AgentActor)  # the watchdog alone: no scheduler, no Ray
    agent.name = "dog"
    handler_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=handler_loop.run_forever, daemon=True)
    thread.start()
    release = threading.Event()
    assignment = Assignment("t-1", 2, "x", None, "NORMAL", None, None, None)
    run = _Running(assignment, ctx=None, fn=misbehave_async, loop=handler_loop)

    async def logged(fragment: str) -> logging.LogRecord:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = [r for r in caplog.records if fragment in r.getMessage()]
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"nothing logged with {fragment!r}")

    async def main() -> tuple[logging.LogRecord, logging.LogRecord]:
        agent.stopped = asyncio.Event()
        agent.running = {("t-1", 2): run}
        dog = asyncio.get_running_loop().create_task(agent._watchdog())
        handler_loop.call_soon_threadsafe(release.wait, 60)  # the handler's blocking call
        try:
            blocked = await logged("has not answered")
            release.set()
            return blocked, await logged("answers again")
        finally:
            release.set()
            agent.stopped.set()
            dog.cancel()

    caplog.set_level(logging.WARNING, logger="omoi_ray.agent")
    try:
        blocked, again = asyncio.run(main())
    finally:
        handler_loop.call_soon_threadsafe(handler_loop.stop)
        thread.join(30)
        handler_loop.close()
    for record in (blocked, again):
        assert record.levelno == logging.WARNING
        assert "agent dog: " in record.getMessage()
        assert "async handler tests.handlers:misbehave_async (task t-1 attempt 2)" in record.getMessage()
    assert "a blocking call inside an async handler" in blocked.getMessage()


# --------------------------------------------------------------------------- agents on Ray


@pytest.fixture(scope="module")
def rt(ray_session, tmp_path_factory):
    home = tmp_path_factory.mktemp("misbehaviour")
    settings = make_settings(
        home, None, f"misbehave-{uuid.uuid4().hex[:8]}",
        lease_ttl=2.0, lock_ttl=2.0, long_poll=1.5, hard_timeout_grace=GRACE,
    )
    runtime = omoi.connect(settings, migrate=True)
    yield runtime
    runtime.shutdown(agents_timeout=2.0)


@pytest.fixture(scope="module")
def servers(rt):
    """One sync and one async agent serving every misbehaviour case of this module."""
    return {
        "sync": rt.spawn_agent("sync-server", capabilities=["raise-sync"], capacity=2, handler=SYNC),
        "async": rt.spawn_agent("async-server", capabilities=["raise-async"], capacity=2, handler=ASYNC),
    }


KINDS = {
    "base_exception": "CustomBaseError: a BaseException subclass",
    "unprintable": "UnprintableError: <UnprintableError whose str() failed>",
    "system_exit": "SystemExit: 3",
    "keyboard_interrupt": "KeyboardInterrupt: ctrl-c inside a handler",
    "generator_exit": "GeneratorExit: closed",
    "cancelled": "CancelledError: the handler cancelled itself (raised by the handler itself: nobody cancelled this attempt)",
    "nul_text": "RuntimeError: bad\ufffdtext\ufffd[31m",
    "surrogate_text": "RuntimeError: half \ufffd pair",
}


@pytest.mark.ray
@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_any_exception_ends_the_attempt_readably_and_the_agent_keeps_serving(rt, servers, uid, flavour, kind):
    agent = servers[flavour]
    before = agent.info()
    bad = omoi.TaskSpec(id=f"{uid}-bad", type="x", requires=[f"raise-{flavour}"], max_retries=0,
                        payload={"op": "raise", "kind": kind})
    rt.submit([bad])
    assert rt.wait([bad.id], timeout=60) == {bad.id: "failed"}
    info = rt.get(bad.id)
    assert info.error == KINDS[kind]
    assert [(a.outcome, a.error) for a in rt.attempts(bad.id)] == [("failed", KINDS[kind])]

    after_bad = omoi.TaskSpec(id=f"{uid}-next", type="x", requires=[f"raise-{flavour}"], max_retries=0)
    rt.submit([after_bad])
    assert rt.wait([after_bad.id], timeout=60) == {after_bad.id: "completed"}
    result = rt.get(after_bad.id).result
    assert (result["agent"], result["pid"]) == (agent.name, before["pid"])
    after = agent.info()
    assert (after["incarnation"], after["running"], after["zombies"]) == (before["incarnation"], [], [])
    view = {a.id: a for a in rt.status().agents}[agent.name]
    assert (view.status, view.busy, view.zombies) == ("alive", 0, 0)


@pytest.mark.ray
def test_an_async_handler_blocking_its_loop_runs_once_and_keeps_its_leases(rt, uid):
    agent = rt.spawn_agent(f"blocker-{uid}", capabilities=[f"block-{uid}"], capacity=1, handler=ASYNC)
    incarnation = agent.info()["incarnation"]
    resource = f"res:{uid}"
    t = omoi.TaskSpec(id=f"{uid}-block", type="x", requires=[f"block-{uid}"], locks=[resource], max_retries=3,
                      payload={"op": "block", "seconds": 7})  # 3.5 leases of the agent and of the lock
    rt.submit([t])
    assert rt.wait([t.id], timeout=60) == {t.id: "completed"}
    info = rt.get(t.id)
    assert info.attempt == 1 and set(info.result["tokens"]) == {resource}
    assert [a.outcome for a in rt.attempts(t.id)] == ["completed"]
    assert [e.type for e in rt.events(t.id) if e.type in ("task.requeued", "task.started")] == ["task.started"]
    lock_events = [e.type for e in rt.events(resource)]
    assert lock_events == ["lock.granted", "lock.released"]
    assert [e.type for e in rt.events(agent.name)] == ["agent.registered"]
    assert agent.info()["incarnation"] == incarnation
    agent.stop(timeout=5)


def _assert_replaced_for_its_zombie_and_serving(rt, agent, attempt: str) -> None:
    """The agent was replaced because of ``attempt``'s zombie handler, is alive again with every
    slot free, and stops cleanly."""
    lost = next(e for e in rt.events(agent.name) if e.type == "agent.lost")
    assert "zombie" in lost.payload["reason"] and attempt in lost.payload["reason"]
    view = until(lambda: {a.id: a for a in rt.status().agents}.get(agent.name), "agent in status")
    assert (view.status, view.busy, view.zombies) == ("alive", 0, 0)
    agent.stop(timeout=5)


@pytest.mark.ray
@pytest.mark.parametrize("handler", [SYNC, ASYNC], ids=["sync", "async-blocking-its-loop"])
def test_a_handler_ignoring_its_timeout_gets_its_agent_replaced_and_the_slot_comes_back(rt, uid, handler):
    cap = f"zombie-{uid}"
    agent = rt.spawn_agent(f"zombie-{uid}", capabilities=[cap], capacity=1, handler=handler)
    first_pid = agent.info()["pid"]
    z = omoi.TaskSpec(id=f"{uid}-z", type="x", requires=[cap], timeout=1.0, max_retries=1, backoff_base=0.01,
                      payload={"op": "block", "seconds": 300})
    later = omoi.TaskSpec(id=f"{uid}-later", type="x", requires=[cap], max_retries=0)
    rt.submit([z, later])
    assert rt.wait([z.id, later.id], timeout=90) == {z.id: "completed", later.id: "completed"}
    attempts = rt.attempts(z.id)
    assert [a.outcome for a in attempts] == ["timed_out", "completed"]
    assert attempts[0].error == "timed out after 1s"
    replaced = rt.get(z.id).result
    assert replaced["agent"] == agent.name and replaced["pid"] != first_pid
    assert rt.get(later.id).result["pid"] == replaced["pid"]
    assert [a.outcome for a in rt.attempts(later.id)] == ["completed"]
    types = [e.type for e in rt.events(agent.name) if e.type != "agent.health.changed"]
    assert types == ["agent.registered", "agent.lost", "agent.registered"]
    health = [e.payload["to"] for e in rt.events(agent.name) if e.type == "agent.health.changed"]
    assert health[-1] == "lost"  # replaced while Ray restarts it
    _assert_replaced_for_its_zombie_and_serving(rt, agent, f"{uid}-z#1")


@pytest.mark.ray
def test_a_draining_agent_lets_timed_attempts_finish_and_interrupts_untimed_ones_uncharged(rt, uid):
    cap = f"drain-{uid}"
    agent = rt.spawn_agent(f"drain-{uid}", capabilities=[cap], capacity=3, handler=SYNC)
    first_pid = agent.info()["pid"]
    go = f"{uid}-go"
    z = omoi.TaskSpec(id=f"{uid}-z", type="x", requires=[cap], timeout=1.0, max_retries=1, backoff_base=0.01,
                      payload={"op": "block", "seconds": 300})
    timed = omoi.TaskSpec(id=f"{uid}-timed", type="x", requires=[cap], timeout=120, max_retries=0,
                          payload={"op": "wait_gate", "gate": go, "started_gate": f"{uid}-timed"})
    untimed = omoi.TaskSpec(id=f"{uid}-untimed", type="x", requires=[cap], max_retries=0,
                            payload={"op": "block", "seconds": 300, "started_gate": f"{uid}-untimed"})
    rt.submit([z, timed, untimed])
    assert ray.get(gate().wait.remote(f"{uid}-timed:1", 60))
    assert ray.get(gate().wait.remote(f"{uid}-untimed:1", 60))

    # The zombie's slot shows in status, and the draining agent takes no more work.
    view = until(lambda: next((a for a in rt.status().agents if a.id == agent.name and a.zombies), None),
                 "a slot held by a zombie")
    assert (view.status, view.busy, view.zombies) == ("alive", 3, 1)
    assert agent.info()["draining"]
    newcomer = omoi.TaskSpec(id=f"{uid}-new", type="x", requires=[cap], max_retries=0)
    rt.submit([newcomer])
    assert rt.get(newcomer.id).status == "ready"

    ray.get(gate().open.remote(go))  # the timed attempt finishes within its own timeout
    ids = [z.id, timed.id, untimed.id, newcomer.id]
    assert rt.wait(ids, timeout=90) == dict.fromkeys(ids, "completed")
    assert [a.outcome for a in rt.attempts(timed.id)] == ["completed"]
    assert rt.get(timed.id).result["pid"] == first_pid
    assert [a.outcome for a in rt.attempts(z.id)] == ["timed_out", "completed"]
    # max_retries=0, yet the untimed task ran again: the replacement's interruption is not charged.
    attempts = rt.attempts(untimed.id)
    assert [a.outcome for a in attempts] == ["interrupted", "completed"]
    assert "interrupted" in attempts[0].error and "zombie" in attempts[0].error
    assert rt.get(untimed.id).result["pid"] != first_pid
    assert rt.get(newcomer.id).result["pid"] != first_pid
    agent.stop(timeout=5)


@pytest.mark.ray
def test_a_zombie_on_an_agent_that_may_not_restart_leaves_it_stopped(rt, uid):
    cap = f"norestart-{uid}"
    agent = rt.spawn_agent(f"norestart-{uid}", capabilities=[cap], capacity=1, handler=SYNC, max_restarts=0)
    z = omoi.TaskSpec(id=f"{uid}-z", type="x", requires=[cap], timeout=1.0, max_retries=1, backoff_base=0.01,
                      payload={"op": "block", "seconds": 300})
    rt.submit([z])
    until(lambda: [e for e in rt.events(agent.name) if e.type == "agent.stopped"], "agent.stopped")
    view = {a.id: a for a in rt.status().agents}[agent.name]
    assert (view.status, view.busy, view.zombies) == ("stopped", 0, 0)
    until(lambda: rt.get(z.id).status == "ready", "the timed-out task back to ready")
    assert ([cap], 1) in [tuple(u) for u in rt.status().unclaimable]

    until(lambda: _gone(rt, agent.name), "the actor to be gone (not restarted)", timeout=30)


def _gone(rt, name: str) -> bool:
    try:
        rt.agent(name)
    except AgentNotFoundError:
        return True
    return False


@pytest.mark.ray
def test_a_zombie_that_ends_by_itself_during_the_drain_spares_its_agent(rt, uid):
    cap = f"comeback-{uid}"
    agent = rt.spawn_agent(f"comeback-{uid}", capabilities=[cap], capacity=2, handler=SYNC)
    pid = agent.info()["pid"]
    go = f"{uid}-go"
    z = omoi.TaskSpec(id=f"{uid}-z", type="x", requires=[cap], timeout=0.5, max_retries=1, backoff_base=0.01,
                      payload={"op": "block", "seconds": 6})  # deaf to its timeout, but ends after a while
    timed = omoi.TaskSpec(id=f"{uid}-timed", type="x", requires=[cap], timeout=120, max_retries=0,
                          payload={"op": "wait_gate", "gate": go})
    rt.submit([z, timed])
    until(lambda: any(a.id == agent.name and a.zombies for a in rt.status().agents), "a zombie slot")
    # The zombie's handler returns on its own: its slot is freed and the agent claims again.
    until(lambda: not agent.info()["draining"], "the agent to stop draining", timeout=60)
    assert rt.wait([z.id], timeout=60) == {z.id: "completed"}
    ray.get(gate().open.remote(go))
    assert rt.wait([timed.id], timeout=60) == {timed.id: "completed"}
    assert [a.outcome for a in rt.attempts(z.id)] == ["timed_out", "completed"]
    assert {rt.get(z.id).result["pid"], rt.get(timed.id).result["pid"], agent.info()["pid"]} == {pid}
    assert [e.type for e in rt.events(agent.name)] == ["agent.registered"]
    agent.stop(timeout=5)


@pytest.mark.ray
def test_an_async_handler_in_its_own_loop_still_reaches_the_runtime(rt, servers, uid):
    up = omoi.TaskSpec(id=f"{uid}-up", type="x", requires=["raise-async"])
    t = omoi.TaskSpec(id=f"{uid}-t", type="x", requires=["raise-async"], depends_on=[up.id],
                      payload={"op": "lock_async", "resource": f"res:{uid}"})
    rt.submit([up, t])
    assert rt.wait([up.id, t.id], timeout=60) == {up.id: "completed", t.id: "completed"}
    result = rt.get(t.id).result
    assert set(result["tokens"]) == {f"res:{uid}"}
    assert result["upstream"][up.id]["attempt"] == 1
    assert [e.type for e in rt.events(f"res:{uid}")] == ["lock.granted", "lock.released"]


@pytest.mark.ray
def test_a_sync_handler_ignoring_its_cancellation_gets_its_agent_replaced_and_the_slot_comes_back(rt, uid):
    cap = f"deaf-{uid}"
    agent = rt.spawn_agent(f"deaf-{uid}", capabilities=[cap], capacity=1, handler=SYNC)
    first_pid = agent.info()["pid"]
    z = omoi.TaskSpec(id=f"{uid}-z", type="x", requires=[cap], max_retries=0,
                      payload={"op": "block", "seconds": 300, "started_gate": f"{uid}-z"})
    rt.submit([z])
    assert ray.get(gate().wait.remote(f"{uid}-z:1", 60))
    later = omoi.TaskSpec(id=f"{uid}-later", type="x", requires=[cap], max_retries=0)
    rt.submit([later])
    assert rt.cancel(z.id, reason="not needed") == {z.id: "cancelled"}
    # The handler never looks at its cancellation: past the grace period its agent is replaced.
    assert rt.wait([later.id], timeout=90) == {later.id: "completed"}
    assert rt.get(later.id).result["pid"] != first_pid
    assert [a.outcome for a in rt.attempts(later.id)] == ["completed"]
    info = rt.get(z.id)
    assert (info.status, info.reason) == ("cancelled", "not needed")
    assert [(a.outcome, a.error) for a in rt.attempts(z.id)] == [("cancelled", "not needed")]
    _assert_replaced_for_its_zombie_and_serving(rt, agent, f"{uid}-z#1")


@pytest.mark.ray
def test_stop_ends_an_agent_whose_handler_ignores_it_and_requeues_the_attempt_uncharged(rt, uid):
    cap = f"deafstop-{uid}"
    agent = rt.spawn_agent(f"deafstop-{uid}", capabilities=[cap], capacity=1, handler=SYNC)
    z = omoi.TaskSpec(id=f"{uid}-z", type="x", requires=[cap], max_retries=0,
                      payload={"op": "block", "seconds": 300, "started_gate": f"{uid}-z"})
    rt.submit([z])
    assert ray.get(gate().wait.remote(f"{uid}-z:1", 60))
    stats = agent.stop(timeout=1)
    assert stats["started"] == 1 and stats["finished"] == 0  # it answered: stop did not give up on it
    until(lambda: _gone(rt, agent.name), "the actor to be gone", timeout=30)
    info = rt.get(z.id)
    assert (info.status, info.attempt) == ("ready", 1)
    assert [a.outcome for a in rt.attempts(z.id)] == ["interrupted"]
    assert [e.type for e in rt.events(agent.name)][-1] == "agent.stopped"
    # max_retries=0, yet it runs again: the interrupted attempt was not charged
    again = rt.spawn_agent(f"deafstop2-{uid}", capabilities=[cap], capacity=1, handler=SYNC)
    assert rt.wait([z.id], timeout=60) == {z.id: "completed"}
    assert [a.outcome for a in rt.attempts(z.id)] == ["interrupted", "completed"]
    again.stop(timeout=5)


@pytest.mark.ray
def test_a_second_zombie_after_the_last_permitted_restart_leaves_the_agent_stopped(rt, uid):
    cap = f"onerestart-{uid}"
    agent = rt.spawn_agent(f"onerestart-{uid}", capabilities=[cap], capacity=1, handler=SYNC, max_restarts=1)
    first_pid = agent.info()["pid"]
    deaf = {"op": "block", "seconds": 300}
    z1 = omoi.TaskSpec(id=f"{uid}-z1", type="x", requires=[cap], timeout=1.0, max_retries=1, backoff_base=0.01,
                       payload=deaf)
    rt.submit([z1])
    assert rt.wait([z1.id], timeout=90) == {z1.id: "completed"}
    assert rt.get(z1.id).result["pid"] != first_pid  # replaced once: Ray restarted it
    z2 = omoi.TaskSpec(id=f"{uid}-z2", type="x", requires=[cap], timeout=1.0, max_retries=1, backoff_base=0.01,
                       payload=deaf)
    rt.submit([z2])
    # Its one restart is used up: the second replacement reports the agent stopped, not lost.
    until(lambda: [e for e in rt.events(agent.name) if e.type == "agent.stopped"], "agent.stopped", timeout=90)
    # (and the restarted incarnation was never taken for dead while Ray's view of it settled)
    assert [e.type for e in rt.events(agent.name) if e.type != "agent.health.changed"] == [
        "agent.registered", "agent.lost", "agent.registered", "agent.stopped"]
    view = {a.id: a for a in rt.status().agents}[agent.name]
    assert (view.status, view.busy, view.zombies) == ("stopped", 0, 0)
    until(lambda: rt.get(z2.id).status == "ready", "the timed-out task back to ready")
    assert [a.outcome for a in rt.attempts(z2.id)] == ["timed_out"]
    until(lambda: _gone(rt, agent.name), "the actor to be gone (not restarted)", timeout=30)


def test_a_zombie_replacement_whose_restart_lookup_fails_still_exits(monkeypatch):
    """The restart count is read on the way out of a process held by zombie handlers: a failed
    lookup is "unknown", never an error escaping the exit (restarts then count as used up)."""
    from types import SimpleNamespace

    import ray._private.state

    from omoi_ray.actors.durable import times_restarted

    def unreachable(**_kwargs):
        raise ConnectionError("the GCS is unreachable")

    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(get_actor_id=lambda: "ab" * 16))
    monkeypatch.setattr(ray._private.state, "actors", unreachable)
    assert times_restarted() is None
    for limit, permitted in ((-1, True), (0, False), (3, False)):
        agent = SimpleNamespace(spec=SimpleNamespace(max_restarts=limit))
        assert AgentActor._restart_permitted(agent) is permitted
    # a count read is compared with the limit
    monkeypatch.setattr(ray._private.state, "actors", lambda **_kwargs: {"NumRestarts": 1})
    assert times_restarted() == 1
    assert AgentActor._restart_permitted(SimpleNamespace(spec=SimpleNamespace(max_restarts=3))) is True
    assert AgentActor._restart_permitted(SimpleNamespace(spec=SimpleNamespace(max_restarts=1))) is False
