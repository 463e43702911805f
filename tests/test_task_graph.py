"""Scheduler decisions, made without I/O: the behaviour every other layer relies on."""

from __future__ import annotations

import dataclasses

import pytest

from omoi_ray.core.model import AttemptOutcome, Priority
from omoi_ray.core.submission import StoredTask
from omoi_ray.core.tasks import TaskStatus
from omoi_ray.errors import CycleError, IdempotencyConflictError, TaskExistsError, UnknownDependencyError
from tests.graph_harness import Harness, spec

OK = AttemptOutcome.COMPLETED
FAIL = AttemptOutcome.FAILED


def test_submission_creates_ready_and_pending_tasks_with_events():
    h = Harness()
    h.submit(spec("a"), spec("b", "a"))
    assert h.status("a") == "ready" and h.status("b") == "pending"
    assert h.event_types("a") == ["task.created", "task.ready"]
    assert h.event_types("b") == ["task.created"]


def test_completion_readies_dependents_only_when_all_dependencies_completed():
    h = Harness()
    h.submit(spec("a"), spec("b"), spec("c", "a", "b"))
    ag = h.agent()
    assert sorted(h.claim(ag)) == ["a", "b"]
    h.run(ag, "a", result={"x": 1})
    assert h.status("c") == "pending"
    h.run(ag, "b")
    assert h.status("c") == "ready"
    assert "a" not in h.graph.tasks  # terminal tasks leave memory
    changes = h.drain()
    done = {t.id: t for t in changes.created}
    assert done["a"].status is TaskStatus.COMPLETED and done["a"].result == {"x": 1}


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
    h = Harness()
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


def test_failure_at_the_head_of_a_very_long_chain_dooms_all_of_it():
    h = Harness()
    n = 20_000
    h.submit(spec("t0", max_retries=0), *[spec(f"t{i}", f"t{i-1}") for i in range(1, n)])
    ag = h.agent()
    h.claim(ag)
    h.run(ag, "t0", outcome=FAIL)
    assert not h.graph.tasks
    statuses = {t.status for t in h.drain().created}
    assert statuses == {TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED}


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


def test_cancel_pending_ready_and_running_tasks():
    h = Harness()
    h.submit(spec("run"), spec("ready", requires=("x",)), spec("pend", "run"), spec("child", "ready"))
    ag = h.agent()
    assert h.claim(ag) == ["run"]
    h.start(ag, "run")
    assert h.graph.cancel("ready", h.now) is TaskStatus.CANCELLED
    assert h.graph.cancel("run", h.now) is TaskStatus.CANCELLED
    assert h.graph.cancel("nope", h.now) is None
    changes = h.drain()
    by_id = {t.id: t for t in changes.created + changes.updated}
    assert by_id["pend"].status is TaskStatus.UPSTREAM_FAILED
    assert by_id["pend"].reason == "upstream task 'run' cancelled"
    assert by_id["child"].status is TaskStatus.UPSTREAM_FAILED
    assert [(s.task_id, s.agent_id) for s in changes.signals] == [("run", "a1")]
    assert h.finish(ag, "run", 1, outcome=OK) is not None  # the late result is discarded
    assert h.graph.unclaimable() == {}


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


def test_lost_agent_requeues_its_attempts_with_the_next_attempt_number():
    h = Harness()
    h.submit(spec("a"), spec("b", max_retries=0))
    a1 = h.agent("a1")
    h.claim(a1)
    h.start(a1, "a")
    assert h.graph.agent_lost("a1", "i1", h.now, "died")
    assert h.status("a") == "ready"
    by_id = {t.id: t for t in h.drain().created}
    assert by_id["b"].status is TaskStatus.FAILED  # no retries left
    assert by_id["b"].error == "lost: agent 'a1' died"
    a2 = h.agent("a2", inc="i2")
    assert h.claim(a2) == ["a"]
    assert h.graph.tasks["a"].attempt == 2
    assert h.finish(a1, "a", 1, outcome=OK) is not None  # the dead agent's result is refused


def test_lease_expiry_loses_the_agent_and_any_call_renews_it():
    h = Harness(lease_ttl=10)
    h.submit(spec("a"))
    ag = h.agent()
    h.claim(ag)
    h.tick(9)
    h.graph.renew(ag, h.now)
    h.tick(9)
    assert h.status("a") == "claimed"
    h.tick(2)
    assert h.status("a") == "ready"
    assert h.graph.live_agent("a1", "i1") is None


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


def test_a_new_incarnation_replaces_the_old_one():
    h = Harness()
    h.submit(spec("a"))
    old = h.agent("x", inc="old")
    h.claim(old)
    new = h.agent("x", inc="new")
    assert h.status("a") == "ready"
    assert h.claim(new) == ["a"]
    assert h.graph.live_agent("x", "old") is None


def test_retried_claim_gets_the_same_tasks():
    h = Harness()
    h.submit(spec("a"), spec("b"))
    ag = h.agent(capacity=2)
    first = h.claim(ag, request_id="r1")
    assert [t.id for t in h.graph.claimed_by_request(ag, "r1")] == first
    assert h.graph.claimed_by_request(ag, "r2") == []


def test_resubmitting_the_same_task_is_a_no_op_and_a_different_one_is_refused():
    h = Harness()
    h.submit(spec("a"))
    h.drain()
    assert h.submit(spec("a")) == ["a"]
    assert not h.drain()
    with pytest.raises(TaskExistsError, match="'a' already exists"):
        h.submit(spec("a", fingerprint="other"))
    stored = {"old": StoredTask("old", TaskStatus.COMPLETED, "fp-old")}
    assert h.submit(spec("old"), stored=stored) == ["old"]


def test_idempotency_keys_dedupe_and_detect_reuse():
    h = Harness()
    assert h.submit(spec("a", key="k1")) == ["a"]
    assert h.submit(spec("a2", key="k1", fingerprint="fp-a")) == ["a"]
    with pytest.raises(IdempotencyConflictError, match="'k1'"):
        h.submit(spec("a3", key="k1", fingerprint="different"))
    stored_keys = {"k9": StoredTask("z", TaskStatus.COMPLETED, "fp-q", "k9")}
    assert h.submit(spec("q", key="k9"), spec("r", "q"), stored_keys=stored_keys) == ["z", "r"]
    assert h.status("r") == "ready"  # its dependency resolved to the stored, completed task


def test_rejected_submissions_change_nothing():
    h = Harness()
    h.submit(spec("a"))
    h.drain()
    before = dict(h.graph.tasks)
    for bad in ([spec("b", "zz")], [spec("c", "d"), spec("d", "c")]):
        with pytest.raises((UnknownDependencyError, CycleError)):
            h.submit(*bad)
        assert h.graph.tasks == before and not h.drain()


def test_dependencies_on_stored_tasks_use_their_final_status():
    h = Harness()
    stored = {
        "ok": StoredTask("ok", TaskStatus.COMPLETED, "x"),
        "bad": StoredTask("bad", TaskStatus.TIMED_OUT, "y"),
    }
    h.submit(spec("a", "ok"), spec("b", "bad"), spec("c", "b"), stored=stored)
    assert h.status("a") == "ready"
    changes = h.drain()
    by_id = {t.id: t for t in changes.created}
    assert by_id["b"].status is TaskStatus.UPSTREAM_FAILED
    assert by_id["b"].reason == "upstream task 'bad' timed_out"
    assert by_id["c"].status is TaskStatus.UPSTREAM_FAILED and by_id["c"].upstream == "bad"


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


def test_tasks_sharing_an_idempotency_key_in_one_submission():
    h = Harness()
    assert h.submit(spec("a", key="k", fingerprint="f"), spec("b", key="k", fingerprint="f"), spec("c", "b")) == ["a", "a", "c"]
    assert set(h.graph.tasks) == {"a", "c"} and h.graph.tasks["c"].depends_on == ("a",)
    with pytest.raises(IdempotencyConflictError, match="key 'k2' of task 'y' was already used by task 'x'"):
        h.submit(spec("x", key="k2", fingerprint="1"), spec("y", key="k2", fingerprint="2"))
    assert "x" not in h.graph.tasks


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


def test_losing_an_agent_reports_its_attempts_as_abandoned():
    h = Harness()
    h.submit(spec("a"), spec("b"))
    ag = h.agent()
    h.claim(ag)
    h.drain()
    h.graph.agent_lost("a1", "i1", h.now, "died")
    assert sorted(h.drain().abandoned) == [("a", 1), ("b", 1)]


def test_an_agent_whose_capabilities_change_emits_an_event():
    h = Harness()
    h.agent("a1", caps=("x",), capacity=2)
    h.graph.take_changes()
    h.agent("a1", caps=("x",), capacity=2)  # a refresh with nothing new says nothing
    assert h.graph.take_changes().events == []
    h.agent("a1", caps=("x", "y"), capacity=3)
    events = h.graph.take_changes().events
    assert [(e.type, e.payload["capabilities"], e.payload["previous_capabilities"]) for e in events] == [
        ("agent.capabilities.changed", ["x", "y"], ["x"])
    ]
    h.agent("a1", caps=("y",), capacity=3, inc="i2")  # a new incarnation with other capabilities
    types = [e.type for e in h.graph.take_changes().events]
    assert types == ["agent.lost", "agent.capabilities.changed", "agent.registered"]
