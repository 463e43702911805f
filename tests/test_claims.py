"""Claiming, attempt fencing and attempt outcomes (``omoi_ray.core.claims``)."""

from __future__ import annotations

import dataclasses

from omoi_ray.core.model import AttemptOutcome, Priority
from omoi_ray.core.tasks import TaskStatus
from tests.graph_harness import Harness, spec

OK = AttemptOutcome.COMPLETED
FAIL = AttemptOutcome.FAILED


def test_claims_follow_priority_then_submission_order_and_capabilities():
    h = Harness()
    h.submit(
        spec("low", priority=Priority.LOW),
        spec("med1"),
        spec("gpu", requires=("gpu",), priority=Priority.CRITICAL),
        spec("high", priority=Priority.HIGH),
        spec("med2"),
        spec("crit", priority=Priority.CRITICAL),
    )
    cpu = h.agent("cpu", capacity=10)
    assert h.claim(cpu) == ["crit", "high", "med1", "med2", "low"]
    assert h.graph.unclaimable() == {frozenset({"gpu"}): 1}
    gpu = h.agent("gpu", caps=("gpu",), capacity=1)
    assert h.claim(gpu) == ["gpu"]


def test_an_agent_claims_only_the_task_types_it_handles():
    """Routing by type: capabilities are not enough, the agent must handle the task's type."""
    h = Harness()
    h.submit(
        dataclasses.replace(spec("b1", priority=Priority.CRITICAL), type="b"),
        dataclasses.replace(spec("a1"), type="a"),
        dataclasses.replace(spec("b2"), type="b"),
    )
    only_a = h.graph.register_agent("only-a", "i1", frozenset(), 10, h.now, handles=frozenset({"a"}))
    assert h.claim(only_a) == ["a1"]
    assert h.claim(only_a) == []  # b1 and b2 stay ready: nobody alive handles "b"
    assert h.graph.unhandled() == {("b", frozenset()): 2}
    assert h.graph.unclaimable() == {}  # capabilities are not what is missing
    default = h.graph.register_agent("default", "i1", frozenset(), 10, h.now)  # handles None: every type
    assert h.graph.unhandled() == {}
    assert h.claim(default) == ["b1", "b2"]


def test_a_requeued_task_keeps_its_type_routing():
    h = Harness()
    h.submit(dataclasses.replace(spec("b"), type="b"))
    only_b = h.graph.register_agent("only-b", "i1", frozenset(), 1, h.now, handles=frozenset({"b"}))
    only_a = h.graph.register_agent("only-a", "i1", frozenset(), 1, h.now, handles=frozenset({"a"}))
    assert h.claim(only_b) == ["b"]
    h.graph.agent_lost("only-b", "i1", h.now, "died")  # requeued at once (lost)
    assert h.status("b") == "ready"
    assert h.claim(only_a) == []
    assert h.graph.unhandled() == {("b", frozenset()): 1}


def test_claims_never_exceed_free_slots():
    h = Harness()
    h.submit(*[spec(f"t{i}") for i in range(10)])
    ag = h.agent(capacity=3)
    assert len(h.claim(ag)) == 3
    assert h.claim(ag) == []
    h.run(ag, "t0")
    assert h.claim(ag) == ["t3"]


def test_retryable_error_waits_out_the_backoff_before_it_is_ready_again():
    h = Harness()
    h.submit(spec("a"))
    ag = h.agent()
    h.claim(ag)
    h.run(ag, "a", outcome=FAIL, error="RuntimeError: flaky")
    task = h.graph.tasks["a"]
    assert task.status is TaskStatus.RETRY_WAIT
    delay = task.not_before - h.now
    assert 0.75 <= delay <= 1.25  # first retry: 1 s x U(0.75, 1.25)
    h.tick(delay - 0.01)
    assert h.claim(ag) == [] and h.status("a") == "retry_wait"
    h.tick(0.02)
    assert h.claim(ag) == ["a"]
    assert h.graph.tasks["a"].attempt == 2


def test_backoff_doubles_and_is_capped():
    h = Harness(lease_ttl=1000.0)  # the agent stays healthy through minutes of backoff without calling
    h.submit(spec("a", max_retries=10))
    ag = h.agent()
    delays = []
    for attempt in range(1, 9):
        h.claim(ag)
        h.run(ag, "a", attempt, outcome=FAIL)
        task = h.graph.tasks["a"]
        delays.append(task.not_before - h.now)
        h.tick(task.not_before - h.now)
    for n, delay in enumerate(delays):
        assert min(0.75 * 2**n, 60) <= delay <= min(1.25 * 2**n, 60)
    assert delays[-1] == 60


def test_retries_are_bounded_then_the_task_fails_and_dooms_dependents():
    h = Harness()
    h.submit(spec("a", max_retries=1), spec("b", "a"), spec("c", "b"))
    ag = h.agent()
    h.claim(ag)
    h.run(ag, "a", 1, outcome=FAIL, error="E1")
    h.tick(10)
    h.claim(ag)
    h.run(ag, "a", 2, outcome=FAIL, error="E2")
    changes = h.drain()
    final = {t.id: t for t in changes.created + changes.updated}
    assert final["a"].status is TaskStatus.FAILED and final["a"].error == "E2"
    assert final["a"].reason == "gave up after 2 attempts"
    for dep in ("b", "c"):
        assert final[dep].status is TaskStatus.UPSTREAM_FAILED
        assert final[dep].reason == "upstream task 'a' failed"
        assert final[dep].upstream == "a"
    assert not h.graph.tasks


def test_permanent_error_fails_without_retrying():
    h = Harness()
    h.submit(spec("a", max_retries=5))
    ag = h.agent()
    h.claim(ag)
    h.run(ag, "a", outcome=AttemptOutcome.PERMANENT_FAILURE, error="PermanentError: no")
    assert h.drain().created[0].status is TaskStatus.FAILED


def test_timeout_retries_then_times_out_and_rejects_the_late_result():
    h = Harness()
    h.submit(spec("a", timeout=5, max_retries=1))
    ag = h.agent(capacity=1)
    h.claim(ag)
    h.start(ag, "a")
    h.tick(5)
    changes = h.drain()
    assert h.status("a") == "retry_wait"
    assert [(s.task_id, s.attempt, s.reason) for s in changes.signals] == [("a", 1, "timed out")]
    # The handler has not ended: its slot stays taken until the agent says it has.
    assert ag.free_slots == 0
    rejection = h.finish(ag, "a", 1, outcome=OK, result="late")
    assert rejection is not None and "stale" in rejection.reason or "retry_wait" in rejection.reason
    assert ag.free_slots == 1
    h.tick(10)
    h.claim(ag)
    h.start(ag, "a", 2)
    h.tick(5)
    assert h.drain().updated[0].status is TaskStatus.TIMED_OUT


def test_reports_from_stale_attempts_or_other_agents_are_rejected():
    h = Harness()
    h.submit(spec("a"))
    a1, a2 = h.agent("a1"), h.agent("a2")
    h.claim(a1)
    assert h.start(a2, "a") is not None
    assert h.finish(a1, "a", attempt=7) is not None
    assert h.start(a1, "a") is None
    assert h.start(a1, "a") is None  # a repeated start is harmless
    assert h.status("a") == "running"


def test_heartbeat_names_stale_held_attempts_and_loses_unreceived_ones():
    h = Harness(lease_ttl=10)
    h.submit(spec("a"), spec("b"))
    ag = h.agent()
    h.claim(ag)
    h.graph.cancel("a", h.now)
    assert h.graph.heartbeat(ag, [("a", 1), ("b", 1)], h.now) == [("a", 1)]
    h.now += 11
    assert h.graph.heartbeat(ag, [("a", 1)], h.now) == [("a", 1)]
    assert h.status("b") == "ready"  # handed out long ago, never held: lost and requeued


def test_retried_claim_gets_the_same_tasks():
    h = Harness()
    h.submit(spec("a"), spec("b"))
    ag = h.agent(capacity=2)
    first = h.claim(ag, request_id="r1")
    assert [t.id for t in h.graph.claimed_by_request(ag, "r1")] == first
    assert h.graph.claimed_by_request(ag, "r2") == []


def test_a_timed_out_attempt_cannot_complete_the_retry_running_elsewhere():
    h = Harness()
    h.submit(spec("a", timeout=5, max_retries=2))
    slow, fast = h.agent("slow", capacity=1), h.agent("fast", inc="i2", capacity=1)
    assert h.claim(slow) == ["a"]
    h.start(slow, "a")
    h.tick(5)  # attempt 1 times out; its handler is still running on "slow"
    h.tick(2)  # the backoff has passed
    assert h.claim(slow) == []  # its only slot is still taken by the abandoned handler
    assert h.claim(fast) == ["a"]
    h.start(fast, "a", 2)
    rejection = h.finish(slow, "a", 1, outcome=OK, result="stale")
    assert rejection is not None and rejection.reason == "attempt 1 is stale; the current attempt is 2"
    assert h.status("a") == "running" and slow.free_slots == 1
    assert h.finish(fast, "a", 2, outcome=OK, result="fresh") is None
    assert {t.id: t.result for t in h.drain().created} == {"a": "fresh"}


def test_tasks_with_conflicting_declared_locks_are_not_handed_out_together():
    h = Harness()
    x = lambda tid, mode="exclusive", **kw: dataclasses.replace(spec(tid, **kw), locks=(("file", "a", mode),))
    h.submit(x("w1", priority=Priority.HIGH), x("w2", priority=Priority.HIGH), x("r1", "shared"), x("r2", "shared"), spec("free"))
    ag = h.agent(capacity=10)
    assert h.claim(ag) == ["w1", "free"]  # w2 and the readers conflict with w1; they keep their places
    h.run(ag, "w1")
    assert h.claim(ag) == ["w2"]
    h.run(ag, "w2")
    assert h.claim(ag) == ["r1", "r2"]  # shared locks go together
    assert h.graph.lock_usage == {("file", "a"): [0, 2]}


def test_a_timed_out_attempt_keeps_its_declared_locks_until_its_handler_ends():
    h = Harness()
    x = lambda tid: dataclasses.replace(spec(tid, timeout=5, max_retries=0), locks=(("db", "t", "exclusive"),))
    h.submit(x("slow"), x("next"))
    ag = h.agent(capacity=2)
    assert h.claim(ag) == ["slow"]
    h.start(ag, "slow")
    h.tick(5)  # timed out, but its handler (and its lock) may still be running
    assert h.claim(ag) == []
    h.finish(ag, "slow", 1)  # the handler ended
    assert h.claim(ag) == ["next"]
