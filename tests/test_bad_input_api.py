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
    HandoffNotFoundError,
    IllegalPhaseMoveError,
    InvalidAgentSpecError,
    InvalidArgumentError,
    InvalidCancelError,
    InvalidCoordinationError,
    InvalidEventQueryError,
    InvalidHandoffError,
    InvalidLockRequestError,
    InvalidMessageError,
    InvalidSubmissionError,
    InvalidTaskSpecError,
    InvalidTicketError,
    NotHolderError,
    PatternError,
    TaskNotFoundError,
    ThreadNotFoundError,
    TicketNotFoundError,
)
from tests.test_bad_input_specs import AGENT_CASES, TASK_CASES, nested, task_fields

pytestmark = pytest.mark.ray
H = "tests.handlers:behave"
NAN, INF = float("nan"), float("inf")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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


# ------------------------------------------- the newer APIs: lists are lists, names are whole

def _spawn(rt, u, **kwargs):
    return rt.spawn_agent(f"nb-{u}", capabilities=["x"], handler=H, **kwargs)


# (case id, a call on (runtime, uid), error, text the message must hold). Every id or name ends
# in "\n" or a list is given as a bare string: each is refused before anything is stored.
NEWER_API_CASES = [
    ("search-capabilities-string", lambda rt, u: rt.agents.search(capabilities="gpu"), InvalidArgumentError,
     "capabilities must be a list"),
    ("search-tags-string", lambda rt, u: rt.agents.search(capabilities=["x"], tags="eu"), InvalidArgumentError,
     "tags must be a list"),
    ("search-phase-newline", lambda rt, u: rt.agents.search(capabilities=["x"], phase="P\n"), InvalidArgumentError,
     "phase"),
    ("search-type-newline", lambda rt, u: rt.agents.search(capabilities=["x"], type="agent\n"), InvalidArgumentError,
     "type"),
    ("search-include-unhealthy-string", lambda rt, u: rt.agents.search(capabilities=["x"], include_unhealthy="no"),
     InvalidArgumentError, "include_unhealthy"),
    ("best-fit-capabilities-string", lambda rt, u: rt.agents.best_fit(capabilities="gpu"), InvalidArgumentError,
     "capabilities must be a list"),
    ("agent-get-newline", lambda rt, u: rt.agents.get(f"a-{u}\n"), InvalidArgumentError, "agent name"),
    ("spawn-tags-string", lambda rt, u: _spawn(rt, u, tags="eu"), InvalidAgentSpecError, "tags must be a list"),
    ("spawn-type-newline", lambda rt, u: _spawn(rt, u, type="agent\n"), InvalidAgentSpecError, "type"),
    ("spawn-phase-newline", lambda rt, u: _spawn(rt, u, phase="P\n"), InvalidAgentSpecError, "phase"),
    ("spawn-exist-ok-string", lambda rt, u: _spawn(rt, u, exist_ok="yes"), InvalidAgentSpecError, "exist_ok"),
    ("ticket-id-newline", lambda rt, u: rt.tickets.create("t", id=f"tk-{u}\n"), InvalidTicketError, "ticket id"),
    ("ticket-priority-dotless-i", lambda rt, u: rt.tickets.create("t", id=f"tk-{u}", priority="h\u0131gh"),
     InvalidTicketError, "priority"),
    ("ticket-priority-bool", lambda rt, u: rt.tickets.create("t", id=f"tk-{u}", priority=True), InvalidTicketError,
     "priority"),
    ("ticket-phases-string", lambda rt, u: rt.tickets.create("t", id=f"tk-{u}", phases="abc"), InvalidTicketError,
     "phases"),
    ("ticket-auto-advance-string", lambda rt, u: rt.tickets.create("t", id=f"tk-{u}", auto_advance="no"),
     InvalidTicketError, "auto_advance"),
    ("ticket-get-newline", lambda rt, u: rt.tickets.get(f"tk-{u}\n"), InvalidTicketError, "ticket id"),
    ("ticket-move-newline", lambda rt, u: rt.tickets.move(f"tk-{u}", "DESIGN\n"), InvalidTicketError, "to"),
    ("ticket-approve-by-newline", lambda rt, u: rt.tickets.approve(f"tk-{u}", by="me\n"), InvalidTicketError, "by"),
    ("ticket-list-status-newline", lambda rt, u: rt.tickets.list(status="open\n"), InvalidTicketError, "status"),
    ("pattern-params-string", lambda rt, u: rt.patterns.apply("majority_vote", params="abc"), PatternError, "params"),
    ("pattern-param-bool-for-int", lambda rt, u: rt.patterns.apply("majority_vote", params={"evaluators": True}),
     PatternError, "evaluators"),
    ("pattern-name-newline", lambda rt, u: rt.patterns.apply("majority_vote\n"), PatternError, "majority_vote\\n"),
    ("pattern-prefix-newline", lambda rt, u: rt.patterns.apply("majority_vote", prefix=f"p{u}\n"), PatternError,
     "prefix"),
    ("pattern-ticket-newline", lambda rt, u: rt.patterns.apply("majority_vote", ticket=f"tk-{u}\n"), PatternError,
     "ticket"),
    ("sync-members-string", lambda rt, u: rt.submit([omoi.SyncSpec(id=f"{u}-s", members="abc")]),
     InvalidCoordinationError, "members must be a list"),
    ("sync-members-dict-string", lambda rt, u: rt.submit([{"kind": "sync", "id": f"{u}-s", "members": "abc"}]),
     InvalidCoordinationError, "members must be a list"),
    ("sync-member-newline", lambda rt, u: rt.submit([{"kind": "sync", "id": f"{u}-s", "members": [f"{u}-a\n"]}]),
     InvalidCoordinationError, "members entries"),
    ("thread-participants-string", lambda rt, u: rt.messages.create_thread("review", f"a-{u}"), InvalidMessageError,
     "participants must be a list"),
    ("thread-participant-newline", lambda rt, u: rt.messages.create_thread("review", [f"a-{u}\n", f"b-{u}"]),
     InvalidMessageError, "participants[0]"),
    ("thread-id-newline", lambda rt, u: rt.messages.create_thread("review", [f"a-{u}"], thread_id=f"th-{u}\n"),
     InvalidMessageError, "thread_id"),
    ("send-to-newline", lambda rt, u: rt.messages.send(f"th-{u}", f"a-{u}", "hi", to=f"b-{u}\n"), InvalidMessageError,
     ".to"),
    ("send-to-list", lambda rt, u: rt.messages.send(f"th-{u}", f"a-{u}", "hi", to=[f"b-{u}"]), InvalidMessageError,
     ".to"),
    ("send-many-mapping", lambda rt, u: rt.messages.send_many({"thread": f"th-{u}", "sender": f"a-{u}", "body": 1}),
     InvalidMessageError, "posts must be a list"),
    ("mark-read-string", lambda rt, u: rt.messages.mark_read(f"a-{u}", "abc"), InvalidMessageError,
     "message_ids must be a list"),
    ("receive-timeout-nan", lambda rt, u: rt.messages.receive(f"a-{u}", timeout=NAN), InvalidMessageError, "timeout"),
    ("receive-limit-bool", lambda rt, u: rt.messages.receive(f"a-{u}", limit=True), InvalidMessageError, "limit"),
    ("unread-limit-zero", lambda rt, u: rt.messages.unread(f"a-{u}", limit=0), InvalidMessageError, "limit"),
    ("unread-cursor-newline", lambda rt, u: rt.messages.unread(f"a-{u}", cursor="5\n"), InvalidMessageError, "cursor"),
    ("offer-to-string", lambda rt, u: rt.handoffs.offer(f"{u}-t", to=f"b-{u}"), InvalidHandoffError,
     "to must be a list"),
    ("offer-capabilities-string", lambda rt, u: rt.handoffs.offer(f"{u}-t", capabilities="gpu"), InvalidHandoffError,
     "capabilities must be a list"),
    ("offer-to-newline", lambda rt, u: rt.handoffs.offer(f"{u}-t", to=[f"b-{u}\n"]), InvalidHandoffError, "to"),
    ("offer-task-newline", lambda rt, u: rt.handoffs.offer(f"{u}-t\n", to=[f"b-{u}"]), InvalidHandoffError,
     "task_id"),
    ("offer-deadline-bool", lambda rt, u: rt.handoffs.offer(f"{u}-t", to=[f"b-{u}"], deadline=True),
     InvalidHandoffError, "deadline"),
    ("accept-offer-id-newline", lambda rt, u: rt.handoffs.accept(f"ho-{u}\n", agent=f"b-{u}"), InvalidHandoffError,
     "offer id"),
    ("lock-keep-alive-string", lambda rt, u: rt.lock(f"file:{u}", keep_alive="no"), InvalidLockRequestError,
     "keep_alive"),
    ("wait-progress-string", lambda rt, u: rt.wait([f"{u}-t"], progress="no"), InvalidArgumentError, "progress"),
    ("run-progress-string", lambda rt, u: rt.run([{"id": f"{u}-run", "type": "t"}], progress="no"),
     InvalidArgumentError, "progress"),
]


def _everything_stored(rt) -> tuple:
    grants = ray.get(rt.lock_manager.describe.remote())["active_grants"]
    threads = len(rt.messages.threads(limit=10_000).items)
    return stored_total(rt), len(rt.tickets.list()), threads, len(rt.agents.list()), grants


@pytest.mark.parametrize("act,error,field", [c[1:] for c in NEWER_API_CASES], ids=[c[0] for c in NEWER_API_CASES])
def test_a_bad_argument_to_a_newer_api_is_refused_and_changes_nothing(runtime, uid, act, error, field):
    before = _everything_stored(runtime)
    with pytest.raises(error) as err:
        act(runtime, uid)
    message = str(err.value)
    assert field in message and not CONTROL.search(message), message
    assert _everything_stored(runtime) == before


@pytest.mark.parametrize("method,error", [("group_status", InvalidArgumentError), ("cancel_group", InvalidCancelError)])
@pytest.mark.parametrize("prefix", ["p.q", "p\n", 7], ids=["dot", "newline", "int"])
def test_a_group_prefix_is_a_name_without_a_dot(runtime, method, error, prefix):
    # the scheduler's group calls hold the same rule as rt.patterns.apply's prefix
    with pytest.raises(error, match=f"{method}: prefix must be"):
        call(lambda: getattr(runtime.scheduler, method).remote(prefix))


@pytest.mark.parametrize("prefix", ["p.q", "p\n", 7], ids=["dot", "newline", "int"])
def test_a_wait_scoped_to_a_group_takes_the_same_prefix_rule(runtime, prefix):
    # rt.patterns.progress waits with the pattern's prefix: a bad one is refused, never stringified
    with pytest.raises(InvalidArgumentError, match="wait: prefix must be"):
        call(lambda: runtime.scheduler.wait.remote([], 0.0, prefix))


# ------------------------------------- errors raised in the scheduler's mixins arrive plain

MIXIN_ERRORS = [
    ("tickets", lambda rt, u: rt.tickets.get(f"tk-{u}-none"), TicketNotFoundError),
    ("tickets-move", lambda rt, u: rt.tickets.move(rt.tickets.create("t", id=f"tk-{u}").id, "DONE"),
     IllegalPhaseMoveError),
    ("joins", lambda rt, u: call(lambda: rt.scheduler.merge_inputs.remote(f"{u}-none")), TaskNotFoundError),
    ("registry", lambda rt, u: rt.agents.get(f"none-{u}"), AgentNotFoundError),
    ("messaging", lambda rt, u: rt.messages.thread(f"th-{u}"), ThreadNotFoundError),
    ("messaging-unknown-participant", lambda rt, u: rt.messages.create_thread("review", [f"none-{u}"]),
     InvalidMessageError),
    ("handoffs", lambda rt, u: rt.handoffs.get(f"ho-{u}"), HandoffNotFoundError),
    ("handoffs-not-held", lambda rt, u: rt.handoffs.offer(f"{u}-none", to=[f"none-{u}"]), NotHolderError),
]


@pytest.mark.parametrize("act,error", [c[1:] for c in MIXIN_ERRORS], ids=[c[0] for c in MIXIN_ERRORS])
def test_an_error_raised_in_a_scheduler_mixin_reaches_the_caller_as_the_plain_typed_error(runtime, uid, act, error):
    with pytest.raises(error) as err:
        act(runtime, uid)
    assert type(err.value) is error, type(err.value)  # not Ray's RayTaskError(...) dual class
    assert not isinstance(err.value, ray.exceptions.RayTaskError)
    message = str(err.value)
    assert "Traceback" not in message and not CONTROL.search(message), message


def test_switches_are_true_or_false_only(runtime, uid):
    agent = _spawn(runtime, uid)
    try:
        with pytest.raises(InvalidArgumentError, match="restart must be True or False"):
            agent.kill(restart="no")
        assert runtime.agents.get(f"nb-{uid}").health == "healthy"  # not killed
    finally:
        agent.stop()
    with pytest.raises(InvalidArgumentError, match="migrate must be True or False"):
        omoi.connect(runtime.settings, migrate="yes")


@pytest.mark.parametrize(
    "kwargs,field",
    [({"capabilities": "gpu"}, "capabilities must be a list"), ({"tags": "eu"}, "tags must be a list"),
     ({"capabilities": ["gpu\n"]}, "capabilities"), ({"capacity": True}, "capacity")],
    ids=["capabilities-string", "tags-string", "capability-newline", "capacity-bool"],
)
def test_a_bad_live_update_leaves_the_agent_as_it_was(runtime, uid, kwargs, field):
    agent = _spawn(runtime, uid, tags=["eu"])
    try:
        before = runtime.agents.get(f"nb-{uid}")
        with pytest.raises(InvalidAgentSpecError, match=re.escape(field)):
            agent.update(**kwargs)
        after = runtime.agents.get(f"nb-{uid}")
        assert (after.capabilities, after.tags, after.capacity) == (before.capabilities, before.tags, before.capacity)
    finally:
        agent.stop()
