"""An in-memory store with the same contract as ``Store`` for ``apply``, ``load`` and ``lookup``.

A test double: it lets the core's crash-and-rebuild path be exercised without a database. It
keeps copies, so later changes to the graph's objects never leak into what was "committed".
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from omoi_ray.core.coordination import pending_loop_checks
from omoi_ray.core.model import Agent, AgentStatus, Attempt, Event, Task
from omoi_ray.core.submission import StoredTask
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.core.tasks import TERMINAL, TaskStatus
from omoi_ray.store.store import Snapshot


class MemoryStore:
    """The scheduler's store in memory, for tests of the core: ``apply`` a ``TaskChanges``,
    ``load`` a ``Snapshot``, ``lookup`` stored tasks, as ``Store`` does. ``commits`` counts the
    change sets applied."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.dependencies: set[tuple[str, str]] = set()
        self.attempts: dict[tuple[str, int], Attempt] = {}
        self.agents: dict[str, Agent] = {}
        self.events: dict[str, Event] = {}
        self.commits = 0

    def apply(self, changes: TaskChanges) -> None:
        """Keep copies of a change set's rows: created tasks (a task already kept stays as it
        is), dependency edges, updated tasks, attempts and agents (latest copy wins), and events
        (by id, first kept); then count one commit."""
        for task in changes.created:
            self.tasks.setdefault(task.id, copy.copy(task))
        self.dependencies.update(changes.dependencies)
        for task in changes.updated:
            self.tasks[task.id] = copy.copy(task)
        for attempt in changes.attempts:
            self.attempts[(attempt.task_id, attempt.attempt)] = copy.copy(attempt)
        for agent in changes.agents:
            self.agents[agent.id] = copy.copy(agent)
        for event in changes.events:
            self.events.setdefault(event.id, event)
        self.commits += 1

    def load(self) -> Snapshot:
        """What the scheduler rebuilds from, as ``Store.load`` reads it.

        Returns:
            A ``Snapshot`` of copies: tasks not in a terminal status, their dependency edges
            ``(task id, dependency id, dependency status)``, alive agents, attempts not yet
            released, ``next_seq`` (one past the highest task ``seq``, 1 when empty), and the
            results of pending loops' completed current checks (``node_results``).
        """
        live = {tid: copy.copy(t) for tid, t in self.tasks.items() if t.status not in TERMINAL}
        return Snapshot(
            tasks=list(live.values()),
            dependencies=[
                (a, b, self.tasks[b].status) for a, b in sorted(self.dependencies) if a in live
            ],
            agents=[copy.copy(a) for a in self.agents.values() if a.status is AgentStatus.ALIVE],
            open_attempts=[copy.copy(a) for a in self.attempts.values() if a.released_at is None],
            next_seq=max((t.seq for t in self.tasks.values()), default=0) + 1,
            node_results={
                check: self.tasks[check].result
                for check in pending_loop_checks(live.values())
                if check in self.tasks and self.tasks[check].status is TaskStatus.COMPLETED
            },
        )

    def lookup(
        self, ids: Iterable[str], keys: Iterable[str] = ()
    ) -> tuple[dict[str, StoredTask], dict[str, StoredTask]]:
        """Stored tasks by id and by idempotency key, as ``Store.lookup``.

        Args:
            ids: task ids to find (unknown ones are left out).
            keys: idempotency keys to find.

        Returns:
            ``({task id: StoredTask}, {idempotency key: StoredTask})``.
        """
        def ref(t: Task) -> StoredTask:
            return StoredTask(t.id, t.status, t.fingerprint, t.idempotency_key, copy.deepcopy(t.result),
                              t.upstream_cancelled)

        by_id = {tid: ref(self.tasks[tid]) for tid in ids if tid in self.tasks}
        wanted = set(keys)
        by_key = {t.idempotency_key: ref(t) for t in self.tasks.values() if t.idempotency_key in wanted}
        return by_id, by_key  # type: ignore[return-value]
