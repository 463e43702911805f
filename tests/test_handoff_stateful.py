"""Hand-off offers against a simple model, over random offers, answers, deadlines and finishes.

The model knows only the documented rules: one open offer per task, targets answer, the first
valid acceptance moves the task to a new attempt of the acceptor (not charged), every target
declining or the deadline passing closes the offer and nothing moves, the offering attempt ending
first withdraws it, an acceptor needs a free slot. After every step the core and the model agree
on each offer's status, each task's holder and attempt, and the uncharged count.
"""

from __future__ import annotations

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from omoi_ray.core.claims import Report
from omoi_ray.core.handoff import HandoffStatus
from omoi_ray.core.model import AttemptOutcome
from omoi_ray.errors import (
    AcceptorUnavailableError,
    HandoffClosedError,
    HandoffPendingError,
    InvalidHandoffError,
    NotHolderError,
    NotOfferedError,
)
from tests.graph_harness import Harness, spec

H = HandoffStatus
TASKS = ["t0", "t1", "t2"]
AGENTS = ["a", "b", "c"]
CAPACITY = {"a": 8, "b": 1, "c": 8}


class HandoffMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(lease_ttl=1e9)  # no lease runs out: agents stay, the model ignores heartbeats
        self.agents = {n: self.h.agent(n, capacity=CAPACITY[n], inc=f"i-{n}") for n in AGENTS}
        self.h.submit(*[spec(t, max_retries=0) for t in TASKS])
        assert len(self.h.claim(self.agents["a"])) == len(TASKS)
        # model
        self.holder = dict.fromkeys(TASKS, "a")
        self.attempt = dict.fromkeys(TASKS, 1)
        self.done: set[str] = set()
        self.handed = dict.fromkeys(TASKS, 0)
        self.busy = {n: set() for n in AGENTS}  # attempts whose handler has not reported its end
        self.busy["a"] = {(t, 1) for t in TASKS}
        self.offers: dict[str, dict] = {}
        self.count = 0

    @property
    def now(self) -> float:
        return self.h.now

    def _open_offer(self, tid: str) -> str | None:
        return next((oid for oid, o in self.offers.items() if o["task"] == tid and o["status"] is H.OPEN), None)

    @rule(tid=st.sampled_from(TASKS), to=st.sets(st.sampled_from(["b", "c"]), min_size=1),
          deadline=st.sampled_from([1.0, 5.0, 30.0]))
    def offer(self, tid, to, deadline):
        self.count += 1
        oid = f"o{self.count}"
        targets = tuple(sorted(to - {self.holder[tid]}))
        try:
            self.h.graph.handoffs.offer(oid, tid, self.now, deadline_s=deadline, targets=targets or (self.holder[tid],))
        except NotHolderError:
            assert tid in self.done
            return
        except HandoffPendingError:
            assert self._open_offer(tid) is not None
            return
        except InvalidHandoffError as exc:  # the holder itself as the only target
            assert not targets, exc
            return
        assert tid not in self.done and self._open_offer(tid) is None and targets
        self.offers[oid] = {"task": tid, "targets": set(targets), "declines": set(), "status": H.OPEN,
                            "deadline": self.now + deadline, "attempt": self.attempt[tid], "winner": None}

    def _expected_refusal(self, o: dict, agent: str):
        if o["status"] is not H.OPEN:
            return HandoffClosedError
        if agent not in o["targets"]:
            return NotOfferedError
        if self.now >= o["deadline"] or agent in o["declines"]:
            return HandoffClosedError
        return None

    @precondition(lambda self: self.offers)
    @rule(data=st.data())
    def accept(self, data):
        oid = data.draw(st.sampled_from(sorted(self.offers)[-3:]))  # mostly recent offers
        o = self.offers[oid]
        agent = data.draw(st.sampled_from([*sorted(o["targets"]), *AGENTS]))  # mostly a target
        expected = self._expected_refusal(o, agent)
        if expected is None and len(self.busy[agent]) >= CAPACITY[agent]:
            expected = AcceptorUnavailableError
        self.h.graph.take_changes()
        try:
            self.h.graph.handoffs.accept(oid, agent, self.now)
        except (HandoffClosedError, NotOfferedError, AcceptorUnavailableError) as exc:
            assert type(exc) is expected, (exc, expected)
            if o["status"] is H.ACCEPTED:
                assert f"agent '{o['winner']}'" in str(exc)
            assert not self.h.graph.take_changes()
            return
        assert expected is None
        event("an offer was accepted")
        tid = o["task"]
        o["status"], o["winner"] = H.ACCEPTED, agent
        self.holder[tid] = agent
        self.attempt[tid] += 1
        self.handed[tid] += 1
        self.busy[agent].add((tid, self.attempt[tid]))

    @precondition(lambda self: self.offers)
    @rule(data=st.data())
    def decline(self, data):
        oid = data.draw(st.sampled_from(sorted(self.offers)[-3:]))
        o = self.offers[oid]
        agent = data.draw(st.sampled_from([*sorted(o["targets"]), *AGENTS]))
        expected = self._expected_refusal(o, agent)
        try:
            self.h.graph.handoffs.decline(oid, agent, "no", self.now)
        except (HandoffClosedError, NotOfferedError) as exc:
            assert type(exc) is expected, (exc, expected)
            return
        assert expected is None
        o["declines"].add(agent)
        if o["declines"] >= o["targets"]:
            event("every target declined")
            o["status"] = H.DECLINED

    @rule(seconds=st.sampled_from([0.5, 2.0, 6.0]))
    def tick(self, seconds):
        self.h.tick(seconds)
        for o in self.offers.values():
            if o["status"] is H.OPEN and o["deadline"] <= self.now:
                o["status"] = H.EXPIRED

    @rule(tid=st.sampled_from(TASKS))
    def holder_finishes(self, tid):
        if tid in self.done:
            return
        agent, attempt = self.holder[tid], self.attempt[tid]
        report = Report("started", tid, attempt)
        assert self.h.graph.apply_report(self.agents[agent], report, self.now) is None
        report = Report("finished", tid, attempt, AttemptOutcome.COMPLETED, {"by": agent})
        assert self.h.graph.apply_report(self.agents[agent], report, self.now) is None
        self.done.add(tid)
        self.busy[agent].discard((tid, attempt))
        oid = self._open_offer(tid)
        if oid is not None:
            self.offers[oid]["status"] = H.WITHDRAWN

    @rule(agent=st.sampled_from(AGENTS))
    def stale_handler_ends(self, agent):
        stale = sorted(k for k in self.busy[agent] if k[0] in self.done or self.attempt[k[0]] != k[1])
        if not stale:
            return
        tid, attempt = stale[0]
        report = Report("finished", tid, attempt, AttemptOutcome.CANCELLED, None, "stopped")
        assert self.h.graph.apply_report(self.agents[agent], report, self.now) is not None  # stale: rejected
        self.busy[agent].discard((tid, attempt))

    @invariant()
    def agrees(self):
        graph = self.h.graph
        for oid, o in self.offers.items():
            offer = graph.handoffs.get(oid)
            assert offer is not None and offer.status is o["status"], (oid, offer, o)
            assert offer.accepted_by == o["winner"]
        for tid in TASKS:
            task = graph.tasks.get(tid)
            if tid in self.done:
                assert task is None
                continue
            assert task.agent_id == self.holder[tid] and task.attempt == self.attempt[tid]
            assert task.uncharged == self.handed[tid]
        assert set(graph.handoffs.open_by_task) == {o["task"] for o in self.offers.values() if o["status"] is H.OPEN}
        for name, agent in self.agents.items():
            assert set(agent.busy) == self.busy[name], name


TestHandoffMachine = HandoffMachine.TestCase
TestHandoffMachine.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
