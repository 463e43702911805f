"""Bad input refused by the driver API on a running runtime (SQLite and PostgreSQL): the typed
error names the field, and nothing was stored or started.

Submissions hold a good task next to the bad one, so each case also shows that a submission is
all-or-nothing. The task table is ``TASK_CASES`` of ``test_bad_input_specs.py``.
"""

from __future__ import annotations

import re
import uuid

import pytest
import ray

import omoi_ray as omoi
from omoi_ray.client.calls import call
from omoi_ray.core.storable import MAX_WAIT_S
from omoi_ray.errors import (
    AgentNotFoundError,
    InvalidAgentSpecError,
    InvalidArgumentError,
    InvalidEventQueryError,
    InvalidLockRequestError,
    InvalidSubmissionError,
    InvalidTaskSpecError,
    TaskNotFoundError,
)
from tests.test_bad_input_specs import AGENT_CASES, TASK_CASES, nested, task_fields

pytestmark = pytest.mark.ray
H = "tests.handlers:behave"
NAN, INF = float("nan"), float("inf")


def plain(exc: BaseException) -> str:
    """The one-line message of an error raised in the scheduler (Ray may still wrap it: the
    unwrapping is fixed separately; the class test holds either way)."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        exc = exc.cause
    return str(exc)


def stored_total(rt) -> int:
    return sum(rt.status().tasks.values())


def assert_not_stored(rt, before: int, *ids: str) -> None:
    assert stored_total(rt) == before
    for task_id in ids:
        with pytest.raises(TaskNotFoundError):
            rt.get(task_id)


@pytest.mark.parametrize("fields,field", [c[1:] for c in TASK_CASES], ids=[c[0] for c in TASK_CASES])
def test_a_bad_task_field_stores_nothing(runtime, uid, fields, field):
    before = stored_total(runtime)
    good = {"id": f"{uid}-good", "type": "t"}
    bad = task_fields(uid, fields)
    with pytest.raises(InvalidTaskSpecError) as err:
        runtime.submit([good, bad])
    message = plain(err.value)
    assert field in message and "\n" not in message
    if "id" not in fields:
        assert message.startswith(f"task '{uid}-bad': ")
    assert_not_stored(runtime, before, good["id"], *([bad["id"]] if "id" not in fields else []))


@pytest.mark.parametrize(
    "make",
    [
        lambda u: omoi.TaskSpec(id=f"{u}-one", type="t"),
        lambda u: f"{u}-abc",
        lambda u: {"id": f"{u}-one", "type": "t"},
        lambda u: 123,
    ],
    ids=["taskspec", "string", "mapping", "int"],
)
def test_submit_asks_for_a_list_of_tasks(runtime, uid, make):
    before = stored_total(runtime)
    with pytest.raises(InvalidSubmissionError, match="pass a list of tasks"):
        runtime.submit(make(uid))
    assert_not_stored(runtime, before, f"{uid}-one")


def test_job_and_job_newline_are_never_two_tasks(runtime, uid):
    assert runtime.submit([{"id": f"{uid}-job", "type": "t", "requires": [f"none-{uid}"]}]) == [f"{uid}-job"]
    before = stored_total(runtime)
    for fields in ({"id": f"{uid}-job\n"}, {"id": f"{uid}-job2", "type": "t\n"},
                   {"id": f"{uid}-job3", "depends_on": [f"{uid}-job\n"]}):
        with pytest.raises(InvalidTaskSpecError):
            runtime.submit([{"type": "t", **fields}])
    assert stored_total(runtime) == before
    info = runtime.get(f"{uid}-job")
    assert (info.status, info.attempt) == ("ready", 0)  # never claimed: attempt 0; the first claim makes it 1
    runtime.cancel(f"{uid}-job")


def test_a_payload_too_deep_to_send_is_refused_on_the_driver(runtime, uid):
    before = stored_total(runtime)
    with pytest.raises(InvalidTaskSpecError, match=f"task '{uid}-deep': payload is nested more than 64"):
        runtime.submit([{"id": f"{uid}-deep", "type": "t", "payload": {"a": nested(100_000)}}])
    with pytest.raises(InvalidTaskSpecError, match="payload is nested more than 64"):
        runtime.submit([omoi.TaskSpec(id=f"{uid}-deep", type="t", payload=nested(100_000))])
    assert_not_stored(runtime, before, f"{uid}-deep")


def test_the_scheduler_validates_too_when_the_client_is_skipped(runtime, uid):
    before = stored_total(runtime)
    items = [{"id": f"{uid}-raw", "type": "t", "payload": {"v": "a\x00b"}}]
    with pytest.raises(InvalidTaskSpecError, match="payload"):
        call(lambda: runtime.scheduler.submit.remote(items, uuid.uuid4().hex))
    with pytest.raises(InvalidSubmissionError, match="pass a list of tasks"):
        call(lambda: runtime.scheduler.submit.remote("abc", uuid.uuid4().hex))
    assert_not_stored(runtime, before, f"{uid}-raw")


def test_run_checks_its_timeout_before_submitting(runtime, uid):
    before = stored_total(runtime)
    with pytest.raises(InvalidArgumentError, match="timeout"):
        runtime.run([{"id": f"{uid}-run", "type": "t"}], timeout=NAN)
    assert_not_stored(runtime, before, f"{uid}-run")


# (case id, a call on the runtime, error, text the message must hold)
CALL_CASES = [
    ("get-int", lambda rt: rt.get(123), InvalidArgumentError, "task_id"),
    ("get-newline", lambda rt: rt.get("a\n"), InvalidArgumentError, "task_id"),
    ("get-nul", lambda rt: rt.get("a\x00"), InvalidArgumentError, "task_id"),
    ("get_many-string", lambda rt: rt.get_many("abc"), InvalidArgumentError, "task_ids"),
    ("get_many-int-entry", lambda rt: rt.get_many(["a", 1]), InvalidArgumentError, "task_ids[1]"),
    ("get_many-none", lambda rt: rt.get_many(None), InvalidArgumentError, "task_ids"),
    ("wait-string", lambda rt: rt.wait("abc"), InvalidArgumentError, "task_ids"),
    ("wait-timeout-nan", lambda rt: rt.wait(["a"], timeout=NAN), InvalidArgumentError, "timeout"),
    ("wait-timeout-inf", lambda rt: rt.wait(["a"], timeout=INF), InvalidArgumentError, "timeout"),
    ("wait-timeout-negative", lambda rt: rt.wait(["a"], timeout=-1), InvalidArgumentError, "timeout"),
    ("wait-timeout-bool", lambda rt: rt.wait(["a"], timeout=True), InvalidArgumentError, "timeout"),
    ("wait-timeout-string", lambda rt: rt.wait(["a"], timeout="5"), InvalidArgumentError, "timeout"),
    ("wait-timeout-huge", lambda rt: rt.wait(["a"], timeout=MAX_WAIT_S * 10), InvalidArgumentError, "timeout"),
    ("attempts-int", lambda rt: rt.attempts(123), InvalidArgumentError, "task_id"),
    ("attempts-newline", lambda rt: rt.attempts("a\n"), InvalidArgumentError, "task_id"),
    ("events-limit-zero", lambda rt: rt.events(limit=0), InvalidArgumentError, "limit"),
    ("events-limit-bool", lambda rt: rt.events(limit=True), InvalidArgumentError, "limit"),
    ("events-entity-nul", lambda rt: rt.events("a\x00"), InvalidArgumentError, "entity_id"),
    ("flush-timeout-nan", lambda rt: rt.flush_events(timeout=NAN), InvalidArgumentError, "timeout"),
    ("shutdown-timeout-nan", lambda rt: rt.shutdown(agents_timeout=NAN), InvalidArgumentError, "agents_timeout"),
    ("agent-stop-timeout-negative", lambda rt: omoi.AgentRef("nobody", None).stop(timeout=-1), InvalidArgumentError,
     "timeout"),
    ("lock-holder-empty", lambda rt: rt.lock("file:x", holder=""), InvalidLockRequestError, "holder"),
    ("lock-holder-nul", lambda rt: rt.lock("file:x", holder="h\x00"), InvalidLockRequestError, "holder"),
    ("lock-holder-int", lambda rt: rt.lock("file:x", holder=5), InvalidLockRequestError, "holder"),
    ("lock-type-newline", lambda rt: rt.lock("file\n:x"), InvalidLockRequestError, "resource type"),
    ("lock-ttl-zero", lambda rt: rt.lock("file:x", ttl=0), InvalidLockRequestError, "ttl"),
    ("lock-ttl-nan", lambda rt: rt.lock("file:x", ttl=NAN), InvalidLockRequestError, "ttl"),
    ("lock-ttl-huge", lambda rt: rt.lock("file:x", ttl=1e12), InvalidLockRequestError, "ttl"),
    ("lock-ttl-bool", lambda rt: rt.lock("file:x", ttl=True), InvalidLockRequestError, "ttl"),
    ("lock-wait-negative", lambda rt: rt.lock("file:x", wait=-1), InvalidLockRequestError, "wait"),
    ("lock-wait-inf", lambda rt: rt.lock("file:x", wait=INF), InvalidLockRequestError, "wait"),
    ("lock-wait-bool", lambda rt: rt.lock("file:x", wait=True), InvalidLockRequestError, "wait"),
    ("follow-poll-negative", lambda rt: rt.follow(poll=-1), InvalidEventQueryError, "poll"),
    ("follow-poll-nan", lambda rt: rt.follow(poll=NAN), InvalidEventQueryError, "poll"),
    ("follow-since-huge", lambda rt: rt.follow(since="0-100000000000000000000"), InvalidEventQueryError,
     "event position"),
    ("follow-since-int", lambda rt: rt.follow(since=0), InvalidEventQueryError, "event position"),
    ("follow-types-int", lambda rt: rt.follow(types=123), InvalidEventQueryError, "types"),
    ("follow-types-bracket", lambda rt: rt.follow(types="["), InvalidEventQueryError, "pattern"),
    ("follow-batch-zero", lambda rt: rt.follow(batch=0), InvalidEventQueryError, "batch"),
]


@pytest.mark.parametrize("act,error,field", [c[1:] for c in CALL_CASES], ids=[c[0] for c in CALL_CASES])
def test_a_bad_driver_argument_is_refused_before_anything_happens(runtime, act, error, field):
    grants = ray.get(runtime.lock_manager.describe.remote())["active_grants"]
    before = stored_total(runtime)
    with pytest.raises(error, match=re.escape(field)):
        act(runtime)
    assert ray.get(runtime.lock_manager.describe.remote())["active_grants"] == grants
    assert stored_total(runtime) == before


def test_an_empty_holder_is_refused_and_none_means_the_drivers_own(runtime, uid):
    with runtime.lock(f"file:{uid}", wait=0, holder=None) as lease:
        assert lease.holder == runtime.locks.holder
    with pytest.raises(InvalidLockRequestError, match="holder"):
        runtime.locks.acquire(f"file:{uid}", holder="")


@pytest.mark.parametrize("fields,field", [c[1:] for c in AGENT_CASES], ids=[c[0] for c in AGENT_CASES])
def test_a_bad_agent_is_refused_and_not_started(runtime, uid, fields, field):
    name = f"bad-{uid}"
    args = {"capabilities": ["x"], "handler": H, **fields}
    args.setdefault("name", name)
    with pytest.raises(InvalidAgentSpecError, match=re.escape(field)):
        runtime.spawn_agent(args.pop("name"), **args)
    with pytest.raises(AgentNotFoundError):
        runtime.agent(name)
    assert name not in {a.id for a in runtime.status().agents}


@pytest.mark.parametrize(
    "kwargs,field",
    [({"resources": {"no_such_resource": 1}}, "no_such_resource"), ({"num_cpus": 1000}, "num_cpus")],
    ids=["unknown-resource", "more-cpus-than-any-node"],
)
def test_an_agent_no_node_can_host_is_refused_at_once(runtime, uid, kwargs, field):
    name = f"nowhere-{uid}"
    with pytest.raises(InvalidAgentSpecError, match=re.escape(field)):
        runtime.spawn_agent(name, capabilities=["x"], handler=H, **kwargs)
    with pytest.raises(AgentNotFoundError):
        runtime.agent(name)


def test_capabilities_given_as_a_string_are_never_split(runtime, uid):
    name = f"caps-{uid}"
    with pytest.raises(InvalidAgentSpecError, match="capabilities must be a list"):
        runtime.spawn_agent(name, capabilities="gpu", handler=H)
    assert name not in {a.id for a in runtime.status().agents}


def test_any_field_too_deep_to_send_is_a_typed_error(runtime, uid):
    before = stored_total(runtime)
    with pytest.raises(InvalidSubmissionError, match="cannot be sent"):
        runtime.submit([{"id": f"{uid}-deeplocks", "type": "t", "locks": nested(100_000)}])
    assert_not_stored(runtime, before, f"{uid}-deeplocks")
