"""Negotiated hand-offs end to end on Ray, SQLite and PostgreSQL: a full hand-off whose
acceptor finishes the task while the offering attempt's late result is rejected; concurrent
accepts (exactly one winner, many times); a deadline with no acceptor; a multi-target offer with
a decline; a hand-off across scheduler kills (nothing lost, nothing done twice)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray

import omoi_ray as omoi
from omoi_ray.errors import (
    AcceptorUnavailableError,
    HandoffClosedError,
    HandoffNotFoundError,
    InvalidHandoffError,
    InvalidMessageError,
    NotHolderError,
    NotOfferedError,
)
from tests.conftest import until
from tests.handlers import gate

pytestmark = [pytest.mark.ray]
H = "tests.handoff_handlers:held"


def completed(rt, task_id: str) -> int:
    return sum(1 for e in rt.events(task_id) if e.type == "task.completed")


def hold(rt, uid: str, n: int = 1, *, capacity: int = 1, cap: str | None = None, locks=(), **payload):
    """Agent ``<uid>-a`` holding ``n`` running tasks (capability ``cap``), and its tasks' ids."""
    cap = cap or f"h-{uid}"
    holder = rt.spawn_agent(f"{uid}-a", capabilities=[cap], capacity=capacity, handler=H)
    ids = rt.submit([
        omoi.TaskSpec(id=f"{uid}-t{i}", type="held", requires=[cap], max_retries=0, locks=list(locks),
                      payload={"started": f"{uid}-t{i}", **payload})
        for i in range(n)
    ])
    for tid in ids:
        assert ray.get(gate().wait.remote(f"{tid}:1", 60))
    return holder, ids, cap


def test_a_handler_hands_its_task_over_and_the_acceptor_finishes_it(runtime, uid):
    rt = runtime
    holder, (tid,), cap = hold(rt, uid, offer_to=[f"{uid}-b"], offer_gate=f"{uid}-offer")
    acceptor = rt.spawn_agent(f"{uid}-b", capabilities=[cap], capacity=1, handler=H)
    ray.get(gate().open.remote(f"{uid}-offer"))
    requested = until(lambda: [e for e in rt.events(tid) if e.type == "agent.handoff.requested"], "the offer")
    offer_id = requested[0].payload["offer_id"]
    info = rt.handoffs.get(offer_id)
    assert (info.status, info.from_agent, info.targets, info.attempt) == ("open", f"{uid}-a", (f"{uid}-b",), 1)
    assert rt.get(tid).status == "running"  # the offering attempt keeps running while the offer is open
    # the offer's thread is the hand-off's own: nobody closes it or answers in it by hand
    with pytest.raises(InvalidMessageError, match="belongs to hand-off offer"):
        rt.messages.close_thread(info.thread_id, "abandoned")
    with pytest.raises(InvalidMessageError, match="is the scheduler's own"):
        rt.messages.send(info.thread_id, f"{uid}-b", {"offer_id": offer_id}, kind="handoff.accepted")

    accepted = rt.handoffs.accept(offer_id, agent=f"{uid}-b")
    assert (accepted.status, accepted.accepted_by, accepted.new_attempt) == ("accepted", f"{uid}-b", 2)
    assert rt.wait([tid], timeout=60) == {tid: "completed"}
    done = rt.get(tid)
    assert done.attempt == 2 and done.agent_id == f"{uid}-b"
    assert done.result == {"by": f"{uid}-b", "offer": offer_id, "from": f"{uid}-a", "reason": "please take it",
                           "context": {"step": 3}, "attempt": 2}
    # max_retries=0 and two attempts: the hand-off was not charged
    assert [(a.agent_id, a.outcome) for a in rt.attempts(tid)] == [(f"{uid}-a", "handed_off"), (f"{uid}-b", "completed")]
    # the offering handler was told to stop; its late result was rejected as stale
    until(lambda: holder.info()["stats"]["rejected"] >= 1, "the late result rejected")
    assert rt.get(tid).result["by"] == f"{uid}-b" and completed(rt, tid) == 1
    types = [e.type for e in rt.events(tid)]
    assert types.index("agent.handoff.requested") < types.index("agent.handoff.accepted") < types.index("task.completed")
    assert acceptor.info()["stats"]["finished"] == 1


def test_a_target_reads_the_offer_in_its_inbox_and_accepts_it_from_its_handler(runtime, uid):
    rt = runtime
    _, (tid,), cap = hold(rt, uid)
    rt.spawn_agent(f"{uid}-b", capabilities=[cap, f"broker-{uid}"], capacity=2,
                   handlers={"held": H, "broker": "tests.handoff_handlers:broker"})
    (broker,) = rt.submit([omoi.TaskSpec(id=f"{uid}-broker", type="broker", requires=[f"broker-{uid}"],
                                         payload={"task": tid, "ready": f"{uid}-ready"})])
    assert ray.get(gate().wait.remote(f"{uid}-ready", 60))  # the broker's handler is reading its inbox
    offer = rt.handoffs.offer(tid, to=[f"{uid}-b"], reason="over to you", context={"k": [1, 2]}, deadline=60)
    assert rt.wait([broker, tid], timeout=60) == {broker: "completed", tid: "completed"}
    assert rt.result(broker) == {"offer": offer.id, "status": "accepted", "thread": offer.info.thread_id,
                                 "context": {"k": [1, 2]}}
    assert rt.get(tid).agent_id == f"{uid}-b" and rt.get(tid).attempt == 2
    # the handoff thread recorded the outcome and is resolved
    thread = rt.messages.thread(offer.info.thread_id)
    assert thread.type == "handoff" and thread.status == "resolved" and thread.outcome["accepted_by"] == f"{uid}-b"
    kinds = [m.kind for m in rt.messages.messages(offer.info.thread_id).items]
    assert kinds == ["handoff.offer", "handoff.accepted"]


def test_declared_locks_follow_the_attempt(runtime, uid):
    rt = runtime
    resource = f"file:{uid}-report"
    _, (tid,), cap = hold(rt, uid, locks=[resource])
    first = rt.locks.holders(resource)["holders"]
    assert [g.holder for g in first] == [f"{tid}#1"]  # the offering attempt holds it (its handler still runs)
    rt.spawn_agent(f"{uid}-b", capabilities=[cap], capacity=1, handler=H)
    offer = rt.handoffs.offer(tid, to=[f"{uid}-b"], deadline=60)
    rt.handoffs.accept(offer.id, agent=f"{uid}-b")
    assert rt.wait([tid], timeout=60) == {tid: "completed"}
    # released by the old attempt, acquired by the new one (a larger fencing token)
    assert rt.result(tid)["tokens"][resource] > first[0].token
    assert until(lambda: rt.locks.holders(resource)["holders"] == [], "the new attempt's lock released")


def test_concurrent_accepts_have_exactly_one_winner_every_time(runtime, uid):
    rt = runtime
    rounds = 20
    _, ids, cap = hold(rt, uid, rounds, capacity=rounds)
    rivals = [f"{uid}-b", f"{uid}-c"]
    for name in rivals:
        rt.spawn_agent(name, capabilities=[cap], capacity=rounds, handler=H)
    winners = Counter()
    with ThreadPoolExecutor(2) as pool:
        for tid in ids:
            offer = rt.handoffs.offer(tid, to=rivals, reason="race", deadline=60)
            results = list(pool.map(lambda name, oid=offer.id: _try_accept(rt, oid, name), rivals))
            won = [r for r in results if not isinstance(r, Exception)]
            lost = [r for r in results if isinstance(r, Exception)]
            assert len(won) == 1 and len(lost) == 1, results
            winner = won[0].accepted_by
            assert isinstance(lost[0], HandoffClosedError) and f"accepted by agent '{winner}'" in str(lost[0])
            winners[winner] += 1
    statuses = rt.wait(ids, timeout=120)
    assert Counter(statuses.values()) == {"completed": rounds}
    for tid in ids:
        info = rt.get(tid)
        assert info.attempt == 2 and info.agent_id in rivals and completed(rt, tid) == 1
    assert sum(winners.values()) == rounds


def _try_accept(rt, offer_id: str, name: str):
    try:
        return rt.handoffs.accept(offer_id, agent=name)
    except HandoffClosedError as exc:
        return exc


def test_an_offer_nobody_accepts_expires_and_the_task_stays_with_its_attempt(runtime, uid):
    rt = runtime
    _, (tid,), cap = hold(rt, uid, finish_gate=f"{uid}-finish")
    rt.spawn_agent(f"{uid}-b", capabilities=[cap], capacity=1, handler=H)
    offer = rt.handoffs.offer(tid, to=[f"{uid}-b"], reason="anyone?", deadline=0.5)
    info = offer.outcome(timeout=30)
    assert info.status == "expired" and info.accepted_by is None
    with pytest.raises(HandoffClosedError, match="expired"):
        rt.handoffs.accept(offer.id, agent=f"{uid}-b")
    assert rt.get(tid).status == "running" and rt.get(tid).attempt == 1
    ray.get(gate().open.remote(f"{uid}-finish"))
    assert rt.wait([tid], timeout=60) == {tid: "completed"}
    assert rt.get(tid).result == {"by": f"{uid}-a", "attempt": 1}
    assert "agent.handoff.expired" in [e.type for e in rt.events(tid)]


def test_a_multi_target_offer_records_declines_and_the_accepting_target_wins(runtime, uid):
    rt = runtime
    _, (tid,), cap = hold(rt, uid)
    for name in ("b", "c", "d"):
        rt.spawn_agent(f"{uid}-{name}", capabilities=[cap], capacity=1, handler=H)
    rt.spawn_agent(f"{uid}-x", capabilities=[f"other-{uid}"], capacity=1, handler=H)
    offer = rt.handoffs.offer(tid, capabilities=[cap], reason="split the load", deadline=60)
    assert offer.info.targets == (f"{uid}-b", f"{uid}-c", f"{uid}-d")  # every alive agent with it but the holder
    # misuse: typed errors, nothing changed
    with pytest.raises(NotOfferedError, match=f"not made to agent '{uid}-x'"):
        rt.handoffs.accept(offer.id, agent=f"{uid}-x")
    with pytest.raises(HandoffNotFoundError):
        rt.handoffs.accept("no-such-offer", agent=f"{uid}-b")
    with pytest.raises(InvalidHandoffError, match="exactly one of"):
        rt.handoffs.offer(tid, to=[f"{uid}-b"], capabilities=[cap])
    with pytest.raises(InvalidHandoffError, match="not the string"):
        rt.handoffs.offer(tid, to=f"{uid}-b")
    with pytest.raises(InvalidHandoffError, match="deadline"):
        rt.handoffs.offer(tid, to=[f"{uid}-b"], deadline=float("nan"))
    with pytest.raises(NotHolderError, match=f"agent '{uid}-b' does not hold"):
        rt.handoffs.offer(tid, to=[f"{uid}-c"], agent=f"{uid}-b")
    rt.handoffs.decline(offer.id, agent=f"{uid}-c", reason="busy with my own")
    rt.handoffs.decline(offer.id, agent=f"{uid}-d", reason="no")
    assert rt.handoffs.get(offer.id).declines == {f"{uid}-c": "busy with my own", f"{uid}-d": "no"}
    assert rt.handoffs.accept(offer.id, agent=f"{uid}-b").accepted_by == f"{uid}-b"
    assert rt.wait([tid], timeout=60) == {tid: "completed"}
    assert rt.get(tid).agent_id == f"{uid}-b" and completed(rt, tid) == 1
    declined = [e.payload for e in rt.events(tid) if e.type == "agent.handoff.declined"]
    assert [(d["agent"], d["reason"]) for d in declined] == [(f"{uid}-c", "busy with my own"), (f"{uid}-d", "no")]


def test_accept_rechecks_the_acceptor_as_registered_now_and_the_offer_stays_open(runtime, uid):
    rt = runtime
    _, (tid,), cap = hold(rt, uid)
    b = rt.spawn_agent(f"{uid}-b", capabilities=[cap], capacity=1, handler=H)
    rt.spawn_agent(f"{uid}-c", capabilities=[cap], capacity=1, handler=H)
    offer = rt.handoffs.offer(tid, to=[f"{uid}-b", f"{uid}-c"], deadline=120)
    # b drops the capability the task requires after the offer was made to it
    b.update(capabilities=[f"other-{uid}"])
    with pytest.raises(AcceptorUnavailableError, match=rf"agent '{uid}-b' lacks \['{cap}'\] as registered now"):
        rt.handoffs.accept(offer.id, agent=f"{uid}-b")
    # c is restarted with a handler for another type only
    rt.agents.ref(f"{uid}-c").stop(timeout=5)
    rt.spawn_agent(f"{uid}-c", capabilities=[cap], capacity=1, handlers={"other": H})
    with pytest.raises(AcceptorUnavailableError, match=f"agent '{uid}-c' has no handler for type 'held'"):
        rt.handoffs.accept(offer.id, agent=f"{uid}-c")
    # nothing moved: the offer is open, the task still with its first attempt
    assert rt.handoffs.get(offer.id).status == "open"
    assert (rt.get(tid).status, rt.get(tid).attempt, rt.get(tid).agent_id) == ("running", 1, f"{uid}-a")
    b.update(capabilities=[cap])
    assert rt.handoffs.accept(offer.id, agent=f"{uid}-b").accepted_by == f"{uid}-b"
    assert rt.wait([tid], timeout=60) == {tid: "completed"}
    assert rt.get(tid).result["by"] == f"{uid}-b" and completed(rt, tid) == 1


@pytest.mark.faults
def test_a_handoff_survives_scheduler_kills(own_runtime, uid):
    rt = own_runtime
    _, (tid,), cap = hold(rt, uid)
    rt.spawn_agent(f"{uid}-b", capabilities=[cap], capacity=1, handler=H)
    offer = rt.handoffs.offer(tid, to=[f"{uid}-b"], reason="restart me", deadline=120)
    first = rt.describe()["pid"]
    ray.kill(rt.scheduler, no_restart=False)  # asynchronous: wait for the restarted process
    until(lambda: rt.describe()["pid"] != first, "the scheduler's restart")
    assert rt.handoffs.get(offer.id).status == "open"  # restored, deadline re-armed
    rt.handoffs.accept(offer.id, agent=f"{uid}-b")
    ray.kill(rt.scheduler, no_restart=False)
    assert rt.wait([tid], timeout=120) == {tid: "completed"}
    info = rt.get(tid)
    assert info.agent_id == f"{uid}-b" and info.attempt == 2 and info.result["offer"] == offer.id
    assert [a.outcome for a in rt.attempts(tid)] == ["handed_off", "completed"]
    assert completed(rt, tid) == 1
    with pytest.raises(HandoffClosedError, match=f"accepted by agent '{uid}-b'"):
        rt.handoffs.accept(offer.id, agent=f"{uid}-b")
