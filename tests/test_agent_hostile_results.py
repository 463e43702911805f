"""A handler's result is made plain JSON on the handler's thread; odd agents and bad arguments
never hang or crash the driver.

- A result whose own code raises (a dict subclass whose ``items`` raises ``SystemExit``), is
  slow, is nested too deep, or cannot be stored fails (or completes) its attempt like any other
  result: the agent's control loop never runs the result's code, keeps its lease and keeps
  serving. What is stored is plain data (dicts, lists, str, numbers, bool, null).
- ``AgentRef.stop`` and ``Runtime.shutdown`` finish even after a handler called
  ``ray.actor.exit_actor()``.
- An agent whose handler cannot be sent to its process, and a bad agent name given to
  ``rt.agent``, are refused with typed one-line errors.

Agent behaviour does not depend on the store: SQLite runtimes with short leases.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict

import pytest
import ray
from omoi_ray.actors.agent import _plain_result

import omoi_ray as omoi
import omoi_ray.client.agents as agents_module
from omoi_ray.core.claims import Report
from omoi_ray.core.model import AttemptOutcome, NewTask, RetryPolicy
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.errors import (
    AgentNotFoundError,
    InvalidAgentSpecError,
    InvalidArgumentError,
    ResultNotSerializableError,
)
from tests.conftest import make_settings

CANNOT = "ResultNotSerializableError: task '{}' returned a result that cannot be stored: {}"


# --------------------------------------------------------------------------- hostile values


class ExitDict(dict):
    """A dict whose ``items`` ends the interpreter (as ``sys.exit`` in library code would)."""

    def items(self):
        raise SystemExit("x")


class SlowDict(dict):
    """A dict whose ``items`` takes ``seconds`` (longer than the agent's lease)."""

    seconds = 5.0

    def items(self):
        time.sleep(self.seconds)  # the misbehaviour under test: a slow result, not a wait in the test
        return super().items()


class InterruptList(list):
    def __iter__(self):
        raise KeyboardInterrupt("iterating the result")


class BadReprKey:
    def __repr__(self):
        raise GeneratorExit("no repr")


class PlainEnough(OrderedDict):
    """A harmless dict subclass: stored as a plain dict."""


def _nested(depth: int):
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def hostile(task):
    """Return the kind of result the payload names."""
    what = (task.payload or {}).get("what")
    if what == "exit_items":
        return ExitDict(a=1)
    if what == "slow_items":
        return SlowDict(done=True)
    if what == "nested":
        return _nested(5000)
    if what == "subclass":
        return PlainEnough(pair=(1, 2))
    if what == "exit_actor":
        ray.actor.exit_actor()
    return {"ok": True}


# --------------------------------------------------------------------------- the conversion (no Ray)


@pytest.mark.parametrize(
    "value,problem",
    [
        (ExitDict(a=1), "reading it raised SystemExit: x"),
        (InterruptList([1]), "reading it raised KeyboardInterrupt: iterating the result"),
        ({BadReprKey(): 1}, "reading it raised GeneratorExit: no repr"),
        ({1: "a", "1": "b"}, "result has the key 1; JSON object keys must be strings"),
        ({"a": {"b": [1, "x\x00"]}}, "result['a']['b'][1] holds the unstorable character '\\x00'"),
        (["\udc00"], "result[0] holds the unstorable character '\\udc00'"),
        ({"x": float("nan")}, "result['x'] is nan; JSON numbers must be finite"),
        (_nested(5000), "result is nested more than 64 levels deep"),
        ({"s": {1}}, "result['s'] is a set, which is not JSON"),
        ("x" * 100, "102 bytes of JSON, over the limit of 100 (OMOI_RESULT_MAX_BYTES)"),
    ],
    ids=["exit-items", "interrupt-iter", "raising-repr", "int-key", "nul", "surrogate", "nan", "deep", "set", "big"],
)
def test_a_result_that_cannot_be_stored_is_refused_saying_why_whatever_it_raises(value, problem):
    with pytest.raises(ResultNotSerializableError) as caught:
        _plain_result("t", value, 100)
    assert str(caught.value) == f"task 't' returned a result that cannot be stored: {problem}"
    assert isinstance(caught.value, omoi.PermanentError)


def test_a_storable_result_becomes_plain_json_data():
    value = PlainEnough(pair=(1, 2), nested=[{"k": "v"}], n=None, f=1.5, b=True)
    plain = _plain_result("t", value, 1000)
    assert plain == {"pair": [1, 2], "nested": [{"k": "v"}], "n": None, "f": 1.5, "b": True}
    assert type(plain) is dict and type(plain["pair"]) is list
    assert _plain_result("t", None, 1000) is None
    assert _plain_result("t", "x" * 98, 100) == "x" * 98  # exactly at the limit


# --------------------------------------------------------------------------- agents on Ray


@pytest.fixture(scope="module")
def rt(ray_session, tmp_path_factory):
    home = tmp_path_factory.mktemp("hostile")
    settings = make_settings(home, None, f"hostile-{uuid.uuid4().hex[:8]}", lease_ttl=2.0, lock_ttl=2.0,
                             long_poll=1.5)
    runtime = omoi.connect(settings, migrate=True)
    yield runtime
    runtime.shutdown(agents_timeout=2.0)


@pytest.fixture(scope="module")
def server(rt):
    return rt.spawn_agent("hostile-server", capabilities=["hostile"], capacity=2, handler=f"{__name__}:hostile")


def _task(uid: str, what: str, **fields) -> omoi.TaskSpec:
    return omoi.TaskSpec(id=f"{uid}-{what}", type="x", requires=["hostile"], payload={"what": what}, **fields)


@pytest.mark.ray
def test_a_result_whose_items_raise_system_exit_fails_its_attempt_and_the_agent_keeps_serving(rt, server, uid):
    before = server.info()
    bad = _task(uid, "exit_items", max_retries=2)
    assert rt.run([bad], timeout=60)[bad.id].status == "failed"
    info = rt.get(bad.id)
    assert info.error == CANNOT.format(bad.id, "reading it raised SystemExit: x")
    assert [a.outcome for a in rt.attempts(bad.id)] == ["permanent_failure"]  # permanent: not retried

    later = _task(uid, "plain")
    assert rt.run([later], timeout=60)[later.id].status == "completed"
    assert rt.get(later.id).result == {"ok": True}
    after = server.info()
    assert (after["pid"], after["incarnation"], after["running"]) == (before["pid"], before["incarnation"], [])
    view = {a.id: a for a in rt.status().agents}[server.name]
    assert (view.status, view.busy) == ("alive", 0)


@pytest.mark.ray
def test_a_result_slower_to_read_than_the_lease_completes_in_one_attempt(rt, server, uid):
    slow = _task(uid, "slow_items", max_retries=0)  # 5 s to read, leases of 2 s
    assert rt.run([slow], timeout=60)[slow.id].status == "completed"
    assert rt.get(slow.id).result == {"done": True}
    assert [a.outcome for a in rt.attempts(slow.id)] == ["completed"]
    assert [e.type for e in rt.events(server.name)] == ["agent.registered"]  # never lost


@pytest.mark.ray
def test_a_result_nested_too_deep_fails_for_good_at_once(rt, server, uid):
    deep = _task(uid, "nested", max_retries=2)
    assert rt.run([deep], timeout=60)[deep.id].status == "failed"
    info = rt.get(deep.id)
    assert (info.attempt, info.error) == (1, CANNOT.format(deep.id, "result is nested more than 64 levels deep"))


@pytest.mark.ray
def test_a_dict_subclass_result_is_stored_as_plain_data(rt, server, uid):
    t = _task(uid, "subclass")
    assert rt.run([t], timeout=60)[t.id].status == "completed"
    assert rt.get(t.id).result == {"pair": [1, 2]}


# --------------------------------------------------------------------------- a task's reason (core)


def _requeued_graph(max_retries: int):
    """Task ``t`` whose first attempt was interrupted (its agent replaced), claimed again."""
    graph = TaskGraph(lease_ttl=30.0)
    graph.submit([NewTask(id="t", type="x", retry=RetryPolicy(max_retries=max_retries))], 0.0)
    first = graph.register_agent("a", "inc-1", frozenset(), 1, 0.0)
    graph.claim(first, 1, 1.0)
    graph.apply_report(first, Report("started", "t", 1), 1.0)
    graph.agent_replaced("a", "inc-1", 2.0, "replaced its process", restarting=True)
    assert graph.tasks["t"].status.value == "ready"
    assert graph.tasks["t"].reason.startswith("interrupted: agent 'a' replaced its process")
    fresh = graph.register_agent("a", "inc-2", frozenset(), 1, 3.0)
    graph.claim(fresh, 1, 3.0)
    graph.apply_report(fresh, Report("started", "t", 2), 3.0)
    graph.take_changes()
    return graph, fresh


def test_a_task_that_completes_after_a_requeue_keeps_no_stale_reason():
    graph, fresh = _requeued_graph(max_retries=0)
    graph.apply_report(fresh, Report("finished", "t", 2, AttemptOutcome.COMPLETED, {"ok": 1}, None), 4.0)
    [task] = graph.take_changes().updated
    assert (task.status.value, task.result, task.error, task.reason) == ("completed", {"ok": 1}, None, None)


def test_a_task_failing_for_good_after_a_requeue_says_its_own_error_not_the_old_reason():
    graph, fresh = _requeued_graph(max_retries=0)
    graph.apply_report(fresh, Report("finished", "t", 2, AttemptOutcome.PERMANENT_FAILURE, None, "PermanentError: no"), 4.0)
    [task] = graph.take_changes().updated
    assert (task.status.value, task.error, task.reason) == ("failed", "PermanentError: no", None)


# --------------------------------------------------------------------------- an agent that ends oddly


def _finishes(fn, within: float):
    """Run ``fn`` on a daemon thread; return ``(finished, value or error)`` once it returns or
    ``within`` seconds have passed (a hang must fail the test, not freeze the run)."""
    box: dict = {}

    def body():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            box["value"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(within)
    return not thread.is_alive(), box.get("value")


@pytest.mark.ray
def test_stop_and_shutdown_finish_after_a_handler_called_exit_actor(ray_session, tmp_path, monkeypatch, uid):
    monkeypatch.setattr(agents_module, "STOP_MARGIN_S", 3.0)  # the test need not wait the default
    settings = make_settings(tmp_path, None, f"exit-actor-{uid}", lease_ttl=2.0, long_poll=1.5)
    rt = omoi.connect(settings, migrate=True)
    ended = False
    try:
        agents = [rt.spawn_agent(f"exiter-{n}", capabilities=[f"exiter-{n}"], handler=f"{__name__}:hostile")
                  for n in (1, 2)]
        tasks = [omoi.TaskSpec(id=f"{uid}-exit-{n}", type="x", requires=[f"exiter-{n}"], max_retries=0,
                               payload={"what": "exit_actor"}) for n in (1, 2)]
        rt.submit(tasks)
        assert rt.wait([t.id for t in tasks], timeout=60) == {t.id: "failed" for t in tasks}

        finished, value = _finishes(lambda: agents[0].stop(timeout=1), within=60)
        assert finished, "AgentRef.stop hung after exit_actor()"
        assert not isinstance(value, BaseException), value
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(agents[0].handle.pid.remote(), timeout=30)  # the actor is gone

        finished, value = _finishes(lambda: rt.shutdown(agents_timeout=1), within=60)
        assert finished, "Runtime.shutdown hung after exit_actor()"
        assert value is None
        ended = True
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(agents[1].handle.pid.remote(), timeout=30)
    finally:
        if not ended:
            for agent in rt.status().agents:
                rt.agent(agent.id).kill()
            rt.shutdown(agents_timeout=0)


# --------------------------------------------------------------------------- agents refused at once


def _closure_over_a_lock():
    lock = threading.Lock()

    def locked(task):
        with lock:
            return {"ok": True}

    return locked


@pytest.mark.ray
@pytest.mark.parametrize("how", ["handler", "handlers"])
def test_an_unpicklable_handler_is_refused_naming_it_and_nothing_starts(rt, uid, how):
    name = f"unpicklable-{uid}"
    fn = _closure_over_a_lock()
    given = {"handler": fn} if how == "handler" else {"handlers": {"work": fn}}
    with pytest.raises(InvalidAgentSpecError) as caught:
        rt.spawn_agent(name, capabilities=["x"], **given)
    field = "handler" if how == "handler" else "handlers['work']"
    assert str(caught.value) == (
        f"agent '{name}': {field} {__name__}:_closure_over_a_lock.<locals>.locked cannot be sent to the agent's "
        "process (TypeError: cannot pickle '_thread.lock' object); define it at module level and pass its import "
        "path 'pkg.module:function' instead"
    )
    with pytest.raises(AgentNotFoundError):
        rt.agent(name)
    assert name not in {a.id for a in rt.status().agents}


@pytest.mark.ray
@pytest.mark.parametrize("bad", [None, "x\n", "", 7, "a b", "x" * 129])
def test_a_bad_agent_name_is_refused_in_one_line(rt, bad):
    with pytest.raises(InvalidArgumentError) as caught:
        rt.agent(bad)
    message = str(caught.value)
    assert message.startswith("agent name must be 1-128 characters") and "\n" not in message
