"""The lock manager on Ray, as drivers and tasks use it (SQLite, and PostgreSQL when set)."""

from __future__ import annotations

import threading
import time

import pytest
import ray

import omoi_ray as omoi
from omoi_ray.client.locks import LockClient
from omoi_ray.errors import (
    DeadlockError,
    InvalidLockRequestError,
    InvalidTaskSpecError,
    LeaseExpiredError,
    LockNotHeldError,
    LockTimeoutError,
    LockUnavailableError,
)
from tests.handlers import gate

pytestmark = pytest.mark.ray
H = "tests.handlers:behave"


def client(runtime, holder):
    return LockClient(runtime.lock_manager, holder)


def until(predicate, timeout=30.0):
    """Wait for a condition the lock manager reports (bounded; each look is one call)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def waiting(runtime, resource):
    return [h for h, _ in client(runtime, "observer").holders(resource)["waiting"]]


@pytest.fixture(scope="session")
def lockers(runtime):
    return runtime.spawn_agent("locker", capabilities=["locker"], capacity=4, handler=H, exist_ok=True)


def test_grants_carry_growing_tokens_and_busy_resources_refuse_try_locks(runtime, uid):
    res = f"file:{uid}"
    with runtime.lock(res) as first:
        again = runtime.lock(res, wait=0, keep_alive=False)  # the same holder: re-entry
        assert [(g.id, g.token) for g in again.grants] == [(g.id, g.token) for g in first.grants]
        with pytest.raises(LockUnavailableError, match=f"not available now: {res}"):
            client(runtime, "someone-else").acquire(res, wait=0)
    with runtime.lock(res) as second:
        assert second.token == first.token + 1
    with runtime.lock(res, "shared") as r1, client(runtime, "other").acquire(res, "shared") as r2:
        assert r2.token == r1.token + 1


def test_a_wait_times_out_and_holds_nothing(runtime, uid):
    res = f"file:{uid}"
    with runtime.lock(res):
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match="waited"):
            client(runtime, "late").acquire(res, wait=0.5)
        assert time.monotonic() - started >= 0.5
        assert waiting(runtime, res) == []


def test_waiters_are_served_in_order_and_a_writer_is_not_starved(runtime, uid):
    res = f"db:{uid}"
    order: list[str] = []

    def take(holder, mode):
        lease = client(runtime, holder).acquire(res, mode, wait=30)
        order.append(holder)
        lease.release()

    holder = runtime.lock(res, "shared")
    threads = []
    for name, mode in (("writer", "exclusive"), ("reader-1", "shared"), ("reader-2", "shared")):
        threads.append(threading.Thread(target=take, args=(name, mode)))
        threads[-1].start()
        until(lambda n=name: n in waiting(runtime, res))
    assert waiting(runtime, res) == ["writer", "reader-1", "reader-2"]  # readers queue behind the writer
    holder.release()
    for t in threads:
        t.join(30)
    assert order[0] == "writer" and sorted(order[1:]) == ["reader-1", "reader-2"]


def test_a_wait_that_would_deadlock_is_refused_naming_the_cycle(runtime, uid):
    a, b = f"file:{uid}-a", f"file:{uid}-b"
    alice, bob = client(runtime, f"alice-{uid}"), client(runtime, f"bob-{uid}")
    with alice.acquire(a), bob.acquire(b):
        blocked = threading.Thread(target=lambda: alice.acquire(b, wait=10).release())
        blocked.start()
        until(lambda: f"alice-{uid}" in waiting(runtime, b))
        with pytest.raises(DeadlockError, match=f"deadlock: bob-{uid} -> alice-{uid} -> bob-{uid}"):
            bob.acquire(a, wait=10)
    blocked.join(30)


def test_several_resources_are_granted_together_or_not_at_all(runtime, uid):
    a, b = f"file:{uid}-a", f"file:{uid}-b"
    with runtime.lock(b):
        with pytest.raises(LockUnavailableError, match=b):
            client(runtime, "both").acquire([a, b], wait=0)
        assert client(runtime, "x").holders(a)["holders"] == []  # nothing partial was held
    with client(runtime, "both").acquire([a, (b.split(":")[0], b.split(":", 1)[1], "shared")]) as lease:
        assert set(lease.tokens) == {a, b}


def test_an_unrenewed_lease_expires_and_the_next_waiter_gets_the_lock(runtime, uid):
    res = f"file:{uid}"
    lease = client(runtime, "forgetful").acquire(res, ttl=1.0)
    started = time.monotonic()
    with client(runtime, "patient").acquire(res, wait=20) as next_lease:
        assert next_lease.token > lease.token and time.monotonic() - started < 10
    with pytest.raises(LeaseExpiredError, match="expired"):
        lease.renew()


def test_keep_alive_renews_a_lease_beyond_its_ttl(runtime, uid):
    res = f"file:{uid}"
    with runtime.lock(res, ttl=1.0) as lease:
        with pytest.raises(LockTimeoutError):
            client(runtime, "other").acquire(res, wait=2.5)  # outlives three ttls: still held
        assert not lease.lost


def test_releases_are_checked_and_idempotent(runtime, uid):
    lease = client(runtime, "owner").acquire(f"file:{uid}")
    with pytest.raises(LockNotHeldError, match="not 'thief'"):
        ray.get(runtime.lock_manager.release.remote("thief", [lease.grants[0].id]))
    lease.release()
    lease.release()  # harmless
    with pytest.raises(LockNotHeldError, match="already released"):
        ray.get(runtime.lock_manager.release.remote("owner", [lease.grants[0].id], "a-new-request"))


@pytest.mark.parametrize(
    "args,message",
    [
        (("file:a",), {"mode": "X"}),
        (("file:a",), {"mode": True}),
        (("no-colon",), {}),
        (("file:a\x00b",), {}),
        ((["file:a", "file:a"],), {}),
        (("file:a",), {"ttl": -1}),
        (("file:a",), {"wait": float("nan")}),
        (("file:" + "x" * 600,), {}),
    ],
)
def test_bad_lock_requests_are_refused_with_a_typed_error(runtime, args, message):
    before = ray.get(runtime.lock_manager.describe.remote())["active_grants"]
    with pytest.raises(InvalidLockRequestError):
        runtime.lock(*args, **message)
    assert ray.get(runtime.lock_manager.describe.remote())["active_grants"] == before


def test_task_declared_locks_are_held_during_the_handler_and_released_on_every_exit(runtime, lockers, uid):
    res = f"file:{uid}"
    tasks = [
        omoi.TaskSpec(id=f"{uid}-ok", type="behave", requires=["locker"], locks=[res], payload={"op": "hold_locks"}),
        omoi.TaskSpec(id=f"{uid}-fail", type="behave", requires=["locker"], locks=[res], payload={"op": "permanent"}),
        omoi.TaskSpec(id=f"{uid}-slow", type="behave", requires=["locker"], locks=[res], timeout=0.5, max_retries=0,
                      payload={"op": "wait_cancel"}),
    ]
    infos = runtime.run(tasks, timeout=60)
    assert [infos[t.id].status for t in tasks] == ["completed", "failed", "timed_out"]
    assert infos[f"{uid}-ok"].result["tokens"][res] >= 1
    # free again after success, failure and timeout: a timed-out attempt's handler lets its locks
    # go when it actually ends (after its stop), which may be just after the task reads timed_out
    with runtime.lock(res, wait=30):
        pass
    cancelled = omoi.TaskSpec(id=f"{uid}-cancel", type="behave", requires=["locker"], locks=[res],
                              payload={"op": "wait_cancel", "started_gate": f"{uid}-c"})
    runtime.submit([cancelled])
    assert ray.get(gate().wait.remote(f"{uid}-c:1", 30))
    with pytest.raises(LockUnavailableError):
        client(runtime, "probe").acquire(res, wait=0)  # held while it runs
    runtime.cancel(cancelled.id)
    with runtime.lock(res, wait=20):
        pass  # released once the handler stopped


def test_tasks_sharing_an_exclusive_lock_never_overlap_and_get_growing_tokens(runtime, lockers, uid):
    res = f"db:{uid}"
    tasks = [omoi.TaskSpec(id=f"{uid}-{i}", type="behave", requires=["locker"], locks=[res], payload={"op": "hold_locks"})
             for i in range(6)]
    infos = runtime.run(tasks, timeout=60)
    spans = sorted((i.started_at, i.finished_at) for i in infos.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    tokens = [i.result["tokens"][res] for i in sorted(infos.values(), key=lambda i: i.started_at)]
    assert tokens == sorted(tokens) and len(set(tokens)) == 6


def test_tasks_with_the_longest_ids_hold_declared_locks(runtime, lockers, uid):
    # the agent's request id is derived from the task id: it must stay within the columns' width
    long_id = (uid + "-" + "x" * 128)[:128]
    t = omoi.TaskSpec(id=long_id, type="behave", requires=["locker"], locks=[f"file:{uid}"], payload={"op": "hold_locks"})
    info = runtime.run([t], timeout=60)[t.id]
    assert info.status == "completed" and info.result["tokens"][f"file:{uid}"] >= 1


@pytest.mark.parametrize("request_id", ["", "r" * 101, "a\x00b", 7])
def test_bad_request_ids_are_refused(runtime, uid, request_id):
    with pytest.raises(InvalidLockRequestError, match="request_id"):
        runtime.locks.acquire(f"file:{uid}", request_id=request_id)
    with pytest.raises(InvalidLockRequestError, match="request_id"):
        ray.get(runtime.lock_manager.release.remote("someone", [], request_id))


def test_handlers_take_locks_on_the_fly_and_give_them_back(runtime, lockers, uid):
    res = f"file:{uid}"
    t = omoi.TaskSpec(id=f"{uid}-fly", type="behave", requires=["locker"], payload={"op": "take_lock", "resource": res})
    info = runtime.run([t], timeout=60)[t.id]
    assert info.status == "completed" and info.result["tokens"][res] >= 1
    with runtime.lock(res, wait=0):
        pass


def test_bad_declared_locks_reject_the_submission(runtime, uid):
    with pytest.raises(InvalidTaskSpecError, match="locks: .*lock mode"):
        runtime.submit([{"id": f"{uid}-x", "type": "t", "locks": [["file", "a", "rw"]]}])


def test_the_locks_of_a_dead_agent_are_released_at_once(runtime, uid):
    cap = f"doomed-{uid}"
    agent = runtime.spawn_agent(cap, capabilities=[cap], capacity=1, handler=H, max_restarts=0)
    res = f"file:{uid}"
    t = omoi.TaskSpec(id=f"{uid}-held", type="behave", requires=[cap], locks=[res], max_retries=0,
                      payload={"op": "hold_locks", "gate": f"{uid}-never", "started_gate": f"{uid}-held"})
    runtime.submit([t])
    assert ray.get(gate().wait.remote(f"{uid}-held:1", 30))
    agent.kill()
    started = time.monotonic()
    with runtime.lock(res, wait=25):
        released_after = time.monotonic() - started
    assert released_after < runtime.settings.lock_ttl  # not by lease expiry
