"""Negotiated hand-offs in the pure core (``omoi_ray.core.handoff``): the offer table, accept,
decline, expiry, withdrawal, fencing, not charged, and every misuse (typed error, nothing changed)."""

from __future__ import annotations

import pytest

from omoi_ray.core.claims import OUTCOME_RULES, Report
from omoi_ray.core.handoff import ACTIONS, CLOSED, HandoffStatus, next_status
from omoi_ray.core.model import AttemptOutcome
from omoi_ray.core.tasks import TaskStatus
from omoi_ray.errors import (
    AcceptorUnavailableError,
    AgentNotFoundError,
    HandoffClosedError,
    HandoffNotFoundError,
    HandoffPendingError,
    InvalidHandoffError,
    NotHolderError,
    NotOfferedError,
    ThreadExistsError,
)
from tests.graph_harness import Harness, spec

H = HandoffStatus
S = TaskStatus


def held(h: Harness, *, running: bool = True, tid: str = "t", **kw):
    """A task held by agent a1 (running unless told otherwise), and agents b1, b2 with free slots."""
    h.submit(spec(tid, **kw))
    a = h.agent("a1", caps=("x",), capacity=1)
    b1 = h.agent("b1", caps=("x", "review"), inc="ib1")
    b2 = h.agent("b2", caps=("x",), inc="ib2")
    assert h.claim(a) == [tid]
    if running:
        h.start(a, tid)
    h.drain()
    return a, b1, b2


def offer(h: Harness, oid: str = "h1", tid: str = "t", deadline: float = 60.0, **kw):
    kw.setdefault("targets", ("b1", "b2"))
    return h.graph.handoffs.offer(oid, tid, h.now, deadline_s=deadline, reason="need review", context={"k": 1}, **kw)


def types(changes) -> list[str]:
    """The hand-off and task event types of a change set, in order (thread events apart)."""
    return [e.type for e in changes.events if e.type.startswith(("agent.handoff.", "task."))]


def unchanged(h: Harness) -> None:
    changes = h.graph.take_changes()
    assert not changes and not changes.worth_flushing(), changes


# ---------------------------------------------------------------- the table


def test_the_table_only_moves_open_offers_and_each_move_has_its_event():
    assert {state for state, _ in ACTIONS} == {H.OPEN}
    assert {new for new, _ in ACTIONS.values()} == set(HandoffStatus)
    assert CLOSED == set(HandoffStatus) - {H.OPEN}
    for (_, action), (_, event) in ACTIONS.items():
        assert event.startswith("agent.handoff.")
    assert OUTCOME_RULES[AttemptOutcome.HANDED_OFF].charged is False


def test_the_event_types_are_in_the_catalogue_as_emitted():
    from omoi_ray.core.events import EMITTED

    for _, event in ACTIONS.values():
        assert event in EMITTED
    assert "agent.handoff.requested" in EMITTED


# ---------------------------------------------------------------- accept


def test_accept_moves_the_task_to_a_new_attempt_of_the_acceptor_not_charged_and_fences_the_old():
    h = Harness()
    a, b1, _ = held(h, max_retries=0)
    o = offer(h)
    assert o.status is H.OPEN and o.targets == ("b1", "b2")
    changes = h.drain()
    assert types(changes) == ["agent.handoff.requested"]
    assert changes.handoffs == [o]
    thread = changes.threads[0]
    assert thread.type == "handoff" and thread.participants == ("a1", "b1", "b2") and o.thread_id == thread.id
    assert [(m.kind, m.sender, m.to) for m in changes.messages] == [("handoff.offer", "a1", None)]
    assert sorted(r.recipient for r in changes.receipts) == ["b1", "b2"]
    h.now += 1
    o2, task = h.graph.handoffs.accept("h1", "b1", h.now)
    assert o2 is o and o.status is H.ACCEPTED and o.accepted_by == "b1" and o.new_attempt == 2
    assert task.status is S.CLAIMED and task.attempt == 2 and task.agent_id == "b1"
    assert task.claim_request_id == "handoff:h1"
    assert ("t", 2) in b1.busy and ("t", 1) in a.busy  # the old handler still holds its slot
    changes = h.drain()
    assert types(changes) == ["agent.handoff.accepted", "task.claimed"]
    assert [m.kind for m in changes.messages] == ["handoff.accepted"]
    assert changes.threads[0].status.value == "resolved" and changes.threads[0].outcome["accepted_by"] == "b1"
    old = next(x for x in changes.attempts if x.attempt == 1)
    assert old.outcome is AttemptOutcome.HANDED_OFF
    assert [(s.agent_id, s.task_id, s.attempt) for s in changes.signals] == [("a1", "t", 1)]
    assert changes.abandoned == [("t", 1)]  # its locks are let go
    assert ("t", 2) in changes.new_attempts
    # the old attempt's late result is stale, and frees its slot
    rejection = h.finish(a, "t", 1, result={"late": True})
    assert rejection is not None and "stale" in rejection.reason
    assert ("t", 1) not in a.busy and h.graph.tasks["t"].result is None
    # the acceptor finishes it; max_retries=0 and two attempts: the hand-off was not charged
    h.run(b1, "t", 2, result={"ok": 1})
    assert "t" not in h.graph.tasks


def test_a_failure_after_a_handoff_still_gets_its_retries():
    h = Harness()
    _, b1, _ = held(h, max_retries=1)
    offer(h)
    h.graph.handoffs.accept("h1", "b1", h.now)
    h.run(b1, "t", 2, outcome=AttemptOutcome.FAILED, error="boom")
    assert h.status("t") == "retry_wait"  # 1 charged attempt of 2 allowed


def test_accept_of_a_claimed_not_started_task_works_too():
    h = Harness()
    held(h, running=False)
    offer(h)
    _, task = h.graph.handoffs.accept("h1", "b2", h.now)
    assert task.status is S.CLAIMED and task.agent_id == "b2" and task.attempt == 2


def test_second_accept_names_the_winner_and_changes_nothing():
    h = Harness()
    held(h)
    offer(h)
    h.graph.handoffs.accept("h1", "b1", h.now)
    h.drain()
    with pytest.raises(HandoffClosedError, match="already accepted by agent 'b1'") as err:
        h.graph.handoffs.accept("h1", "b2", h.now)
    assert err.value.winner == "b1"
    with pytest.raises(HandoffClosedError, match="'b1'"):
        h.graph.handoffs.accept("h1", "b1", h.now)  # accepting twice
    unchanged(h)


def test_the_acceptor_is_delivered_the_task_with_its_context():
    h = Harness()
    _, b1, _ = held(h)
    offer(h)
    _, task = h.graph.handoffs.accept("h1", "b1", h.now)
    assert [t.id for t in h.graph.handoffs.undelivered(b1, set())] == ["t"]
    assert h.graph.handoffs.undelivered(b1, {("t", 2)}) == []
    ctx = h.graph.handoffs.delivery(task)
    assert ctx.offer_id == "h1" and ctx.from_agent == "a1" and ctx.reason == "need review" and ctx.context == {"k": 1}
    h.start(b1, "t", 2)
    assert h.graph.handoffs.undelivered(b1, set()) == []


# ---------------------------------------------------------------- decline, expire, withdraw


def test_declines_are_recorded_and_the_last_one_closes_the_offer_nothing_moves():
    h = Harness()
    held(h)
    offer(h)
    h.drain()
    h.graph.handoffs.decline("h1", "b1", "busy", h.now)
    o = h.graph.handoffs.get("h1")
    assert o.status is H.OPEN and o.declines == {"b1": "busy"}
    with pytest.raises(HandoffClosedError, match="already declined"):
        h.graph.handoffs.decline("h1", "b1", "again", h.now)
    with pytest.raises(HandoffClosedError, match="already declined"):
        h.graph.handoffs.accept("h1", "b1", h.now)
    h.graph.handoffs.decline("h1", "b2", "no", h.now)
    assert o.status is H.DECLINED
    task = h.graph.tasks["t"]
    assert task.status is S.RUNNING and task.attempt == 1 and task.agent_id == "a1"
    changes = h.drain()
    events = [(e.type, e.payload["closed"]) for e in changes.events if e.type.startswith("agent.handoff")]
    assert [m.kind for m in changes.messages] == ["handoff.declined"] * 2
    assert changes.threads[0].status.value == "resolved"
    assert events == [("agent.handoff.declined", False), ("agent.handoff.declined", True)]
    with pytest.raises(HandoffClosedError, match="declined by every target"):
        h.graph.handoffs.accept("h1", "b2", h.now)
    # a new offer may follow
    offer(h, "h2")


def test_deadline_expires_the_offer_nothing_moves_and_late_answers_are_refused():
    h = Harness()
    held(h)
    offer(h, deadline=10)
    h.drain()
    h.tick(9.9)
    assert h.graph.handoffs.get("h1").status is H.OPEN
    h.tick(0.2)
    assert h.graph.handoffs.get("h1").status is H.EXPIRED
    changes = h.drain()
    assert types(changes) == ["agent.handoff.expired"]
    assert changes.threads[0].status.value == "abandoned"
    assert h.graph.tasks["t"].status is S.RUNNING and h.graph.tasks["t"].agent_id == "a1"
    with pytest.raises(HandoffClosedError, match="expired"):
        h.graph.handoffs.accept("h1", "b1", h.now)
    unchanged(h)


def test_an_answer_past_the_deadline_before_the_timer_fired_is_refused():
    h = Harness()
    held(h)
    offer(h, deadline=10)
    h.drain()
    h.now += 11  # the clock moved; the timer has not fired yet
    with pytest.raises(HandoffClosedError, match="expired"):
        h.graph.handoffs.accept("h1", "b1", h.now)
    unchanged(h)


@pytest.mark.parametrize("how", ["completed", "failed", "cancelled", "agent_lost", "timed_out"])
def test_the_offer_is_withdrawn_when_the_offering_attempt_ends_first(how):
    h = Harness()
    a, _, _ = held(h, timeout=5.0)
    offer(h)
    if how == "completed":
        h.finish(a, "t", 1, result=1)
    elif how == "failed":
        h.finish(a, "t", 1, outcome=AttemptOutcome.FAILED, error="x")
    elif how == "cancelled":
        h.graph.cancel("t", h.now)
    elif how == "agent_lost":
        h.graph.agent_lost("a1", "i1", h.now, "died")
    else:
        h.tick(5.1)
    o = h.graph.handoffs.get("h1")
    assert o.status is H.WITHDRAWN
    changes = h.drain()
    assert "agent.handoff.withdrawn" in types(changes)
    assert changes.threads[0].status.value == "abandoned"
    with pytest.raises(HandoffClosedError, match="withdrawn"):
        h.graph.handoffs.accept("h1", "b1", h.now)
    if how in ("failed", "agent_lost"):  # the usual rules put the task back
        assert h.status("t") in ("retry_wait", "ready")


# ---------------------------------------------------------------- targets


def test_capabilities_target_every_alive_agent_having_them_but_the_offerer():
    h = Harness()
    held(h)
    h.agent("c1", caps=("review",), inc="ic1")  # lacks the task's requirement? the task requires nothing
    o = offer(h, targets=None, capabilities=("review",))
    assert o.targets == ("b1", "c1") and o.capabilities == ("review",)


def test_capability_targets_must_also_run_the_task():
    h = Harness()
    held(h, requires=("x",))
    h.agent("c1", caps=("review",), inc="ic1")
    o = offer(h, targets=None, capabilities=("review",))
    assert o.targets == ("b1",)


def test_targets_must_handle_the_task_type():
    h = Harness()
    held(h)  # task "t" is of type "t"
    h.graph.register_agent("c1", "ic1", frozenset({"review"}), 1, h.now, handles=frozenset({"other"}))
    h.graph.register_agent("c2", "ic2", frozenset({"review"}), 1, h.now, handles=frozenset({"t"}))
    h.drain()
    with pytest.raises(InvalidHandoffError, match="'c1' has no handler for type 't'"):
        offer(h, targets=("c1",))
    unchanged(h)
    o = offer(h, targets=None, capabilities=("review",))
    assert o.targets == ("b1", "c2")  # c1 has the capability but no handler for the type


def test_an_offer_from_the_holding_agent_and_attempt_only():
    h = Harness()
    held(h)
    with pytest.raises(NotHolderError, match="agent 'b1' does not hold task 't'"):
        offer(h, agent_id="b1")
    with pytest.raises(NotHolderError, match="attempt 3 of task 't' is stale"):
        offer(h, agent_id="a1", attempt=3)
    unchanged(h)
    offer(h, agent_id="a1", attempt=1)


def test_misuse_of_offer_raises_typed_errors_and_changes_nothing():
    h = Harness()
    held(h)
    h.submit(spec("waiting", "t"))
    h.drain()
    cases = [
        (NotHolderError, "is not held by any agent", dict(tid="waiting")),
        (NotHolderError, "not live", dict(tid="nope")),
        (AgentNotFoundError, "no agent named 'zz'", dict(targets=("zz",))),
        (InvalidHandoffError, "to itself", dict(targets=("a1",))),
        (InvalidHandoffError, "no healthy agent", dict(targets=None, capabilities=("gpu",))),
    ]
    for error, message, kw in cases:
        with pytest.raises(error, match=message):
            offer(h, **kw)
        unchanged(h)
    h.agent("gone", inc="ig")
    h.graph.agent_lost("gone", "ig", h.now, "x")
    h.drain()
    with pytest.raises(InvalidHandoffError, match="'gone' is lost"):
        offer(h, targets=("gone",))
    unchanged(h)


def test_one_open_offer_per_task_and_a_repeated_offer_id_is_idempotent():
    h = Harness()
    held(h)
    first = offer(h)
    h.drain()
    assert offer(h) is first
    unchanged(h)
    with pytest.raises(HandoffPendingError, match="already has the open offer 'h1'"):
        offer(h, "h2")
    unchanged(h)


def test_misuse_of_answers_raises_typed_errors_and_changes_nothing():
    h = Harness()
    held(h)
    h.agent("outsider", inc="io")
    offer(h)
    h.drain()
    with pytest.raises(HandoffNotFoundError, match="'nope'"):
        h.graph.handoffs.accept("nope", "b1", h.now)
    with pytest.raises(NotOfferedError, match="not made to agent 'outsider'"):
        h.graph.handoffs.accept("h1", "outsider", h.now)
    with pytest.raises(NotOfferedError):
        h.graph.handoffs.decline("h1", "a1", "mine", h.now)
    unchanged(h)


@pytest.mark.parametrize("why", ["no free slot", "not alive", "stale lease"])
def test_an_acceptor_that_cannot_take_the_task_is_refused_and_the_offer_stays_open(why):
    h = Harness()
    _, b1, _ = held(h)
    offer(h)
    if why == "no free slot":
        h.submit(*[spec(f"f{i}") for i in range(4)])
        assert len(h.claim(b1)) == 4
    elif why == "not alive":
        h.graph.agent_lost("b1", "ib1", h.now, "x")
    else:
        b1.lease_expires_at = h.now - 1
    h.drain()
    with pytest.raises(AcceptorUnavailableError, match="agent 'b1'"):
        h.graph.handoffs.accept("h1", "b1", h.now)
    unchanged(h)
    assert h.graph.handoffs.get("h1").status is H.OPEN
    h.graph.handoffs.accept("h1", "b2", h.now)


@pytest.mark.parametrize("change", ["restarted with other handlers", "capabilities changed"])
def test_accept_rechecks_the_acceptors_current_registration_and_the_offer_stays_open(change):
    h = Harness()
    held(h, requires=("x",))
    offer(h)
    if change == "restarted with other handlers":  # a new incarnation of b1 that handles only "z"
        h.graph.register_agent("b1", "ib1-new", frozenset({"x", "review"}), 4, h.now, handles=frozenset({"z"}))
        message = "agent 'b1' has no handler for type 't' as registered now"
    else:  # the same incarnation drops the capability the task requires
        h.graph.register_agent("b1", "ib1", frozenset({"review"}), 4, h.now)
        message = r"agent 'b1' lacks \['x'\] as registered now"
    h.drain()
    with pytest.raises(AcceptorUnavailableError, match=message):
        h.graph.handoffs.accept("h1", "b1", h.now)
    unchanged(h)
    assert h.graph.handoffs.get("h1").status is H.OPEN
    assert h.graph.tasks["t"].agent_id == "a1" and h.graph.tasks["t"].attempt == 1
    h.graph.handoffs.accept("h1", "b2", h.now)
    assert h.graph.tasks["t"].agent_id == "b2"


def test_accept_rechecks_the_capabilities_a_capability_offer_wanted():
    h = Harness()
    held(h)
    offer(h, targets=None, capabilities=("review",))  # to b1 only
    h.graph.register_agent("b1", "ib1", frozenset({"x"}), 4, h.now)
    h.drain()
    with pytest.raises(AcceptorUnavailableError, match=r"agent 'b1' lacks \['review'\]"):
        h.graph.handoffs.accept("h1", "b1", h.now)
    unchanged(h)
    h.graph.register_agent("b1", "ib1", frozenset({"x", "review"}), 4, h.now)
    h.drain()
    h.graph.handoffs.accept("h1", "b1", h.now)
    assert h.graph.tasks["t"].agent_id == "b1"


def test_next_status_refuses_closed_offers():
    h = Harness()
    held(h)
    o = offer(h)
    assert next_status(o, "accept") == (H.ACCEPTED, "agent.handoff.accepted")
    o.status = H.EXPIRED
    with pytest.raises(HandoffClosedError):
        next_status(o, "decline")


def test_restore_rearms_open_offers_and_withdraws_those_whose_attempt_is_gone():
    h = Harness()
    held(h)
    o = offer(h, deadline=10)
    h2 = Harness()
    h2.now = h.now
    task = h.graph.tasks["t"]
    agents = [h.graph.agents[n] for n in ("a1", "b1", "b2")]
    attempts = list(h.graph.open_attempts.values())
    h2.graph.restore([task], [], agents, attempts, 2, h2.now, handoffs=[o])
    assert h2.graph.handoffs.open_by_task == {"t": "h1"}
    h2.tick(11)
    assert o.status is H.EXPIRED
    # an offer whose attempt ended while the scheduler was away is withdrawn on restore
    o.status = H.OPEN
    h3 = Harness()
    h3.now = h.now
    h3.graph.restore([task], [], [h.graph.agents[n] for n in ("b1", "b2")], [], 2, h3.now, handoffs=[o])
    assert o.status is H.WITHDRAWN


def test_heartbeat_report_of_the_new_attempt_counts():
    h = Harness()
    a, b1, _ = held(h)
    offer(h)
    h.graph.handoffs.accept("h1", "b1", h.now)
    assert h.graph.apply_report(b1, Report("started", "t", 2), h.now) is None
    assert h.graph.tasks["t"].status is S.RUNNING
    stale = h.graph.heartbeat(a, [("t", 1)], h.now)
    assert stale == [("t", 1)]


def test_a_thread_closed_by_hand_does_not_stop_the_handoff():
    h = Harness()
    held(h)
    o = offer(h)
    h.graph.threads.close(o.thread_id, "abandoned", h.now)
    h.drain()
    _, task = h.graph.handoffs.accept("h1", "b1", h.now)
    assert task.agent_id == "b1" and o.status is H.ACCEPTED
    assert [m.kind for m in h.drain().messages] == []  # nothing posted to a closed thread


def test_an_offer_whose_thread_cannot_open_leaves_nothing_behind():
    h = Harness()
    held(h)
    h.graph.threads.open("handoff.h1", "review", ["a1"], h.now)
    h.drain()
    with pytest.raises(ThreadExistsError, match="already exists"):
        offer(h)
    assert h.graph.handoffs.get("h1") is None and h.graph.handoffs.open_by_task == {}
    unchanged(h)


def test_a_unit_test_can_give_a_handler_a_handoff_context():
    from omoi_ray.testing import make_context

    ctx = make_context("t", attempt=2, handoff={"offer_id": "h1", "from_agent": "a1", "reason": "r", "context": {"k": 1}})
    assert ctx.handoff.offer_id == "h1" and ctx.handoff.context == {"k": 1} and ctx.handoff.thread_id is None
    assert make_context("t").handoff is None
