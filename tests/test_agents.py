"""The agent registry (``omoi_ray.core.agents``): incarnations, leases, loss, capabilities."""

from __future__ import annotations

from omoi_ray.core.model import AttemptOutcome
from omoi_ray.core.tasks import TaskStatus
from tests.graph_harness import Harness, spec

OK = AttemptOutcome.COMPLETED


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


def test_a_new_incarnation_replaces_the_old_one():
    h = Harness()
    h.submit(spec("a"))
    old = h.agent("x", inc="old")
    h.claim(old)
    new = h.agent("x", inc="new")
    assert h.status("a") == "ready"
    assert h.claim(new) == ["a"]
    assert h.graph.live_agent("x", "old") is None


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
    assert types == ["agent.health.changed", "agent.lost", "agent.capabilities.changed", "agent.registered"]
