"""The agent health table (``omoi_ray/core/health.py``) driven through the registry by
Hypothesis, against a simple model: health follows from the time of the agent's last call
(stale after ``stale_after`` seconds, lost after the lease) until something final happens (Ray
reports it dead, it stops, a new incarnation replaces it), and every change is one
``agent.health.changed`` event whose ``from`` is the previous state."""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from omoi_ray.core.health import AgentHealth
from omoi_ray.core.scheduler import TaskGraph
from tests.graph_harness import spec

LEASE, STALE = 30.0, 20.0


class HealthMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.now = 1000.0
        self.graph = TaskGraph(lease_ttl=LEASE, stale_after=STALE, rng=random.Random(1))
        self.incarnation = 0
        self.model: dict[str, object] = {}
        self.seen: list[tuple[str, str]] = []
        self.graph.submit([spec(f"t{n}") for n in range(50)], self.now)
        self._register()

    def _register(self) -> None:
        self.incarnation += 1
        self.agent = self.graph.register_agent("a", f"i{self.incarnation}", frozenset(), 2, self.now)
        self.model = {"last": self.now, "final": None}
        self._drain()

    def _drain(self) -> None:
        for event in self.graph.take_changes().events:
            if event.type == "agent.health.changed" and event.payload["incarnation"] == self.agent.incarnation:
                self.seen.append((event.payload["from"], event.payload["to"]))

    def _expected(self) -> AgentHealth:
        if self.model["final"] is not None:
            return self.model["final"]  # type: ignore[return-value]
        silent = self.now - self.model["last"]  # type: ignore[operator]
        if silent >= LEASE:
            return AgentHealth.LOST
        if silent >= STALE:
            return AgentHealth.STALE
        return AgentHealth.HEALTHY

    def _live(self) -> bool:
        return self._expected() in (AgentHealth.HEALTHY, AgentHealth.STALE)

    @rule(seconds=st.floats(min_value=0.0, max_value=40.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        if self._live() and self._expected() is AgentHealth.LOST:
            self.model["final"] = AgentHealth.LOST
        self.graph.advance(self.now)
        self._drain()

    @rule()
    def a_call(self) -> None:
        # the scheduler asks the graph whether the caller is live before renewing (``exchange``)
        if self.graph.live_agent("a", self.agent.incarnation) is not None:
            self.graph.renew(self.agent, self.now)
            self.model["last"] = self.now
        self._drain()

    @rule(n=st.integers(min_value=1, max_value=2))
    def it_claims(self, n: int) -> None:
        got = self.graph.claim(self.agent, n, self.now)
        if self.agent.health is not AgentHealth.HEALTHY:
            assert got == []  # a stale (or gone) agent gets no new work
        self._drain()

    @precondition(lambda self: self._live())
    @rule()
    def ray_reports_it_dead(self) -> None:
        self.graph.advance(self.now)
        if self._live():
            assert self.graph.agent_lost("a", self.agent.incarnation, self.now, "died")
            self.model["final"] = AgentHealth.DEAD
        self._drain()

    @precondition(lambda self: self._live())
    @rule()
    def it_stops(self) -> None:
        self.graph.advance(self.now)
        if self._live():
            assert self.graph.agent_stopped("a", self.agent.incarnation, self.now)
            self.model["final"] = AgentHealth.STOPPED
        self._drain()

    @rule()
    def a_new_incarnation(self) -> None:
        self.graph.advance(self.now)
        old = self.agent
        was_live = self._live()
        self._drain()
        before = len(self.seen)
        self._register()
        if was_live:
            assert old.health is AgentHealth.LOST
            assert len(self.seen) == before  # the old one's move was recorded under its own incarnation
        self.seen = []

    @invariant()
    def health_is_the_model(self) -> None:
        self.graph.advance(self.now)
        self._drain()
        assert self.agent.health is self._expected()

    @invariant()
    def every_change_is_one_event_from_the_previous_state(self) -> None:
        state = "healthy"
        for old, new in self.seen:
            assert old == state and new != old
            state = new
        assert state == self.agent.health.value


HealthMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestHealthTable = HealthMachine.TestCase
