"""Random operation sequences against the scheduler core, crashes included.

Invariants checked after every step:
- live tasks are never terminal; a task is in the ready index exactly when it is ready;
- a pending task's counter equals the number of its dependencies still live;
- an agent never holds more attempts than its capacity; every active task's attempt occupies a
  slot of the live agent that holds it;
- no task completes twice, and no task has events after its final one;
- a graph rebuilt from what was committed holds the same live tasks in the same statuses.
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from omoi_ray.core.claims import Report
from omoi_ray.core.model import AgentStatus, AttemptOutcome, Priority
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.core.tasks import ACTIVE, TERMINAL, TaskStatus
from omoi_ray.errors import InvalidSubmissionError
from omoi_ray.testing import MemoryStore
from tests.graph_harness import spec

AGENTS = {"a1": ("x",), "a2": ()}
#: the task types each agent handles (None: a default handler, every type)
HANDLES = {"a1": None, "a2": frozenset({"t"})}
OUTCOMES = [AttemptOutcome.COMPLETED, AttemptOutcome.FAILED, AttemptOutcome.PERMANENT_FAILURE, AttemptOutcome.TIMED_OUT]


class SchedulerCore(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.store = MemoryStore()
        self.graph = TaskGraph(lease_ttl=20.0, rng=random.Random(0))
        self.counter = 0
        self.incarnations: dict[str, int] = {}
        self.completed: Counter[str] = Counter()
        self.final_event_at: dict[str, int] = {}
        self.event_count = 0

    # -- helpers -------------------------------------------------------------------------

    def commit(self) -> None:
        changes = self.graph.take_changes()
        for event in changes.events:
            self.event_count += 1
            if event.entity_type != "task":
                continue
            assert event.entity_id not in self.final_event_at, f"event {event.type} after final for {event.entity_id}"
            if event.type == "task.completed":
                self.completed[event.entity_id] += 1
        for tid in changes.finished:
            self.final_event_at[tid] = self.event_count
        self.store.apply(changes)

    def live_agent(self, name: str):
        inc = self.incarnations.get(name)
        return None if inc is None else self.graph.live_agent(name, f"{name}-{inc}")

    # -- rules ---------------------------------------------------------------------------

    @rule(
        n=st.integers(1, 4),
        dep_choices=st.lists(st.integers(0, 50), max_size=6),
        needs_x=st.booleans(),
        prio=st.sampled_from(list(Priority)),
        retries=st.integers(0, 2),
        timeout=st.sampled_from([None, 3.0]),
        lock=st.sampled_from([None, "exclusive", "shared"]),
    )
    def submit(self, n, dep_choices, needs_x, prio, retries, timeout, lock):
        known = list(self.store.tasks) + list(self.graph.tasks)
        new = []
        for _ in range(n):
            self.counter += 1
            tid = f"t{self.counter}"
            pool = known + [t.id for t in new]
            deps = sorted({pool[i % len(pool)] for i in dep_choices[:2]}) if pool and dep_choices else []
            task = spec(tid, *deps, requires=("x",) if needs_x else (), priority=prio, max_retries=retries, timeout=timeout)
            task.type = ("t", "u")[self.counter % 2]  # a2 handles only "t"
            if lock is not None:
                task.locks = (("file", "shared-file", lock),)
            new.append(task)
        missing = {d for s in new for d in s.depends_on if d not in self.graph.tasks}
        stored, _ = self.store.lookup(missing)
        try:
            self.graph.submit(new, self.now, stored)
        except InvalidSubmissionError:
            raise AssertionError("a generated submission is always valid")
        self.commit()

    @initialize(c1=st.integers(1, 3), c2=st.integers(1, 3))
    def register_both(self, c1, c2):
        self.register(name="a1", capacity=c1)
        self.register(name="a2", capacity=c2)

    @rule(name=st.sampled_from(sorted(AGENTS)), capacity=st.integers(1, 3))
    def register(self, name, capacity):
        self.incarnations[name] = self.incarnations.get(name, 0) + 1
        self.graph.register_agent(name, f"{name}-{self.incarnations[name]}", frozenset(AGENTS[name]), capacity, self.now,
                                  handles=HANDLES[name])
        self.commit()

    @rule()
    def claim(self):
        for name in AGENTS:
            agent = self.live_agent(name)
            if agent is not None:
                before = agent.free_slots
                claimed = self.graph.claim(agent, 10, self.now)
                assert len(claimed) <= before
                for task in claimed:
                    assert task.requires <= agent.capabilities
                    assert agent.can_run(task.requires, task.type)
        self.commit()

    @rule(name=st.sampled_from(sorted(AGENTS)), pick=st.integers(0, 10), outcome=st.sampled_from(OUTCOMES), start_only=st.booleans())
    def report(self, name, pick, outcome, start_only):
        agent = self.live_agent(name)
        if agent is None or not agent.busy:
            return
        task_id, attempt = sorted(agent.busy)[pick % len(agent.busy)]
        kind = "started" if start_only else "finished"
        current = self.graph.tasks.get(task_id)
        fenced_out = (
            current is None
            or current.attempt != attempt
            or current.agent_id != name
            or current.status not in ACTIVE
        )
        rejection = self.graph.apply_report(agent, Report(kind, task_id, attempt, outcome, {"v": 1}, "err"), self.now)
        if fenced_out:
            assert rejection is not None, "a report from a stale attempt must be rejected"
        else:
            assert rejection is None
        self.commit()

    @rule(pick=st.integers(0, 100))
    def cancel(self, pick):
        if self.graph.tasks:
            tid = sorted(self.graph.tasks)[pick % len(self.graph.tasks)]
            self.graph.cancel(tid, self.now)
            self.commit()

    @rule(name=st.sampled_from(sorted(AGENTS)))
    def lose_agent(self, name):
        if name in self.incarnations:
            self.graph.agent_lost(name, f"{name}-{self.incarnations[name]}", self.now, "killed")
            self.commit()

    @rule(name=st.sampled_from(sorted(AGENTS)), drop=st.integers(0, 3))
    def heartbeat(self, name, drop):
        agent = self.live_agent(name)
        if agent is not None:
            held = sorted(agent.busy)[drop:]
            self.graph.heartbeat(agent, held, self.now)
            self.commit()

    @rule(seconds=st.sampled_from([0.5, 2.0, 5.0]))
    def tick(self, seconds):
        for name in AGENTS:
            agent = self.live_agent(name)
            if agent is not None:
                self.graph.renew(agent, self.now)
        self.now += seconds
        self.graph.advance(self.now)
        self.commit()

    @rule()
    def long_pause(self):
        """Nobody calls for longer than a lease: every agent is lost."""
        self.now += 30.0
        self.graph.advance(self.now)
        self.commit()

    @rule()
    def crash_and_restart(self):
        before = {tid: t.status for tid, t in self.graph.tasks.items()}
        self.graph = TaskGraph(lease_ttl=20.0, rng=random.Random(1))
        snap = self.store.load()
        self.graph.restore(snap.tasks, snap.dependencies, snap.agents, snap.open_attempts, snap.next_seq, self.now)
        after = {tid: t.status for tid, t in self.graph.tasks.items()}
        settled = self.graph.take_changes()
        # Only attempts of agents that are gone may be settled on restart.
        assert {tid for tid in before if tid not in after or before[tid] != after[tid]} <= {
            t.id for t in settled.updated + settled.created
        }
        self.store.apply(settled)
        for event in settled.events:
            if event.type == "task.completed":
                self.completed[event.entity_id] += 1
        for tid in settled.finished:
            self.final_event_at[tid] = self.event_count

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def statuses_and_indexes_agree(self):
        g = self.graph
        live_deps: Counter[str] = Counter()
        for dep_id, dependents in g.dependents.items():
            assert dep_id in g.tasks, "edges are kept only for live tasks"
            for d in dependents:
                live_deps[d] += 1
        for tid, task in g.tasks.items():
            assert task.status not in TERMINAL
            assert (tid in g.ready) == (task.status is TaskStatus.READY)
            if task.status is TaskStatus.PENDING:
                assert task.waiting_on == live_deps[tid] > 0
            if task.status in ACTIVE:
                agent = g.agents[task.agent_id]
                assert agent.status is AgentStatus.ALIVE and agent.incarnation == task.agent_incarnation
                assert (tid, task.attempt) in agent.busy

    @invariant()
    def declared_locks_never_conflict_among_running_attempts(self):
        usage: dict = {}
        for attempt in self.graph.open_attempts.values():
            for rtype, rid, mode in attempt.locks:
                usage.setdefault((rtype, rid), [0, 0])[0 if mode == "exclusive" else 1] += 1
        assert usage == self.graph.lock_usage
        for exclusive, shared in usage.values():
            assert exclusive <= 1 and not (exclusive and shared)

    @invariant()
    def capacity_is_never_exceeded(self):
        for agent in self.graph.agents.values():
            assert len(agent.busy) <= agent.capacity

    @invariant()
    def nothing_completes_twice(self):
        assert all(n == 1 for n in self.completed.values())


SchedulerCore.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestSchedulerCore = SchedulerCore.TestCase
