"""The driver API by concept: groups, short forms, and the two flavours of every call.

- Each call is defined once (steps) and offered blocking and awaitable; both give the same
  results and refuse the same arguments the same way.
- ``rt.submit`` is ``rt.tasks.submit`` (and so on): the short forms are the groups' methods.
- ``rt.events(...)`` returns the same ``EventRecord``s ``follow`` yields.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

import omoi_ray as omoi
from omoi_ray.client import calls
from omoi_ray.client.agents import AgentRef
from omoi_ray.client.locks import Lease
from omoi_ray.errors import (
    AgentNotFoundError,
    InvalidArgumentError,
    InvalidLockRequestError,
    LockUnavailableError,
    OmoiError,
    TaskNotFoundError,
)
from omoi_ray.specs.events import EventRecord

H = "tests.handlers:behave"


# ------------------------------------------------------------------ one definition, two flavours


class Answers:
    """A stand-in actor call for the awaitable flavour: answers each try from a list (an error
    in the list is raised), recording the arguments of each try."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.tries: list[tuple] = []

    async def __call__(self, *args: object) -> object:
        self.tries.append(args)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Counter:
    """A toy group: ``add`` is defined once, as steps."""

    def __init__(self, remote: Answers) -> None:
        self.remote = remote

    def _add(self, n: int, *, times: int = 1) -> calls.Steps[int]:
        """Add ``n`` to the remote count ``times`` times; returns the last count.

        Raises:
            InvalidArgumentError: ``n`` is negative.
        """
        if n < 0:
            raise InvalidArgumentError(f"n must be at least 0, not {n}")
        total = 0
        for _ in range(times):
            total = yield calls.Step(lambda: self.remote("add", n), policy=calls.AGENT)
        yield calls.Pause(0)
        return total

    add, add_async = calls.flavours(_add)

    def _plain(self, x: int) -> int:
        """No call at all."""
        return x * 2

    plain, plain_async = calls.flavours(_plain)


def test_flavours_share_the_definitions_name_signature_and_docstring():
    assert Counter.add.__name__ == "add" and Counter.add_async.__name__ == "add_async"
    assert Counter.add.__qualname__ == "Counter.add" and Counter.add_async.__qualname__ == "Counter.add_async"
    assert str(inspect.signature(Counter.add)) == "(self, n: 'int', *, times: 'int' = 1) -> 'int'"
    assert inspect.signature(Counter.add_async) == inspect.signature(Counter.add)
    assert inspect.iscoroutinefunction(Counter.add_async) and not inspect.iscoroutinefunction(Counter.add)
    assert Counter.add.__doc__ == Counter._add.__doc__
    assert "Awaitable form of ``add``" in Counter.add_async.__doc__ and "Raises:" in Counter.add_async.__doc__


def test_the_awaitable_flavour_drives_the_steps_under_the_policy():
    remote = Answers(1, calls_unavailable(), 2, 3)
    counter = Counter(remote)
    assert asyncio.run(counter.add_async(5, times=3)) == 3
    assert remote.tries == [("add", 5)] * 4  # the unavailable try was made again, same arguments
    assert asyncio.run(Counter(Answers()).plain_async(21)) == 42
    assert Counter(Answers()).plain(21) == 42


def test_both_flavours_check_arguments_in_the_definition_before_any_call():
    remote = Answers()
    counter = Counter(remote)
    with pytest.raises(InvalidArgumentError, match="n must be"):
        counter.add(-1)
    with pytest.raises(InvalidArgumentError, match="n must be"):
        asyncio.run(counter.add_async(-1))
    assert remote.tries == []


def test_a_final_error_is_thrown_into_the_definition_which_may_handle_it():
    def definition():
        try:
            yield calls.Step(Answers(LockUnavailableError("res:x is not available now")), policy=calls.AGENT)
        except LockUnavailableError as exc:
            return f"handled: {exc}"

    assert asyncio.run(calls.drive_async(definition())) == "handled: res:x is not available now"


def test_a_long_poll_asks_again_with_the_same_request_until_done():
    remote = Answers({"granted": False}, {"granted": False}, {"granted": True, "grants": [1]})
    got = asyncio.run(calls.drive_async(calls.ask_until(
        calls.Step(lambda: remote("acquire", "req-1"), policy=calls.AGENT), lambda reply: reply["granted"])))
    assert got == {"granted": True, "grants": [1]}
    assert remote.tries == [("acquire", "req-1")] * 3


def test_an_awaited_step_past_its_timeout_raises_rays_get_timeout():
    import ray

    async def never() -> None:
        await asyncio.Event().wait()

    with pytest.raises(ray.exceptions.GetTimeoutError):
        asyncio.run(calls.drive_async(_one(calls.Step(never, timeout=0.01, retry=False))))


def _one(step: calls.Step):
    return (yield step)


def calls_unavailable():
    import ray

    return ray.exceptions.ActorUnavailableError("The actor is temporarily unavailable: IOError: restarted", None)


# ------------------------------------------------------------------ the groups on a runtime


@pytest.fixture(scope="module")
def api_agent(runtime):
    name = "api-general"
    runtime.agents.spawn(name, capabilities=["api"], capacity=4, handler=H, exist_ok=True)
    return name


def task(tid: str, **kw):
    return omoi.TaskSpec(id=tid, type="t", requires=["api"], **kw)


@pytest.mark.ray
def test_short_forms_are_the_groups_methods(runtime):
    rt = runtime
    pairs = [(rt.submit, rt.tasks.submit), (rt.wait, rt.tasks.wait), (rt.get, rt.tasks.get),
             (rt.run, rt.tasks.run), (rt.get_many, rt.tasks.get_many), (rt.result, rt.tasks.result),
             (rt.attempts, rt.tasks.attempts), (rt.cancel, rt.tasks.cancel),
             (rt.spawn_agent, rt.agents.spawn), (rt.agent, rt.agents.ref), (rt.agent_async, rt.agents.ref_async), (rt.follow, rt.events.follow),
             (rt.relay_status, rt.events.relay_status), (rt.flush_events, rt.events.flush),
             (rt.get_async, rt.tasks.get_async), (rt.wait_async, rt.tasks.wait_async)]
    for short, full in pairs:
        assert short == full, short
    assert rt.locks is rt.locks and rt.locks.holder  # one lock client, one holder name


@pytest.mark.ray
def test_the_async_flavours_give_what_the_blocking_ones_give(runtime, api_agent, uid):
    rt = runtime

    async def main():
        ids = await rt.tasks.submit_async([task(f"{uid}-a", payload={"op": "echo"}),
                                           task(f"{uid}-b", payload={"op": "fail", "times": 1},
                                                depends_on=[f"{uid}-a"], max_retries=2, backoff_base=0.01)])
        finals = await rt.tasks.wait_async(ids, timeout=60)
        got = await rt.tasks.get_async(f"{uid}-b")
        many = await rt.tasks.get_many_async(ids)
        result = await rt.tasks.result_async(f"{uid}-a")
        attempts = await rt.tasks.attempts_async(f"{uid}-b")
        history = await rt.events.list_async(f"{uid}-a")
        status = await rt.status_async()
        agents = await rt.agents.list_async()
        ref = await rt.agents.ref_async(api_agent)
        one = await rt.agents.get_async(api_agent)
        info = await ref.info_async()
        return ids, finals, got, many, result, attempts, history, status, agents, ref, info, one

    ids, finals, got, many, result, attempts, history, status, agents, ref, info, one = asyncio.run(main())
    assert ids == [f"{uid}-a", f"{uid}-b"]
    assert finals == rt.wait(ids) == {ids[0]: "completed", ids[1]: "completed"}
    assert got == rt.get(f"{uid}-b") and many == rt.get_many(ids)
    assert result == rt.result(f"{uid}-a") and result["id"] == f"{uid}-a"
    assert attempts == rt.attempts(f"{uid}-b") and [a.attempt for a in attempts] == [1, 2]
    assert history == rt.events(f"{uid}-a") and all(isinstance(e, EventRecord) for e in history)
    assert status.namespace == rt.status().namespace
    assert api_agent in [a.id for a in agents] and [a.id for a in agents] == [a.id for a in rt.agents.list()]
    assert isinstance(ref, AgentRef) and ref.name == api_agent and info["name"] == rt.agent(api_agent).info()["name"]
    assert one.id == api_agent and one.incarnation == rt.agents.get(api_agent).incarnation == info["incarnation"]
    runs = asyncio.run(rt.tasks.run_async([task(f"{uid}-c", payload={"op": "echo"})], timeout=60))
    assert runs[f"{uid}-c"].status == "completed" and runs[f"{uid}-c"] == rt.get(f"{uid}-c")


@pytest.mark.ray
def test_both_flavours_refuse_the_same_arguments_the_same_way(runtime, uid):
    rt = runtime
    cases = [
        (lambda: rt.tasks.get("a\n"), lambda: rt.tasks.get_async("a\n"), InvalidArgumentError),
        (lambda: rt.tasks.wait("abc"), lambda: rt.tasks.wait_async("abc"), InvalidArgumentError),
        (lambda: rt.tasks.wait([], timeout=-1), lambda: rt.tasks.wait_async([], timeout=-1), InvalidArgumentError),
        (lambda: rt.tasks.get(f"{uid}-nobody"), lambda: rt.tasks.get_async(f"{uid}-nobody"), TaskNotFoundError),
        (lambda: rt.events(limit=0), lambda: rt.events.list_async(limit=0), InvalidArgumentError),
        (lambda: rt.agents.get("a\x00"), lambda: rt.agents.get_async("a\x00"), InvalidArgumentError),
        (lambda: rt.agents.get(f"{uid}-nobody"), lambda: rt.agents.get_async(f"{uid}-nobody"), AgentNotFoundError),
        (lambda: rt.agents.ref(f"{uid}-nobody"), lambda: rt.agents.ref_async(f"{uid}-nobody"), AgentNotFoundError),
        (lambda: rt.agents.search("x"), lambda: rt.agents.search_async("x"), InvalidArgumentError),
        (lambda: rt.locks.acquire("file:x", holder=""), lambda: rt.locks.acquire_async("file:x", holder=""),
         InvalidLockRequestError),
        (lambda: rt.events.flush(timeout=0), lambda: rt.events.flush_async(timeout=0), InvalidArgumentError),
    ]
    for blocking, awaitable, error in cases:
        with pytest.raises(error) as sync_error:
            blocking()
        with pytest.raises(error) as async_error:
            asyncio.run(awaitable())
        assert str(sync_error.value) == str(async_error.value)


@pytest.mark.ray
def test_result_of_a_task_not_completed_names_its_status_in_both_flavours(runtime, api_agent, uid):
    rt = runtime
    [tid] = rt.submit([task(f"{uid}-p", payload={"op": "permanent"})])
    rt.wait([tid], timeout=60)
    for get in (lambda: rt.result(tid), lambda: asyncio.run(rt.result_async(tid))):
        with pytest.raises(OmoiError, match="is failed, not completed") as err:
            get()
        assert err.value.status == "failed"


@pytest.mark.ray
def test_locks_async_lease_is_the_same_lease_and_async_with_releases_it(runtime, uid):
    rt = runtime
    res = f"file:{uid}-alock"

    async def main():
        async with await rt.locks.acquire_async(res, wait=5, ttl=10) as lease:
            held = await rt.locks.holders_async(res)
            with pytest.raises(LockUnavailableError):
                await rt.locks.acquire_async(res, wait=0, holder=f"other-{uid}")
        after = await rt.locks.holders_async(res)
        again = await rt.lock_async(res, wait=5)
        await again.release_async()
        await again.release_async()  # releasing twice is harmless
        return lease, held, after, again

    lease, held, after, again = asyncio.run(main())
    assert isinstance(lease, Lease) and lease.released and lease.holder == rt.locks.holder
    assert [g.holder for g in held["holders"]] == [rt.locks.holder] and after["holders"] == []
    assert again.released and again._keeper is not None  # rt.lock's lease renews itself
    assert again.token > lease.token
    with rt.lock(res, wait=5) as blocking:
        assert rt.locks.holders(res)["holders"][0].token == blocking.token


async def upstream_and_lock(task, ctx):
    """An async handler using the context's awaitable calls."""
    grants = await ctx.lock_async(task.payload["resource"], wait=30)
    upstream = await ctx.upstream_results_async()
    return {"upstream": upstream, "tokens": {g.resource: g.token for g in grants}}


@pytest.mark.ray
def test_a_handlers_awaitable_calls_reach_the_scheduler_and_the_lock_manager(runtime, uid):
    rt = runtime
    name = f"{uid}-async"
    rt.spawn_agent(name, capabilities=[name], handlers={"first": H, "second": "tests.test_client_api:upstream_and_lock"})
    try:
        res = f"file:{uid}-ctx"
        first = omoi.TaskSpec(id=f"{uid}-1", type="first", requires=[name], payload={"op": "echo"})
        second = omoi.TaskSpec(id=f"{uid}-2", type="second", requires=[name], depends_on=[first.id],
                               payload={"resource": res})
        infos = rt.run([first, second], timeout=60)
        assert infos[second.id].status == "completed", infos[second.id].error
        out = infos[second.id].result
        assert out["upstream"] == {first.id: infos[first.id].result} and out["tokens"][res] >= 1
        assert rt.locks.holders(res)["holders"] == []  # released when the attempt ended
    finally:
        rt.agent(name).stop(timeout=5)


@pytest.mark.ray
def test_history_holds_the_same_records_follow_yields(runtime, api_agent, uid):
    rt = runtime
    [tid] = rt.submit([task(f"{uid}-h", payload={"op": "echo"})])
    rt.wait([tid], timeout=60)
    history = rt.events(tid)
    assert [e.type for e in history][:2] == ["task.created", "task.ready"] and history[-1].type == "task.completed"

    async def followed():
        out = []
        async for e in rt.events.follow(since="0-0", use_redis=False, batch=1000):
            if e.entity_id == tid:
                out.append(e)
            if e.id == history[-1].id:
                return out
        return out

    assert asyncio.run(followed()) == history
