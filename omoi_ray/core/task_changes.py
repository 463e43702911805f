"""The scheduler's change set: what the task graph changed since its owner last drained it.

Every part of the scheduler core (the live tasks and their DAG, submission, the agent registry,
claims, threads) records into one shared ``ChangeRecorder[TaskChanges]``; the owner drains it
(``TaskGraph.take_changes``), stores it in one transaction, and only then acts on it.

Rules:
- Tasks, attempts, agents, threads, hand-off offers and tickets keep their latest state per key (task
  id, ``(task id, attempt)``, agent id, thread id, offer id); messages, receipts, reads,
  dependencies, phase changes, artifacts, gate results, events, signals, finished ids, abandoned
  attempts and creating decisions are appended in
  the order they happened; ``new_attempts`` (which attempts are inserts) is a set.
- ``bool(changes)`` means there are rows to write; ``signals``, ``finished`` and ``abandoned``
  only name someone to tell once the rows are written (``NOTIFY``).
- A task created in a change set is not also listed as updated in it (``created`` carries its
  latest state: the objects are live).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, ClassVar

from omoi_ray.core.changes import APPEND, UNION, ChangeSet, latest, merge_rule
from omoi_ray.core.model import Agent, Attempt, CancelSignal, Event, Message, Receipt, Task, Thread

if TYPE_CHECKING:
    from omoi_ray.core.handoff import Handoff
    from omoi_ray.core.tickets import Artifact, GateResult, PhaseChange, Ticket

#: an attempt's key: ``(task id, attempt number)``
AttemptKey = tuple[str, int]
#: a read receipt being marked: ``(message id, recipient, read_at)``
Read = tuple[str, str, float]


@dataclass(slots=True)
class TaskChanges(ChangeSet):
    """Everything the scheduler core changed since the last ``take_changes``.

    Tasks and attempts are the live objects (agents are snapshots): whoever persists a change set
    must turn it into rows before the core changes again, or copy it.
    """

    NOTIFY: ClassVar[tuple[str, ...]] = ("signals", "finished", "abandoned")

    created: list[Task] = field(default_factory=list, metadata=merge_rule(latest(attrgetter("id"))))
    dependencies: list[tuple[str, str]] = field(default_factory=list, metadata=merge_rule(APPEND))
    updated: list[Task] = field(default_factory=list, metadata=merge_rule(latest(attrgetter("id"))))
    attempts: list[Attempt] = field(
        default_factory=list, metadata=merge_rule(latest(attrgetter("task_id", "attempt")))
    )
    new_attempts: set[AttemptKey] = field(default_factory=set, metadata=merge_rule(UNION))
    agents: list[Agent] = field(default_factory=list, metadata=merge_rule(latest(attrgetter("id"))))
    events: list[Event] = field(default_factory=list, metadata=merge_rule(APPEND))
    #: hand-off offers (``core.handoff``), latest state by offer id
    handoffs: list[Handoff] = field(default_factory=list, metadata=merge_rule(latest(attrgetter("id"))))
    #: running attempts the agents must be told to stop
    signals: list[CancelSignal] = field(default_factory=list, metadata=merge_rule(APPEND))
    #: ids of tasks that reached a final status and left memory
    finished: list[str] = field(default_factory=list, metadata=merge_rule(APPEND))
    #: attempts whose agent is gone while they ran: whatever they held must be let go
    abandoned: list[AttemptKey] = field(default_factory=list, metadata=merge_rule(APPEND))
    #: threads opened or closed (``core.threads``), latest state per id
    threads: list[Thread] = field(default_factory=list, metadata=merge_rule(latest(attrgetter("id"))))
    #: messages posted, in ``seq`` order
    messages: list[Message] = field(default_factory=list, metadata=merge_rule(APPEND))
    #: one receipt per recipient of each posted message
    receipts: list[Receipt] = field(default_factory=list, metadata=merge_rule(APPEND))
    #: receipts marked read (the store keeps the first read time)
    reads: list[Read] = field(default_factory=list, metadata=merge_rule(APPEND))
    #: tickets created or changed (``core.tickets``), latest state per id
    tickets: list[Ticket] = field(default_factory=list, metadata=merge_rule(latest(attrgetter("id"))))
    #: phase history rows, in order
    phase_changes: list[PhaseChange] = field(default_factory=list, metadata=merge_rule(APPEND))
    #: artifacts added to tickets' phases, in order
    artifacts: list[Artifact] = field(default_factory=list, metadata=merge_rule(APPEND))
    #: gate evaluations, in order
    gate_results: list[GateResult] = field(default_factory=list, metadata=merge_rule(APPEND))
    #: the ids each creating decision (a submission, a split's children, a loop's round) created
    #: together, in order: no rows, the storage backstop's unit of what to drop
    decisions: list[tuple[str, ...]] = field(default_factory=list, metadata=merge_rule(APPEND))

    def without(self, task_ids: Collection[str] = (), ticket_ids: Collection[str] = ()) -> TaskChanges:
        """A copy without what concerns ``task_ids`` (their task rows, dependency edges from or to
        them, attempts, events, and split events naming them as children) and ``ticket_ids``
        (ticket rows, phase history, artifacts, gate results and ticket events): the storage
        backstop's cut of what cannot be stored. Signals stay: an agent must still stop."""
        tasks, tickets = set(task_ids), set(ticket_ids)

        def kept_event(e: Event) -> bool:
            if e.task_id in tasks or (e.entity_type == "ticket" and e.entity_id in tickets):
                return False
            children = e.payload.get("children") if isinstance(e.payload, dict) else None
            return not (isinstance(children, list) and tasks.intersection(children))

        return TaskChanges(
            created=[t for t in self.created if t.id not in tasks],
            dependencies=[d for d in self.dependencies if d[0] not in tasks and d[1] not in tasks],
            updated=[t for t in self.updated if t.id not in tasks],
            attempts=[a for a in self.attempts if a.task_id not in tasks],
            new_attempts={k for k in self.new_attempts if k[0] not in tasks},
            agents=self.agents,
            events=[e for e in self.events if kept_event(e)],
            handoffs=self.handoffs,
            signals=self.signals,
            finished=[f for f in self.finished if f not in tasks],
            abandoned=[k for k in self.abandoned if k[0] not in tasks],
            threads=self.threads,
            messages=self.messages,
            receipts=self.receipts,
            reads=self.reads,
            tickets=[k for k in self.tickets if k.id not in tickets],
            phase_changes=[c for c in self.phase_changes if c.ticket_id not in tickets],
            artifacts=[a for a in self.artifacts if a.ticket_id not in tickets],
            gate_results=[g for g in self.gate_results if g.ticket_id not in tickets],
            decisions=[kept for d in self.decisions if (kept := tuple(t for t in d if t not in tasks))],
        )
