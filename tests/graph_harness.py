"""A TaskGraph with a fake clock and helpers, shared by the core tests."""

from __future__ import annotations

import random
from typing import Any

from omoi_ray.core.claims import Report
from omoi_ray.core.model import AttemptOutcome, NewTask, Priority, RetryPolicy
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.testing import FakeClock


def spec(
    tid: str,
    *deps: str,
    requires: tuple[str, ...] = (),
    priority: Priority = Priority.MEDIUM,
    max_retries: int = 3,
    timeout: float | None = None,
    key: str | None = None,
    fingerprint: str | None = None,
) -> NewTask:
    return NewTask(
        id=tid,
        type="t",
        requires=frozenset(requires),
        priority=priority,
        depends_on=tuple(deps),
        retry=RetryPolicy(max_retries=max_retries, backoff_base=1.0, backoff_cap=60.0),
        timeout=timeout,
        idempotency_key=key,
        fingerprint=fingerprint or f"fp-{tid}",
    )


class Harness:
    def __init__(self, lease_ttl: float = 30.0) -> None:
        self.clock = FakeClock(1000.0)
        self.graph = TaskGraph(lease_ttl=lease_ttl, rng=random.Random(7))
        self.events: list[Any] = []

    @property
    def now(self) -> float:
        return self.clock.now

    @now.setter
    def now(self, value: float) -> None:
        self.clock.advance(value - self.clock.now)

    def tick(self, seconds: float) -> None:
        self.graph.advance(self.clock.advance(seconds))

    def submit(self, *specs: NewTask, **kw: Any) -> list[str]:
        return self.graph.submit(list(specs), self.now, **kw)

    def agent(self, name: str = "a1", caps: tuple[str, ...] = (), capacity: int = 4, inc: str = "i1"):
        return self.graph.register_agent(name, inc, frozenset(caps), capacity, self.now)

    def claim(self, agent, n: int = 100, request_id: str | None = None) -> list[str]:
        return [t.id for t in self.graph.claim(agent, n, self.now, request_id)]

    def start(self, agent, tid: str, attempt: int = 1):
        return self.graph.apply_report(agent, Report("started", tid, attempt), self.now)

    def finish(self, agent, tid: str, attempt: int = 1, outcome=AttemptOutcome.COMPLETED, result=None, error=None):
        return self.graph.apply_report(agent, Report("finished", tid, attempt, outcome, result, error), self.now)

    def run(self, agent, tid: str, attempt: int = 1, **kw: Any):
        self.start(agent, tid, attempt)
        return self.finish(agent, tid, attempt, **kw)

    def drain(self):
        changes = self.graph.take_changes()
        self.events.extend(changes.events)
        return changes

    def status(self, tid: str) -> str | None:
        task = self.graph.tasks.get(tid)
        return task.status.value if task else None

    def event_types(self, tid: str) -> list[str]:
        self.drain()
        return [e.type for e in self.events if e.entity_id == tid]
