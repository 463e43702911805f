"""The agent registry (issue 10): fields, live updates, ranking (search and dispatch), health,
queries, bad input. Core tests on a fake clock first, then end to end on Ray (both backends)."""

from __future__ import annotations

import os
import random
import signal
import uuid

import pytest

import omoi_ray as omoi
from omoi_ray.core.health import FINAL, TRANSITIONS, AgentHealth, HealthCause, next_health
from omoi_ray.core.model import AttemptOutcome
from omoi_ray.core.ranking import Query, dispatch_key, search
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.errors import AgentNotFoundError, InvalidAgentSpecError, InvalidArgumentError
from omoi_ray.specs.agents import AgentInfo, AgentStats, parse_agent_update, parse_query
from omoi_ray.specs.tasks import parse_agent_spec
from omoi_ray.store.store import Store
from tests.conftest import make_settings, until
from tests.graph_harness import Harness, spec

H = "tests.handlers:behave"


def register(h: Harness, name: str, caps=(), capacity: int = 1, *, inc: str = "i1", type: str = "agent",
             phase=None, tags=()):
    return h.graph.register_agent(name, inc, frozenset(caps), capacity, h.now, type=type, phase=phase,
                                  tags=frozenset(tags))


def ids(matches) -> list[str]:
    return [m.agent_id for m in matches]


# ------------------------------------------------------------------ scoring and search order


def test_the_score_is_the_documented_formula():
    h = Harness()
    a = register(h, "a", caps=("x", "y", "z"), capacity=7)
    b = register(h, "b", caps=("x",), capacity=2)
    (ma, mb) = search([a, b], Query(capabilities=frozenset({"x", "y"})))
    # coverage + 0.2 free slot + 0.2 healthy + 0.05 * min(capacity, 5)
    assert (ma.agent_id, ma.score, ma.matched) == ("a", round(1.0 + 0.2 + 0.2 + 0.25, 9), ("x", "y"))
    assert (mb.agent_id, mb.score, mb.matched) == ("b", round(0.5 + 0.2 + 0.2 + 0.10, 9), ("x",))


def test_zero_overlap_is_excluded_only_when_capabilities_are_asked_for():
    h = Harness()
    agents = [register(h, "a", caps=("x",)), register(h, "b", caps=("y",)), register(h, "c")]
    assert ids(search(agents, Query(capabilities=frozenset({"x"})))) == ["a"]
    assert sorted(ids(search(agents, Query()))) == ["a", "b", "c"]  # coverage 1.0 for everyone


def test_ties_break_by_longest_waiting_then_by_id():
    h = Harness()
    c = register(h, "c", caps=("x",))  # registered first: free the longest
    h.clock.advance(1)
    b = register(h, "b", caps=("x",))
    a = register(h, "a", caps=("x",))  # same moment as b: id decides
    assert ids(search([a, b, c], Query(capabilities=frozenset({"x"})))) == ["c", "a", "b"]
    # c takes a task: no free slot now (a lower score, and it waits "not at all")
    h.submit(spec("t", requires=("x",)))
    assert h.claim(c) == ["t"]
    assert ids(search([a, b, c], Query(capabilities=frozenset({"x"})))) == ["a", "b", "c"]
    h.clock.advance(1)
    h.run(c, "t")  # its slot is free again, since now: it waited the least
    assert ids(search([a, b, c], Query(capabilities=frozenset({"x"})))) == ["a", "b", "c"]
    assert [m.matched for m in search([a], Query(capabilities=frozenset({"x"})))] == [("x",)]


def test_filters_phase_type_tags_health_and_limit():
    h = Harness(lease_ttl=30)
    a = register(h, "a", caps=("x",), type="reviewer", phase="review", tags=("eu", "gpu"))
    b = register(h, "b", caps=("x",), type="coder", phase="build", tags=("eu",))
    c = register(h, "c", caps=("x",), type="coder")
    agents = [a, b, c]
    q = Query(capabilities=frozenset({"x"}))
    assert ids(search(agents, Query(q.capabilities, phase="review"))) == ["a"]
    assert sorted(ids(search(agents, Query(q.capabilities, type="coder")))) == ["b", "c"]
    assert sorted(ids(search(agents, Query(q.capabilities, tags=frozenset({"eu"}))))) == ["a", "b"]
    assert ids(search(agents, Query(q.capabilities, tags=frozenset({"eu", "gpu"})))) == ["a"]
    assert len(search(agents, Query(q.capabilities, limit=2))) == 2
    h.tick(10)
    h.graph.renew(a, h.now)
    h.graph.renew(b, h.now)
    h.tick(11)  # c silent for 21 s: stale (default 2/3 of the 30 s lease)
    assert c.health is AgentHealth.STALE
    assert sorted(ids(search(agents, q))) == ["a", "b"]
    stale = search(agents, Query(q.capabilities, include_unhealthy=True))
    assert ids(stale)[-1] == "c" and stale[-1].score == round(1.0 + 0.2 + 0.0 + 0.05, 9)
    h.graph.agent_lost("b", "i1", h.now, "died")
    h.graph.agent_stopped("a", "i1", h.now)
    assert ids(search(agents, Query(q.capabilities, include_unhealthy=True))) == ["c"]  # never lost or stopped


def test_dispatch_order_is_the_search_order_among_eligible_agents():
    """The scheduler's dispatch sorts parked agents by ``dispatch_key``: what a search for the
    task's requirements ranks first is served first."""
    h = Harness()
    rng = random.Random(3)
    agents = []
    for n in range(30):
        agent = register(h, f"a{n:02d}", caps=("x",), capacity=rng.randint(1, 8))
        agents.append(agent)
        h.clock.advance(rng.choice([0, 0, 1]))
    h.submit(*(spec(f"t{n}", requires=("x",)) for n in range(20)))
    for agent in rng.sample(agents, 10):
        h.claim(agent, rng.randint(1, 2))
    for agent in rng.sample(agents, 5):
        agent.health = AgentHealth.STALE  # as the stale timer would: included on request only
    found = ids(search(agents, Query(capabilities=frozenset({"x"}), include_unhealthy=True, limit=1000)))
    assert found == [a.id for a in sorted(agents, key=dispatch_key)]


# ------------------------------------------------------------------ health


def test_the_health_table():
    assert next_health(AgentHealth.HEALTHY, HealthCause.SILENCE) is AgentHealth.STALE
    assert next_health(AgentHealth.STALE, HealthCause.HEARTBEAT) is AgentHealth.HEALTHY
    assert next_health(AgentHealth.HEALTHY, HealthCause.HEARTBEAT) is None  # nothing to change
    assert next_health(AgentHealth.STALE, HealthCause.RAY_DIED) is AgentHealth.DEAD
    assert next_health(AgentHealth.HEALTHY, HealthCause.LEASE_EXPIRED) is AgentHealth.LOST
    for state in FINAL:
        assert all(next_health(state, cause) is None for cause in HealthCause)
    assert all(state not in FINAL for state, _ in TRANSITIONS)


def test_heartbeat_stale_healthy_then_lost_with_events_and_no_work_while_stale():
    h = Harness(lease_ttl=30)
    a = register(h, "a", caps=("x",), capacity=2)
    h.submit(spec("t1", requires=("x",)), spec("t2", requires=("x",)))
    assert h.claim(a, 1) == ["t1"]
    h.drain()
    h.tick(19.9)
    assert a.health is AgentHealth.HEALTHY
    h.tick(0.2)  # 20.1 s of silence: stale, set by the timer
    assert a.health is AgentHealth.STALE and a.status.value == "alive"
    assert h.claim(a) == []  # no new work while stale
    assert h.status("t1") == "claimed"  # its attempt keeps its lease
    info = AgentInfo.of(a)
    assert info.health == "stale" and AgentInfo.of(a) == info  # reading changes nothing
    h.graph.renew(a, h.now)  # any call
    assert a.health is AgentHealth.HEALTHY
    assert h.claim(a) == ["t2"]
    events = [e for e in h.drain().events if e.type == "agent.health.changed"]
    assert [(e.payload["from"], e.payload["to"]) for e in events] == [("healthy", "stale"), ("stale", "healthy")]
    h.tick(20.5)
    assert a.health is AgentHealth.STALE
    h.tick(10)  # past the lease: lost, attempts requeued
    assert a.health is AgentHealth.LOST and a.status.value == "lost"
    assert h.status("t1") == "ready" and h.status("t2") == "ready"
    types = [(e.type, e.payload.get("to")) for e in h.drain().events if e.entity_id == "a"]
    assert types == [("agent.health.changed", "stale"), ("agent.health.changed", "lost"), ("agent.lost", None)]


def test_ray_reporting_an_agent_dead_makes_it_dead_at_once():
    h = Harness(lease_ttl=30)
    a = register(h, "a", caps=("x",))
    h.submit(spec("t", requires=("x",)))
    h.claim(a)
    h.drain()
    assert h.graph.agent_lost("a", "i1", h.now, "died (ActorDiedError)")  # what the watch reports
    assert a.health is AgentHealth.DEAD and a.status.value == "lost"
    assert h.status("t") == "ready"
    changes = h.drain()
    assert changes.abandoned == [("t", 1)]  # its locks are released by the owner
    health = [e.payload for e in changes.events if e.type == "agent.health.changed"]
    assert health == [{"from": "healthy", "to": "dead", "reason": "died (ActorDiedError)", "incarnation": "i1"}]


class _WatchedHandle:
    """An agent's actor handle as the scheduler's watch sees it: ``watch.remote`` answers each
    call with the next of ``answers`` (an exception is raised)."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.calls = 0

    @property
    def watch(self):
        return self

    def remote(self, incarnation: str):
        self.calls += 1
        answer = self.answers.pop(0)

        async def reply():
            if isinstance(answer, BaseException):
                raise answer
            return answer

        return reply()


def _watching(h: Harness, handle: _WatchedHandle) -> None:
    """Run the scheduler's watch of agent ``a`` incarnation ``i1`` (no Ray) to its end."""
    import asyncio

    from omoi_ray.actors.scheduler import SchedulerActor

    scheduler = SchedulerActor.__new__(SchedulerActor)
    scheduler.graph, scheduler.watches = h.graph, {}
    scheduler._release_parked = lambda agent_id: None
    scheduler._after_change = lambda: None
    asyncio.run(asyncio.wait_for(scheduler._watch_agent("a", "i1", handle), 30))


def _unavailable():
    import ray

    return ray.exceptions.ActorUnavailableError("The actor is restarting", None)


def test_an_agent_briefly_unavailable_to_ray_is_not_declared_dead():
    # Right after Ray restarts an agent (a zombie's replacement), the scheduler's view of it may
    # still say restarting: the watch asks again instead of declaring the live agent dead.
    h = Harness(lease_ttl=30)
    a = register(h, "a", caps=("x",))
    h.submit(spec("t", requires=("x",)))
    h.claim(a)
    h.drain()
    handle = _WatchedHandle(_unavailable(), _unavailable(), "stopped")
    _watching(h, handle)
    assert handle.calls == 3
    assert a.status.value == "stopped" and a.health is not AgentHealth.DEAD
    assert h.status("t") == "ready"
    assert [(x.task_id, x.outcome) for x in h.drain().attempts] == [("t", AttemptOutcome.INTERRUPTED)]  # uncharged


def test_a_watch_stops_asking_once_the_incarnation_ended_another_way():
    h = Harness(lease_ttl=30)
    a = register(h, "a")
    handle = _WatchedHandle(_unavailable(), "stopped")
    assert h.graph.agent_lost("a", "i1", h.now, "lease expired", HealthCause.LEASE_EXPIRED)
    h.drain()
    _watching(h, handle)
    assert handle.calls == 1 and a.status.value == "lost"
    assert h.drain().events == []


def test_an_agent_ray_reports_dead_is_dead_at_the_first_answer():
    import ray

    h = Harness(lease_ttl=30)
    a = register(h, "a")
    handle = _WatchedHandle(ray.exceptions.ActorDiedError(), "stopped")
    _watching(h, handle)
    assert handle.calls == 1 and a.health is AgentHealth.DEAD


def test_stale_after_is_configurable_and_below_the_lease():
    h = Harness()
    h.graph = TaskGraph(lease_ttl=30, stale_after=5, rng=random.Random(1))
    a = h.graph.register_agent("a", "i1", frozenset(), 1, h.now)
    h.tick(5)
    assert a.health is AgentHealth.STALE
    for bad in (10, 3, 3.3):  # not below the lease, not within one heartbeat interval
        with pytest.raises(ValueError, match="less than lease_ttl"):
            omoi.Settings(lease_ttl=10, agent_stale_after=bad)
    assert omoi.Settings(lease_ttl=10, agent_stale_after=3.4).stale_after == 3.4
    assert omoi.Settings(lease_ttl=30).stale_after == 20


# ------------------------------------------------------------------ registration, update, counts


def test_an_update_changes_and_emits_only_on_a_real_change():
    h = Harness()
    register(h, "a", caps=("x", "y"), capacity=2, tags=("eu",))
    h.drain()
    register(h, "a", caps=("y", "x"), capacity=2, tags=("eu",))  # same sets, other order
    assert [e.type for e in h.drain().events] == []
    a = register(h, "a", caps=("x", "y"), capacity=3, tags=("eu", "gpu"))
    (event,) = h.drain().events
    assert event.type == "agent.capabilities.changed"
    assert (event.payload["tags"], event.payload["previous_tags"]) == (["eu", "gpu"], ["eu"])
    assert (event.payload["capacity"], event.payload["previous_capacity"]) == (3, 2)
    assert a.capacity == 3 and a.tags == frozenset({"eu", "gpu"}) and a.incarnation == "i1"


def test_tasks_done_counts_and_stats():
    h = Harness()
    a = register(h, "a", caps=("x",), capacity=3, type="coder", phase="build")
    b = register(h, "b", caps=("x",), capacity=2, type="coder")
    h.submit(spec("t1", requires=("x",)), spec("t2", requires=("x",), max_retries=0))
    h.claim(a, 2)
    h.run(a, "t1")
    h.run(a, "t2", outcome=AttemptOutcome.FAILED, error="no")
    assert a.tasks_done == 1
    h.graph.agent_stopped("b", "i1", h.now)
    stats = AgentStats.of([a, b])
    assert stats.by_health == {"healthy": 1, "stopped": 1} and stats.by_status == {"alive": 1, "stopped": 1}
    assert stats.by_type == {"coder": 2} and stats.by_phase == {"build": 1, "": 1}
    assert (stats.capacity, stats.busy, stats.free, stats.tasks_done) == (3, 0, 3, 1)


def test_registry_fields_round_trip_through_the_store(db_url):
    store = Store(db_url)
    h = Harness()
    a = register(h, "a", caps=("x",), capacity=2, type="coder", phase="build", tags=("eu",))
    h.submit(spec("t", requires=("x",)))
    h.claim(a)
    h.run(a, "t")
    h.tick(21)  # stale
    store.apply(h.graph.take_changes())
    (loaded,) = store.load().agents
    assert (loaded.type, loaded.phase, loaded.tags, loaded.tasks_done, loaded.health) == (
        "coder", "build", frozenset({"eu"}), 1, AgentHealth.STALE)
    h.graph.agent_lost("a", "i1", h.now, "died")
    store.apply(h.graph.take_changes())
    assert store.load().agents == []  # dead agents are not restored
    (gone,) = store.stored_agents(["a", "nobody"])  # but listed, as their row last recorded them
    assert (gone.health, gone.status.value, gone.tasks_done) == (AgentHealth.DEAD, "lost", 1)
    assert [a.id for a in store.stored_agents()] == ["a"]
    store.dispose()


def test_what_an_agent_handles_round_trips_through_the_store_and_old_rows_handle_every_type(db_url):
    store = Store(db_url)
    h = Harness()
    h.graph.register_agent("typed", "i1", frozenset(), 1, h.now, handles=frozenset({"b", "a"}))
    h.graph.register_agent("default", "i1", frozenset(), 1, h.now)
    store.apply(h.graph.take_changes())
    loaded = {a.id: a for a in store.load().agents}
    assert loaded["typed"].handles == frozenset({"a", "b"}) and loaded["default"].handles is None
    assert AgentInfo.of(loaded["typed"]).handles == ["a", "b"] and AgentInfo.of(loaded["default"]).handles is None
    store.dispose()


def test_search_by_task_type_keeps_the_agents_that_handle_it():
    h = Harness()
    typed = h.graph.register_agent("typed", "i1", frozenset({"x"}), 1, h.now, handles=frozenset({"review"}))
    other = h.graph.register_agent("other", "i1", frozenset({"x"}), 1, h.now, handles=frozenset({"build"}))
    default = h.graph.register_agent("default", "i1", frozenset({"x"}), 1, h.now)
    agents = [typed, other, default]
    assert sorted(ids(search(agents, Query(task_type="review")))) == ["default", "typed"]
    assert sorted(ids(search(agents, Query(capabilities=frozenset({"x"}), task_type="deploy")))) == ["default"]
    assert parse_query(task_type="review").task_type == "review"
    with pytest.raises(InvalidArgumentError, match="task_type"):
        parse_query(task_type="a\nb")


def test_handles_is_fixed_per_incarnation_and_announced_at_registration():
    h = Harness()
    a = h.graph.register_agent("a", "i1", frozenset(), 1, h.now, handles=frozenset({"x"}))
    (event,) = h.drain().events
    assert event.type == "agent.registered" and event.payload["handles"] == ["x"]
    again = h.graph.register_agent("a", "i1", frozenset(), 2, h.now, handles=None)  # an update
    assert again is a and a.handles == frozenset({"x"})
    fresh = h.graph.register_agent("a", "i2", frozenset(), 1, h.now, handles=None)  # a new process
    assert fresh.handles is None


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"capacity": 0}, "capacity"),
        ({"capacity": -1}, "capacity"),
        ({"capacity": True}, "capacity"),
        ({"capacity": 1.5}, "capacity"),
        ({"capabilities": "gpu"}, "capabilities"),
        ({"capabilities": [""]}, "capabilities"),
        ({"capabilities": ["  "]}, "capabilities"),
        ({"capabilities": ["a\x00"]}, "capabilities"),
        ({"capabilities": ["x" * 65]}, "capabilities"),
        ({"capabilities": [f"c{n}" for n in range(257)]}, "capabilities"),
        ({"tags": "eu"}, "tags"),
        ({"tags": ["e u"]}, "tags"),
        ({"type": "a\x00"}, "type"),
        ({"type": ""}, "type"),
        ({"phase": "p" * 129}, "phase"),
        ({"name": "n\x00"}, "name"),
    ],
)
def test_bad_agent_fields_are_refused_naming_the_field(fields, named):
    with pytest.raises(InvalidAgentSpecError, match=named):
        parse_agent_spec(**{"name": "ok", "handler": H, **fields})


@pytest.mark.parametrize(
    "kwargs",
    [{"capacity": 0}, {"capacity": True}, {"capacity": 2.0}, {"capabilities": "x"}, {"tags": [" "]},
     {"capabilities": ["x\x00"]}],
)
def test_bad_updates_are_refused(kwargs):
    with pytest.raises(InvalidAgentSpecError, match="agent 'a'"):
        parse_agent_update("a", **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": 0}, {"limit": 1001}, {"limit": True}, {"limit": 2.0}, {"capabilities": "x"},
     {"tags": "eu"}, {"phase": "a\nb"}, {"type": ""}, {"include_unhealthy": 1},
     {"capabilities": [f"c{n}" for n in range(200_000)]}],
)
def test_bad_searches_are_refused(kwargs):
    with pytest.raises(InvalidArgumentError, match="agent search"):
        parse_query(**kwargs)


# ------------------------------------------------------------------ end to end


@pytest.mark.ray
def test_register_update_and_query_end_to_end(runtime, uid):
    rt = runtime
    name, cap = f"reg-{uid}", f"c-{uid}"
    rt.spawn_agent(name, capabilities=[cap, "X"], tags=["eu"], type="coder", phase="build", capacity=2, handler=H)
    info = rt.agents.get(name)
    assert (info.type, info.phase, info.capabilities, info.tags, info.capacity) == (
        "coder", "build", sorted([cap, "x"]), ["eu"], 2)
    assert info.health == "healthy" and info.status == "alive" and info.last_heartbeat_at
    assert name in [a.id for a in rt.agents.list()]
    (match,) = rt.agents.search([cap, f"other-{uid}"], tags=["eu"])
    assert match.agent.id == name and match.matched == [cap] and match.score == pytest.approx(0.5 + 0.4 + 0.1)
    assert rt.agents.best_fit([f"nobody-{uid}"]) is None

    rt.agent(name).update(capabilities=["x", cap])  # the same set: no event
    rt.agent(name).update(capacity=4, tags=["eu", "gpu"])
    changed = [e for e in rt.events(name) if e.type == "agent.capabilities.changed"]
    assert [(e.payload["capacity"], e.payload["tags"]) for e in changed] == [(4, ["eu", "gpu"])]
    info = rt.agents.get(name)
    assert (info.capacity, info.tags, info.free) == (4, ["eu", "gpu"], 4)
    assert rt.agent(name).info()["capacity"] == 4

    with pytest.raises(InvalidAgentSpecError, match="capacity"):
        rt.agent(name).update(capacity=0)
    with pytest.raises(InvalidAgentSpecError, match="capabilities"):
        rt.agent(name).update(capabilities="x")
    assert rt.agents.get(name).capacity == 4  # nothing changed

    ids_ = rt.submit([omoi.TaskSpec(id=f"{uid}-{n}", type="t", requires=[cap], payload={"op": "echo"})
                      for n in range(3)])
    rt.wait(ids_, timeout=60)
    assert rt.agents.get(name).tasks_done == 3
    stats = rt.agents.stats()
    assert stats.by_type.get("coder", 0) >= 1 and stats.tasks_done >= 3
    with pytest.raises(AgentNotFoundError, match=f"nobody-{uid}"):
        rt.agents.get(f"nobody-{uid}")
    with pytest.raises(InvalidArgumentError):
        rt.agents.search(limit=0)
    rt.agent(name).stop(timeout=5)
    assert rt.agents.get(name).health == "stopped"


@pytest.mark.ray
def test_search_and_dispatch_agree(own_runtime, uid):
    """Two parked agents able to run a task: the one search ranks first (more capacity) gets it."""
    rt = own_runtime
    cap = f"c-{uid}"
    rt.spawn_agent("small", capabilities=[cap], capacity=1, handler=H)
    rt.spawn_agent("large", capabilities=[cap], capacity=3, handler=H)
    until(lambda: rt.describe().get("parked_agents") == 2, "both agents parked")
    first = rt.agents.best_fit([cap])
    assert first.agent.id == "large" and [m.agent.id for m in rt.agents.search([cap])] == ["large", "small"]
    rt.submit([omoi.TaskSpec(id=f"{uid}-one", type="t", requires=[cap], payload={"op": "echo"})])
    rt.wait([f"{uid}-one"], timeout=60)
    assert rt.get(f"{uid}-one").agent_id == first.agent.id


@pytest.fixture
def stale_runtime(request, ray_session, backend, tmp_path):
    """A runtime of its own whose agents go stale fast: heartbeat every 4 s, stale after 5 s of
    silence, lost after 12 s."""
    name, _ = backend
    url = request.getfixturevalue("pg_schemas").migrated() if name == "postgres" else None
    settings = make_settings(tmp_path, url, f"stale-{uuid.uuid4().hex[:8]}", lease_ttl=12.0,
                             agent_stale_after=5.0, long_poll=5.0)
    rt = omoi.connect(settings, migrate=True)
    yield rt
    rt.shutdown(agents_timeout=2.0)


@pytest.mark.ray
def test_a_silent_agent_goes_stale_gets_no_work_and_is_healthy_again_when_it_calls(stale_runtime, uid):
    rt = stale_runtime
    cap = f"c-{uid}"
    rt.spawn_agent("sleepy", capabilities=[cap], capacity=1, handler=H)
    pid = rt.agent("sleepy").pid()
    os.kill(pid, signal.SIGSTOP)  # the agent's process stops calling (same machine in tests)
    try:
        until(lambda: rt.agents.get("sleepy").health == "stale", "'sleepy' stale")
        rt.submit([omoi.TaskSpec(id=f"{uid}-t", type="t", requires=[cap], payload={"op": "echo"})])
        assert rt.get(f"{uid}-t").status == "ready"  # a stale agent gets no new work, though parked
        assert [m.agent.id for m in rt.agents.search([cap], include_unhealthy=True)] == ["sleepy"]
        assert rt.agents.search([cap]) == []
    finally:
        os.kill(pid, signal.SIGCONT)
    rt.wait([f"{uid}-t"], timeout=60)  # its next heartbeat makes it healthy: the task is dispatched
    assert rt.get(f"{uid}-t").agent_id == "sleepy" and rt.agents.get("sleepy").health == "healthy"
    moves = [(e.payload["from"], e.payload["to"]) for e in rt.events("sleepy") if e.type == "agent.health.changed"]
    assert moves == [("healthy", "stale"), ("stale", "healthy")]


@pytest.mark.ray
def test_agents_of_different_handler_types_share_a_runtime_each_running_its_own(runtime, uid):
    """Routing by type: two agents with the same capabilities but different handlers both
    take work from one runtime, each only tasks of its types (no ``HandlerNotFoundError``); a
    type nobody handles waits, reported as such."""
    rt = runtime
    cap = f"route-{uid}"  # only this test's agents have it
    rt.spawn_agent(f"alpha-{uid}", capabilities=[cap], capacity=2, handlers={"alpha": H})
    rt.spawn_agent(f"beta-{uid}", capabilities=[cap], capacity=2, handlers={"beta": H})
    assert rt.agents.get(f"alpha-{uid}").handles == ["alpha"]
    assert rt.agent(f"beta-{uid}").info()["handles"] == ["beta"]
    assert [m.agent.id for m in rt.agents.search([cap], task_type="alpha")] == [f"alpha-{uid}"]
    kinds = {f"{uid}-{n}": ("alpha", "beta")[n % 2] for n in range(10)}
    ids = rt.submit([
        omoi.TaskSpec(id=tid, type=kind, requires=[cap], payload={"op": "echo"}, max_retries=0)
        for tid, kind in kinds.items()
    ])
    assert rt.wait(ids, timeout=60) == dict.fromkeys(ids, "completed")
    for tid, kind in kinds.items():
        info = rt.get(tid)
        assert (info.agent_id, info.attempt, info.error) == (f"{kind}-{uid}", 1, None)
    (orphan,) = rt.submit([omoi.TaskSpec(id=f"{uid}-gamma", type="gamma", requires=[cap])])
    def reported():
        status = rt.status()
        return status if ("gamma", [cap], 1) in status.unhandled else None

    status = until(reported, "the gamma task reported as unhandled")
    assert [cap] not in [req for req, _ in status.unclaimable]  # capabilities are not what is missing
    assert rt.get(orphan).status == "ready"
    rt.cancel(orphan)
    for name in (f"alpha-{uid}", f"beta-{uid}"):
        rt.agent(name).stop()
