"""One call policy (``omoi_ray.client.calls``): a singleton's restart costs time, never an attempt, and
errors raised inside actors reach callers as the plain typed omoi error.

The policy itself is tested with stand-in calls (no Ray process needed); the restarts are real:
the lock manager or the scheduler is killed (Ray restarts it) while an agent waits on it, on
SQLite and PostgreSQL, each test in a runtime of its own.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

import pytest
import ray
from pydantic import SecretStr

import omoi_ray as omoi
from omoi_ray.client import calls
from omoi_ray.errors import (
    ConfigurationError,
    CycleError,
    HandlerNotFoundError,
    LockUnavailableError,
    RuntimeUnavailableError,
    TaskCancelledError,
    TaskNotFoundError,
)
from omoi_ray.settings import Settings
from tests.conftest import until
from tests.handlers import gate

H = "tests.handlers:behave"
ANSI = re.compile(r"\x1b\[")


def unavailable() -> ray.exceptions.ActorUnavailableError:
    return ray.exceptions.ActorUnavailableError("The actor is temporarily unavailable: IOError: The actor was restarted", None)


def wrapped(cause: BaseException) -> BaseException:
    """What Ray raises in the caller for an error raised in an actor method."""
    tb = f"Traceback (most recent call last):\n  File \"x.py\", line 1\n\x1b[36m{type(cause).__name__}: {cause}\x1b[39m"
    return ray.exceptions.RayTaskError("f", tb, cause, proctitle="ray::A.f", pid=1, ip="127.0.0.1").as_instanceof_cause()


class Flaky:
    """A stand-in actor call: raises the given errors in turn, then answers; counts the tries and
    remembers the arguments of each."""

    def __init__(self, *errors: BaseException, answer: object = "ok") -> None:
        self.errors = list(errors)
        self.answer = answer
        self.tries: list[tuple] = []

    async def __call__(self, *args: object) -> object:
        self.tries.append(args)
        if self.errors:
            raise self.errors.pop(0)
        return self.answer


def assert_one_plain_line(err: BaseException, cls: type) -> None:
    assert type(err) is cls
    text = str(err)
    assert "\n" not in text and "Traceback" not in text and not ANSI.search(text), text


# ------------------------------------------------------------------------------- the policy


def test_unwrap_returns_the_plain_typed_error_not_rays_wrapper():
    cause = CycleError("tasks a -> b -> a form a cycle", cycle=["a", "b", "a"])
    err = wrapped(cause)
    assert isinstance(err, CycleError) and type(err) is not CycleError  # Ray's dual wrapper
    plain = calls.unwrap(err)
    assert plain is cause and plain.cycle == ["a", "b", "a"]
    assert_one_plain_line(plain, CycleError)
    other = wrapped(ValueError("not ours"))
    assert calls.unwrap(other) is other  # only omoi errors are unwrapped


def test_an_unavailable_actor_is_asked_again_with_the_same_arguments_until_it_answers():
    fake = Flaky(unavailable(), unavailable(), answer={"granted": True})
    got = asyncio.run(calls.call_async(lambda: fake("holder", "req-1"), policy=calls.AGENT))
    assert got == {"granted": True}
    assert fake.tries == [("holder", "req-1")] * 3


def test_an_error_raised_in_the_actor_is_final_and_arrives_plain():
    fake = Flaky(wrapped(LockUnavailableError("res:x is not available now")))
    with pytest.raises(LockUnavailableError) as caught:
        asyncio.run(calls.call_async(fake, policy=calls.AGENT))
    assert_one_plain_line(caught.value, LockUnavailableError)
    assert len(fake.tries) == 1


@pytest.mark.parametrize("error", [ValueError("bad argument"), ray.exceptions.GetTimeoutError("get timed out")])
def test_other_errors_are_final_and_unchanged(error):
    fake = Flaky(error)
    with pytest.raises(type(error)) as caught:
        asyncio.run(calls.call_async(fake, policy=calls.AGENT))
    assert caught.value is error and len(fake.tries) == 1


def test_a_gone_actor_is_looked_up_again_by_name_when_the_caller_can():
    died = ray.exceptions.ActorDiedError()
    handles = {"current": "old"}
    fake = Flaky(died, answer="new answer")
    looked_up = []

    def refresh():
        looked_up.append(True)
        handles["current"] = "new"
        return "new"

    got = asyncio.run(calls.call_async(lambda: fake(handles["current"]), policy=calls.AGENT, refresh=refresh))
    assert got == "new answer" and looked_up == [True]
    assert fake.tries == [("old",), ("new",)]
    # a caller that cannot look it up (a driver's handle) is told at once
    fake = Flaky(ray.exceptions.ActorDiedError())
    with pytest.raises(RuntimeUnavailableError, match="gone .* connect\\(\\) again") as caught:
        asyncio.run(calls.call_async(fake, policy=calls.Policy.driver(60), what="the scheduler"))
    assert_one_plain_line(caught.value, RuntimeUnavailableError)
    assert len(fake.tries) == 1


def test_an_already_done_answer_to_a_repeated_call_is_the_callers_to_interpret():
    from omoi_ray.errors import LockNotHeldError

    def released_before(error):
        if isinstance(error, LockNotHeldError):
            return 0
        raise error

    # the first try ended the grant, then the actor restarted before answering
    fake = Flaky(unavailable(), wrapped(LockNotHeldError("'me' holds no grant 'g-1'")))
    assert asyncio.run(calls.call_async(fake, policy=calls.AGENT, if_repeated=released_before)) == 0
    assert len(fake.tries) == 2
    # the same answer to a call made once is an error
    fake = Flaky(wrapped(LockNotHeldError("'me' holds no grant 'g-1'")))
    with pytest.raises(LockNotHeldError):
        asyncio.run(calls.call_async(fake, policy=calls.AGENT, if_repeated=released_before))


class StandInScheduler:
    """A scheduler of ``Flaky`` methods for a ``HandoffClient`` (``handle.method.remote(*args)``)."""

    def __init__(self, **methods: Flaky) -> None:
        for name, fake in methods.items():
            setattr(self, name, type("M", (), {"remote": staticmethod(fake)})())


def _closed(message: str, **details: object):
    from omoi_ray.errors import HandoffClosedError

    return wrapped(HandoffClosedError(message, offer_id="o-1", **details))


def test_a_handoff_answer_made_again_after_a_restart_is_its_own_answer_not_a_refusal():
    from types import SimpleNamespace

    from omoi_ray.client.calls import drive_async
    from omoi_ray.client.handoffs import HandoffClient
    from omoi_ray.errors import HandoffClosedError

    def client(scheduler):
        return HandoffClient(lambda: scheduler, agent="me", task_id="t", attempt=1, policy=calls.HANDLER)

    # accept: the first try was committed, then the scheduler restarted before answering
    accepted = SimpleNamespace(status="accepted", accepted_by="me", declines={})
    accept = Flaky(unavailable(), _closed("offer 'o-1' was already accepted by agent 'me'", winner="me"))
    read = Flaky(answer=accepted)
    assert asyncio.run(drive_async(client(StandInScheduler(accept_handoff=accept, handoff=read))._accept("o-1"))) is accepted
    assert accept.tries == [("o-1", "me")] * 2 and read.tries == [("o-1",)]

    # ... but another agent's win stays a refusal
    won = SimpleNamespace(status="accepted", accepted_by="other", declines={})
    accept = Flaky(unavailable(), _closed("offer 'o-1' was already accepted by agent 'other'", winner="other"))
    with pytest.raises(HandoffClosedError, match="accepted by agent 'other'") as caught:
        asyncio.run(drive_async(client(StandInScheduler(accept_handoff=accept, handoff=Flaky(answer=won)))._accept("o-1")))
    assert_one_plain_line(caught.value, HandoffClosedError)

    # ... and a refusal to a call made once is not looked into
    accept, read = Flaky(_closed("offer 'o-1' was already accepted by agent 'me'", winner="me")), Flaky()
    with pytest.raises(HandoffClosedError):
        asyncio.run(drive_async(client(StandInScheduler(accept_handoff=accept, handoff=read))._accept("o-1")))
    assert read.tries == []

    # decline: "already declined" after a repeat is this call's own decline
    declined = SimpleNamespace(status="open", accepted_by=None, declines={"me": "busy"})
    decline = Flaky(unavailable(), _closed("agent 'me' already declined offer 'o-1'", status="open"))
    got = asyncio.run(drive_async(client(StandInScheduler(decline_handoff=decline, handoff=Flaky(answer=declined)))
                                  ._decline("o-1", reason="busy")))
    assert got is declined and decline.tries == [("o-1", "me", "busy")] * 2
    # other errors of a repeated answer are final as before
    from omoi_ray.errors import NotOfferedError

    decline = Flaky(unavailable(), wrapped(NotOfferedError("offer 'o-1' of task 't' was not made to agent 'me'")))
    with pytest.raises(NotOfferedError):
        asyncio.run(drive_async(client(StandInScheduler(decline_handoff=decline, handoff=Flaky()))._decline("o-1")))


def test_thread_calls_made_again_after_a_restart_do_not_act_twice():
    from types import SimpleNamespace

    from omoi_ray.client.calls import drive_async
    from omoi_ray.client.messages import Messages
    from omoi_ray.errors import ThreadClosedError, ThreadExistsError

    def client(**methods):
        return Messages(SimpleNamespace(scheduler=StandInScheduler(**methods)))

    # posts: each gets its id before the first try, and keeps it on every try; the scheduler is
    # told to look the ids up only on a later try
    send = Flaky(unavailable(), answer=["info"])
    assert asyncio.run(drive_async(client(send_many=send)._send("th-1", "a", {"x": 1}))) == "info"
    (first, first_repeat), (second, second_repeat) = send.tries
    assert first == second and re.fullmatch(r"[0-9a-f]{32}", first[0]["id"])
    assert (first_repeat, second_repeat) == (False, True)
    send = Flaky(unavailable(), answer=["i1", "i2"])
    asyncio.run(drive_async(client(send_many=send)._send_many([{"thread": "th-1", "sender": "a", "body": n} for n in (1, 2)])))
    ids = [p["id"] for p in send.tries[0][0]]
    assert len(set(ids)) == 2 and send.tries[0][0] == send.tries[1][0]
    assert [again for _, again in send.tries] == [False, True]
    # ... an id the caller gave may repeat the caller's own earlier call: looked up from the first try
    send = Flaky(answer=["info"])
    given = {"thread": "th-1", "sender": "a", "body": 1, "id": "ab" * 16}
    asyncio.run(drive_async(client(send_many=send)._send_many([given])))
    assert send.tries == [([given], True)]

    # create: a thread id is chosen before the first try; "exists" on a repeat is this call's thread
    made = SimpleNamespace(type="review", participants=["a", "b"], created_by=None, ticket_id=None, task_id=None,
                           metadata={}, status="active", outcome=None)
    create = Flaky(unavailable(), wrapped(ThreadExistsError("thread 'x' already exists")))
    read = Flaky(answer=made)
    got = asyncio.run(drive_async(client(create_thread=create, get_thread=read)._create_thread("review", ["a", "b", "a"])))
    assert got is made
    thread_id = create.tries[0][2]
    assert thread_id.startswith("th-") and create.tries[0] == create.tries[1] and read.tries == [(thread_id,)]
    # ... a thread of another shape under a given id stays a refusal
    create = Flaky(unavailable(), wrapped(ThreadExistsError("thread 'x' already exists")))
    with pytest.raises(ThreadExistsError):
        asyncio.run(drive_async(client(create_thread=create, get_thread=Flaky(answer=made))
                                ._create_thread("consultation", ["a", "b"], thread_id="x")))

    # close: "already closed" on a repeat is this call's close when the thread shows it
    closed = SimpleNamespace(status="resolved", outcome={"ok": True})
    close = Flaky(unavailable(), wrapped(ThreadClosedError("thread 'x' is closed")))
    got = asyncio.run(drive_async(client(close_thread=close, get_thread=Flaky(answer=closed))
                                  ._close_thread("x", outcome={"ok": True})))
    assert got is closed
    close = Flaky(unavailable(), wrapped(ThreadClosedError("thread 'x' is closed")))
    with pytest.raises(ThreadClosedError):
        asyncio.run(drive_async(client(close_thread=close, get_thread=Flaky(answer=closed))._close_thread("x", "abandoned")))
    # ... the outcome compared as stored: the tuple given was stored as a list
    closed = SimpleNamespace(status="resolved", outcome={"pair": [1, 2], "n": 100000000000000000000})
    close = Flaky(unavailable(), wrapped(ThreadClosedError("thread 'x' is closed")))
    got = asyncio.run(drive_async(client(close_thread=close, get_thread=Flaky(answer=closed))
                                  ._close_thread("x", outcome={"pair": (1, 2), "n": 1e20})))
    assert got is closed
    for other in ({"pair": (1, 2, 3), "n": 1e20}, {"pair": (1, True), "n": 1e20}, None):
        close = Flaky(unavailable(), wrapped(ThreadClosedError("thread 'x' is closed")))
        with pytest.raises(ThreadClosedError):
            asyncio.run(drive_async(client(close_thread=close, get_thread=Flaky(answer=closed))._close_thread("x", outcome=other)))
    # ... and so is a created thread's metadata
    made = SimpleNamespace(type="review", participants=["a"], created_by=None, ticket_id=None, task_id=None,
                           metadata={"tags": ["x", "y"]}, status="active", outcome=None)
    create = Flaky(unavailable(), wrapped(ThreadExistsError("thread 'x' already exists")))
    got = asyncio.run(drive_async(client(create_thread=create, get_thread=Flaky(answer=made))
                                  ._create_thread("review", ["a"], thread_id="x", metadata={"tags": ("x", "y")})))
    assert got is made


def test_a_driver_gives_up_after_its_budget_and_an_agent_does_not(caplog):
    fake = Flaky(*[unavailable() for _ in range(1000)])
    with pytest.raises(RuntimeUnavailableError, match=r"the lock manager did not come back within 0\.3s \(OMOI_CALL_RETRY_FOR") as caught:
        asyncio.run(calls.call_async(fake, policy=calls.Policy.driver(0.3), what="the lock manager"))
    assert_one_plain_line(caught.value, RuntimeUnavailableError)
    assert 2 <= len(fake.tries) < 10  # retried, with growing waits, then stopped
    # the same outage for an agent: it outlasts the driver's budget, says so, and gets its answer
    agent = Flaky(*[unavailable() for _ in range(6)], answer="back")
    with caplog.at_level("WARNING", logger="omoi_ray.client.calls"):
        assert asyncio.run(calls.call_async(agent, policy=calls.AGENT, what="the scheduler")) == "back"
    assert len(agent.tries) == 7
    assert any("the scheduler is unavailable" in r.getMessage() for r in caplog.records)


def test_a_handler_context_stops_retrying_once_its_attempt_is_cancelled():
    cancelled = threading.Event()
    tries = []

    def never_there():
        tries.append(1)
        if len(tries) == 3:
            cancelled.set()
        raise unavailable()

    def check():
        if cancelled.is_set():
            raise TaskCancelledError("task 't' attempt 1: cancelled")

    # the blocking variant: ray.get is not reached because the call itself raises
    with pytest.raises(TaskCancelledError):
        calls.call(never_there, policy=calls.HANDLER, check=check)
    assert len(tries) == 3


def test_the_driver_budget_is_a_bounded_setting():
    assert Settings().call_retry_for == 60.0
    assert Settings(call_retry_for=5).call_retry_for == 5.0
    for bad in (0, -1, float("nan"), float("inf"), 1e12):
        with pytest.raises(ConfigurationError, match="call_retry_for"):
            Settings(call_retry_for=bad)


# ------------------------------------------------------------------ typed errors from actors


@pytest.mark.ray
def test_errors_from_the_scheduler_lock_manager_and_an_agent_constructor_arrive_plain(runtime, uid):
    with pytest.raises(CycleError) as caught:
        runtime.submit([omoi.TaskSpec(id=f"{uid}-a", type="t", depends_on=[f"{uid}-b"]),
                        omoi.TaskSpec(id=f"{uid}-b", type="t", depends_on=[f"{uid}-a"])])
    assert_one_plain_line(caught.value, CycleError)
    with pytest.raises(TaskNotFoundError):
        runtime.get(f"{uid}-a")  # nothing was stored

    res = f"res:{uid}"
    with runtime.lock(res, keep_alive=False) as held:
        with pytest.raises(LockUnavailableError) as caught:
            runtime.locks.acquire(res, wait=0, holder=f"other-{uid}")
        assert_one_plain_line(caught.value, LockUnavailableError)
        assert [g.holder for g in runtime.locks.holders(res)["holders"]] == [held.holder]

    with pytest.raises(HandlerNotFoundError) as caught:
        runtime.spawn_agent(f"bad-{uid}", handler="tests.no_such_module:nothing")
    assert_one_plain_line(caught.value, HandlerNotFoundError)
    assert "tests.no_such_module" in str(caught.value)
    with pytest.raises(omoi.errors.AgentNotFoundError):
        runtime.agent(f"bad-{uid}")  # the failed agent was cleaned away


# ---------------------------------------------------------------- restarts cost no attempt


def waiting(rt, resource: str) -> list[str]:
    return [holder for holder, _ in rt.locks.holders(resource)["waiting"]]


@pytest.mark.ray
@pytest.mark.faults
def test_a_lock_manager_restart_while_tasks_wait_for_locks_costs_no_attempt(own_runtime, uid):
    rt = own_runtime
    declared, on_the_fly = f"res:{uid}-x", f"res:{uid}-y"
    lease_x = rt.lock(declared)
    lease_y = rt.lock(on_the_fly)
    rt.spawn_agent("declares", capabilities=["declares"], capacity=1, handler=H)
    rt.spawn_agent("takes", capabilities=["takes"], capacity=1, handler=H)
    a = omoi.TaskSpec(id=f"{uid}-a", type="behave", requires=["declares"], locks=[declared], max_retries=0,
                      payload={"op": "hold_locks"})
    b = omoi.TaskSpec(id=f"{uid}-b", type="behave", requires=["takes"], max_retries=0,
                      payload={"op": "take_lock", "resource": on_the_fly, "wait": 120})
    rt.submit([a, b])
    until(lambda: waiting(rt, declared) == [f"{a.id}#1"], "the agent to wait for its declared lock")
    until(lambda: waiting(rt, on_the_fly) == [f"{b.id}#1"], "the handler to wait for its lock")
    before = rt.lock_manager.describe.remote()
    pid = ray.get(before)["pid"]

    ray.kill(rt.lock_manager, no_restart=False)  # Ray restarts it; the waits are in flight
    lease_x.release()  # the driver's calls ride out the restart too
    lease_y.release()

    assert rt.wait([a.id, b.id], timeout=120) == {a.id: "completed", b.id: "completed"}
    assert rt.get(a.id).result["tokens"] == {declared: lease_x.token + 1}
    assert rt.get(b.id).result["tokens"] == {on_the_fly: lease_y.token + 1}
    for task in (a, b):
        assert [(x.attempt, x.outcome) for x in rt.attempts(task.id)] == [(1, "completed")]
    described = ray.get(rt.lock_manager.describe.remote())
    assert described["restarted"] and described["pid"] != pid
    assert lease_x.released and lease_y.released
    until(lambda: rt.locks.holders(declared)["holders"] == [] and rt.locks.holders(on_the_fly)["holders"] == [],
          "the attempts' locks to be released")


@pytest.mark.ray
@pytest.mark.faults
def test_a_scheduler_restart_while_an_agent_reports_costs_no_attempt(own_runtime, uid):
    rt = own_runtime
    rt.spawn_agent("reporter", capabilities=["r"], capacity=1, handler=H)
    t = omoi.TaskSpec(id=f"{uid}-t", type="behave", requires=["r"], max_retries=0,
                      payload={"op": "wait_gate", "gate": f"{uid}-go", "started_gate": f"{uid}-t"})
    rt.submit([t])
    assert ray.get(gate().wait.remote(f"{uid}-t:1", 60))  # attempt 1 runs
    pid = rt.describe()["pid"]

    ray.kill(rt.scheduler, no_restart=False)
    ray.get(gate().open.remote(f"{uid}-go"))  # the handler ends; its report meets a restarting scheduler

    assert rt.wait([t.id], timeout=120) == {t.id: "completed"}
    info = rt.get(t.id)
    assert (info.attempt, info.result) == (1, {"released": True, "agent": "reporter"})
    assert [(x.attempt, x.outcome) for x in rt.attempts(t.id)] == [(1, "completed")]
    described = rt.describe()
    assert described["restarted"] and described["pid"] != pid
    assert [e.type for e in rt.events(t.id)].count("task.completed") == 1


@pytest.mark.ray
@pytest.mark.faults
def test_a_handlers_calls_to_the_scheduler_ride_out_its_restart(own_runtime, uid):
    """Messages, hand-offs and joins from a handler's ``ctx`` while the scheduler restarts: the
    attempt completes once, each call acted once."""
    rt = own_runtime
    rt.spawn_agent("caller", capabilities=["caller"], capacity=1, handler=H)
    thread_id = f"th-{uid}"
    source = omoi.TaskSpec(id=f"{uid}-s", type="behave", requires=["caller"], payload={"op": "work"})
    join = omoi.TaskSpec(id=f"{uid}-j", type="behave", requires=["caller"], depends_on=[source.id], merge="combine",
                         max_retries=0, payload={"op": "call_scheduler", "gate": f"{uid}-go", "started_gate": f"{uid}-j",
                                                 "thread": thread_id, "peer": "peer"})
    rt.submit([source, join])
    assert ray.get(gate().wait.remote(f"{uid}-j:1", 60))  # the join's attempt 1 runs, parked on the gate
    rt.spawn_agent("peer", capabilities=["caller"], capacity=1, handler=H)  # a hand-off target; nothing else to run
    thread = rt.messages.create_thread("consultation", ["caller", "peer"], thread_id=thread_id)
    pid = rt.describe()["pid"]

    ray.kill(rt.scheduler, no_restart=False)
    ray.get(gate().open.remote(f"{uid}-go"))  # its ctx calls meet a restarting scheduler

    assert rt.wait([join.id], timeout=120) == {join.id: "completed"}
    result = rt.get(join.id).result
    assert result["merged"] == {"agent": "caller"} and result["upstream"] == {source.id: {"agent": "caller"}}
    assert result["offer"] == "open"
    assert [(x.attempt, x.outcome) for x in rt.attempts(join.id)] == [(1, "completed")]
    assert [m.id for m in rt.messages.messages(thread.id).items] == [result["message"]]  # posted once
    assert rt.describe()["pid"] != pid


@pytest.mark.ray
@pytest.mark.faults
def test_a_singleton_killed_for_good_fails_driver_calls_at_once_and_agents_find_its_successor(own_runtime, uid):
    rt = own_runtime
    rt.spawn_agent("survivor", capabilities=["s"], capacity=1, handler=H)
    first = omoi.TaskSpec(id=f"{uid}-1", type="behave", requires=["s"], max_retries=0)
    assert rt.run([first], timeout=60)[first.id].status == "completed"

    ray.kill(rt.relay)  # no restart: this handle's actor is gone
    ray.kill(rt.scheduler)
    for handle in (rt.relay, rt.scheduler):  # ray.kill is asynchronous: a call sent at once may still be served
        until(lambda: _is_dead(handle), "the killed actor is dead")
    for gone, name in ((rt.relay_status, "event relay"), (rt.status, "scheduler")):
        with pytest.raises(RuntimeUnavailableError, match=rf"the {name} \(omoi\.\w+\) is gone .* connect\(\) again") as caught:
            gone()
        assert_one_plain_line(caught.value, RuntimeUnavailableError)

    again = omoi.connect(rt.settings)  # recreates the scheduler and the relay under their names
    rt.scheduler, rt.relay = again.scheduler, again.relay  # (for the fixture's shutdown)
    second = omoi.TaskSpec(id=f"{uid}-2", type="behave", requires=["s"], max_retries=0)
    # the agent looked the new scheduler up by name and runs the new task
    assert again.run([second], timeout=60)[second.id].status == "completed"
    assert [(x.agent_id, x.attempt, x.outcome) for x in again.attempts(second.id)] == [("survivor", 1, "completed")]
    assert again.get(first.id).status == "completed"  # the database kept everything


def _is_dead(handle) -> bool:
    try:
        ray.get(handle.__ray_ready__.remote(), timeout=10)
    except ray.exceptions.RayActorError:
        return True
    except ray.exceptions.GetTimeoutError:
        return False
    return False


# ------------------------------------------------------------------- relay health is dated


class Proxy:
    """A TCP proxy to PostgreSQL that a test can cut (every connection dropped, new ones refused
    until ``resume``): a database outage as the relay sees it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def resume(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.server.close()


@pytest.mark.postgres
@pytest.mark.faults
def test_relay_status_dates_a_database_outage_and_reports_recovery(pg_schemas, redis_prefix, tmp_path):
    import sqlalchemy as sa
    from omoi_ray.actors.event_relay import EventRelayActor

    from omoi_ray.store import migrate
    from omoi_ray.store.store import Store
    from tests.test_events import write

    url = pg_schemas.new()
    migrate.upgrade(url)
    real = sa.engine.make_url(url)
    proxy = Proxy(real.host or "127.0.0.1", real.port or 5432)
    through = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    redis_url, prefix = redis_prefix
    settings = Settings(home=tmp_path, database_url=SecretStr(through), redis_url=SecretStr(redis_url),
                        redis_prefix=prefix, events_poll=0.02)
    store = Store(url)
    relay = EventRelayActor(settings)
    try:
        write(store, "before", 3)
        relay.flush(30)
        state = relay.describe()
        assert (state["healthy"], state["last_error"], state["last_error_at"]) == (True, "", None)
        assert state["mirrored"] == 3

        proxy.cut()
        until(lambda: not relay.describe()["healthy"], "the relay to notice the outage", 30)
        down = relay.describe()
        assert down["last_error"] and "\n" not in down["last_error"]
        assert down["last_error_at"] <= time.time()

        proxy.resume()
        until(lambda: relay.describe()["healthy"], "the relay to recover", 60)
        write(store, "after", 2)
        relay.flush(30)  # it mirrors again
        back = relay.describe()
        assert back["healthy"] is True and back["mirrored"] == 5
        assert back["last_error"] == down["last_error"] and back["last_error_at"] >= down["last_error_at"]
    finally:
        relay.stop()
        proxy.close()
        store.dispose()
        pg_schemas.drop(url)
