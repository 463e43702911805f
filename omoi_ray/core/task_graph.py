"""The scheduler's state and every decision it makes, without I/O.

``TaskGraph`` holds each live (non-terminal) task, the dependency counters between them, the
ready index, the agents with the attempts that occupy their slots, and the timers. Its methods
take the caller's clock reading and return decisions; every change they make is also recorded in
a change log that the owner drains (``take_changes``), persists in one transaction, and only
then acts on. Nothing here reads a clock, touches a database, or talks to Ray.

Rules:
- Status moves go through ``_move`` and therefore through the table in ``task_state``; each move
  appends its event to the change log.
- A task that reaches a terminal status leaves memory. If it completed, each dependent's counter
  drops and dependents at zero become ready. If it failed for good (failed, timed out, cancelled,
  upstream failed), every dependent, direct or not, becomes ``upstream_failed`` with a reason
  naming the root task.
- Attempts are fenced: a start, result or heartbeat counts only if it names the task's current
  attempt, from the agent incarnation holding it, while the task is claimed or running.
  Anything else is stale and is answered with a rejection, never applied.
- An agent's slots are the attempts it has been given whose handlers have not yet ended. A slot
  is freed when the agent reports the handler ended, or when the agent is lost, never when the
  scheduler merely gives up on an attempt (a timed-out handler still occupies its thread).
- What an attempt's outcome means for its task is data (``OUTCOME_RULES``): errors and timeouts
  wait out the backoff in ``retry_wait``; attempts lost with their agent go straight back to
  ``ready``. Every attempt counts towards ``max_retries`` except those the rules mark uncharged
  (``interrupted``: the agent was stopped on purpose, or its process was replaced to free a
  slot a zombie handler held).
- An agent that reports a zombie (a handler that ignored its stop past the grace period) gets
  no more work: it is draining, and will be replaced (``agent_replaced``).
- Every attempt that runs past its timeout writes ``task.timed_out``, whether or not the task is
  retried.
- Tasks that declare locks are not handed out while an attempt that still occupies a slot
  declares a conflicting lock (exclusive against anything): they keep their place and wait. This
  only spares agents waits the scheduler can foresee; the lock manager is what guarantees safety.
- A change the owner could not store fails the tasks it concerns (``fail_unstorable``): from any
  live status to ``failed``, reason ``could not be stored: ...``, with what a store may refuse
  cleared from them; dependents become ``upstream_failed`` as for any failure.
- A task's ``reason`` says why it is in its current status where its error does not: why it was
  requeued (while ``ready``), why it ended (gave up, cancelled, failed upstream, not storable).
  Claiming a new attempt clears it, so a completed task, or one that failed for good on a later
  attempt's error, never shows the reason of an earlier attempt.
- An agent's lease covers every claim it holds. Any call from the agent renews it; when it runs
  out, or Ray reports the agent dead, the agent is lost and its attempts are requeued.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from omoi_ray.core.dag import validate_submission
from omoi_ray.core.model import (
    Agent,
    AgentStatus,
    Attempt,
    AttemptOutcome,
    CancelSignal,
    Event,
    NewTask,
    Task,
)
from omoi_ray.core.ready import ReadyIndex
from omoi_ray.core.storable import MAX_ERROR_CHARS, MAX_TIMESTAMP_S, check_json, clean_text, unstorable_char
from omoi_ray.core.task_fields import task_from_new
from omoi_ray.core.tasks import (
    ACTIVE,
    CREATED_EVENT,
    FAILED_EVENT,
    FAILED_FOR_GOOD,
    TERMINAL,
    TIMED_OUT_EVENT,
    TaskStatus,
    event_for,
)
from omoi_ray.core.timers import Timers
from omoi_ray.errors import IdempotencyConflictError, TaskExistsError

S = TaskStatus
AttemptKey = tuple[str, int]

#: the reason (and error) of a task failed because a change of it could not be stored
UNSTORABLE_REASON = "could not be stored: {}"
MAX_SET_ASIDE = 256  # ready tasks a claim may skip for lock conflicts before it stops looking


class OutcomeRule(NamedTuple):
    """What an unsuccessful attempt's outcome means for its task."""

    retryable: bool  # another attempt may follow (if retries are left)
    charged: bool  # the attempt counts towards ``max_retries``
    backoff: bool  # the next attempt waits out the backoff in ``retry_wait`` (else: ``ready`` now)


#: outcome -> rule, for every outcome that ends an attempt without completing its task
OUTCOME_RULES: dict[AttemptOutcome, OutcomeRule] = {
    AttemptOutcome.FAILED: OutcomeRule(retryable=True, charged=True, backoff=True),
    AttemptOutcome.TIMED_OUT: OutcomeRule(retryable=True, charged=True, backoff=True),
    AttemptOutcome.LOST: OutcomeRule(retryable=True, charged=True, backoff=False),
    AttemptOutcome.INTERRUPTED: OutcomeRule(retryable=True, charged=False, backoff=False),
    AttemptOutcome.PERMANENT_FAILURE: OutcomeRule(retryable=False, charged=True, backoff=False),
    AttemptOutcome.CANCELLED: OutcomeRule(retryable=False, charged=True, backoff=False),
}


@dataclass(frozen=True, slots=True)
class StoredTask:
    """What the owner found in storage about a task that is not in memory (it is terminal)."""

    id: str
    status: TaskStatus
    fingerprint: str
    idempotency_key: str | None = None


@dataclass(slots=True)
class ChangeSet:
    """Everything changed since the last ``take_changes`` (live task and attempt objects)."""

    created: list[Task] = field(default_factory=list)
    dependencies: list[tuple[str, str]] = field(default_factory=list)
    updated: list[Task] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    new_attempts: set[AttemptKey] = field(default_factory=set)
    agents: list[Agent] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    signals: list[CancelSignal] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    #: attempts whose agent is gone while they ran: whatever they held must be let go
    abandoned: list[AttemptKey] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.created or self.updated or self.attempts or self.agents or self.events)

    def worth_flushing(self) -> bool:
        """Anything to write, or anyone to tell once it is written."""
        return bool(self) or bool(self.signals or self.finished or self.abandoned)

    @staticmethod
    def merge(batches: list[ChangeSet]) -> ChangeSet:
        """One change set equivalent to applying ``batches`` in order."""
        if len(batches) == 1:
            return batches[0]
        out = ChangeSet()
        updated: dict[str, Task] = {}
        attempts: dict[AttemptKey, Attempt] = {}
        agents: dict[str, Agent] = {}
        for b in batches:
            out.created.extend(b.created)
            out.dependencies.extend(b.dependencies)
            out.events.extend(b.events)
            out.signals.extend(b.signals)
            out.finished.extend(b.finished)
            out.abandoned.extend(b.abandoned)
            out.new_attempts |= b.new_attempts
            for task in b.updated:
                updated[task.id] = task
            for attempt in b.attempts:
                attempts[(attempt.task_id, attempt.attempt)] = attempt
            for agent in b.agents:
                agents[agent.id] = agent
        out.updated = list(updated.values())
        out.attempts = list(attempts.values())
        out.agents = list(agents.values())
        return out


class Report(NamedTuple):
    """What an agent says about one attempt (a tuple: it crosses Ray on every call).

    ``kind`` is ``"started"``, ``"finished"`` or ``"zombie"`` (the handler ignored its stop past
    the grace period: its slot stays held until the agent's process is replaced); a finished
    report carries the outcome and either the result or the error text.
    """

    kind: str
    task_id: str
    attempt: int
    outcome: AttemptOutcome | None = None
    result: Any = None
    error: str | None = None


class Rejection(NamedTuple):
    task_id: str
    attempt: int
    reason: str


class TaskGraph:
    def __init__(self, *, lease_ttl: float = 30.0, rng: random.Random | None = None) -> None:
        self.lease_ttl = lease_ttl
        self.rng = rng or random.Random()
        self.tasks: dict[str, Task] = {}
        self.dependents: dict[str, list[str]] = {}
        self.by_key: dict[str, str] = {}
        self.ready = ReadyIndex()
        self.agents: dict[str, Agent] = {}
        self.open_attempts: dict[AttemptKey, Attempt] = {}
        #: resource -> [exclusive, shared] declared by attempts that occupy a slot
        self.lock_usage: dict[tuple[str, str], list[int]] = {}
        self.timers = Timers()
        self.next_seq = 1
        self._created: dict[str, Task] = {}
        self._dirty: dict[str, Task] = {}
        self._dirty_attempts: dict[AttemptKey, Attempt] = {}
        self._new_attempts: set[AttemptKey] = set()
        self._dirty_agents: dict[str, Agent] = {}
        self._deps: list[tuple[str, str]] = []
        self._events: list[Event] = []
        self._signals: list[CancelSignal] = []
        self._finished: list[str] = []
        self._abandoned: list[AttemptKey] = []
        self._settling: deque[Task] = deque()
        self._draining = False

    # ---------------------------------------------------------------- restoring from storage

    def restore(
        self,
        tasks: Iterable[Task],
        dependencies: Iterable[tuple[str, str, TaskStatus]],
        agents: Iterable[Agent],
        open_attempts: Iterable[Attempt],
        next_seq: int,
        now: float,
    ) -> None:
        """Rebuild memory from stored rows.

        ``tasks`` are the live tasks; ``dependencies`` are ``(task, dependency, dependency
        status)`` for every edge of a live task; ``agents`` are those stored as alive;
        ``open_attempts`` are attempts whose handlers were never reported ended, each with its
        task's declared locks. Agents get a
        fresh lease from ``now``: a restarted scheduler gives each a full lease to show up again.
        Whatever the stored rows leave unfinished (an attempt of an agent that is gone, a pending
        task whose dependencies are all done) is settled here, in the change log.
        """
        for task in tasks:
            task.waiting_on = 0
            self.tasks[task.id] = task
            if task.idempotency_key:
                self.by_key[task.idempotency_key] = task.id
        doomed: list[tuple[Task, str, TaskStatus]] = []
        for task_id, dep_id, dep_status in dependencies:
            task = self.tasks.get(task_id)
            if task is None:
                continue
            task.depends_on = (*task.depends_on, dep_id)
            if dep_id in self.tasks:
                task.waiting_on += 1
                self.dependents.setdefault(dep_id, []).append(task_id)
            elif dep_status in FAILED_FOR_GOOD:
                doomed.append((task, dep_id, dep_status))
        for agent in agents:
            agent.lease_expires_at = now + self.lease_ttl
            self.agents[agent.id] = agent
            self.timers.add(agent.lease_expires_at, "lease", (agent.id, agent.incarnation))
        for attempt in open_attempts:
            key = (attempt.task_id, attempt.attempt)
            self.open_attempts[key] = attempt
            # an open attempt holds its slot, and its task's declared locks, until it is released,
            # whatever its task's status (a cancelled task's handler may still be running)
            self._count_locks(attempt.locks, +1)
            agent = self.live_agent(attempt.agent_id, attempt.agent_incarnation)
            if agent is not None:
                agent.busy[key] = attempt.claimed_at
            else:
                self._abandoned.append(key)
                self._close_attempt(key, now)
        self.next_seq = max(self.next_seq, next_seq)
        for task in list(self.tasks.values()):
            if task.status is S.READY:
                self.ready.push(task.id, task.requires, task.priority, task.seq)
            elif task.status is S.RETRY_WAIT and task.not_before is not None:
                self.timers.add(task.not_before, "retry", (task.id, task.attempt))
            elif task.status is S.RUNNING and task.deadline is not None:
                self.timers.add(task.deadline, "timeout", (task.id, task.attempt))
        for task, dep_id, dep_status in doomed:
            if task.status is S.PENDING:
                self._doom(task, dep_id, f"upstream task '{dep_id}' {dep_status.value}", now)
        for task in list(self.tasks.values()):
            if task.status is S.PENDING and task.waiting_on == 0:
                self._make_ready(task, now)
            elif task.status in ACTIVE and self.live_agent(task.agent_id or "", task.agent_incarnation or "") is None:
                self._lose_attempt(task, now, "its agent was gone when the scheduler restarted")

    # ---------------------------------------------------------------- submission

    def submit(
        self,
        new: Sequence[NewTask],
        now: float,
        stored: Mapping[str, StoredTask] | None = None,
        stored_keys: Mapping[str, StoredTask] | None = None,
        request_id: str | None = None,
    ) -> list[str]:
        """Create the tasks of one submission atomically and return their ids in order.

        ``stored``/``stored_keys`` hold what storage knows about ids and idempotency keys that are
        not in memory. A task whose id or idempotency key already names a task with the same
        fingerprint is not created again: its existing id is returned. Raises a typed
        ``InvalidSubmissionError`` (and changes nothing) for conflicts and graph-rule breaches.
        """
        stored = dict(stored or {})
        known_keys = dict(stored_keys or {})  # grows with keys first seen in this submission
        submitted = {spec.id for spec in new}
        alias: dict[str, str] = {}
        fresh: list[NewTask] = []
        for spec in new:
            existing = self._existing(spec, stored, known_keys)
            if existing is None:
                fresh.append(spec)
                if spec.idempotency_key:
                    known_keys[spec.idempotency_key] = StoredTask(
                        spec.id, TaskStatus.PENDING, spec.fingerprint, spec.idempotency_key
                    )
            else:
                alias[spec.id] = existing.id
                if existing.id not in self.tasks and existing.id not in submitted:
                    stored[existing.id] = existing
        if alias:
            fresh = [
                dataclasses.replace(spec, depends_on=tuple(alias.get(d, d) for d in spec.depends_on))
                for spec in fresh
            ]

        validate_submission(fresh, lambda tid: tid in self.tasks or tid in stored or tid in alias.values())

        created: list[Task] = []
        doomed: list[tuple[Task, str, str]] = []
        for spec in fresh:
            task = task_from_new(spec, seq=self.next_seq, created_at=now, updated_at=now)
            self.next_seq += 1
            self.tasks[task.id] = task
            if task.idempotency_key:
                self.by_key[task.idempotency_key] = task.id
            self._created[task.id] = task
            self._emit(
                CREATED_EVENT,
                task,
                now,
                request_id=request_id,
                payload={
                    "type": task.type,
                    "priority": task.priority.name,
                    "requires": sorted(task.requires),
                    "depends_on": list(task.depends_on),
                },
            )
            created.append(task)

        for task in created:
            for dep in task.depends_on:
                self._deps.append((task.id, dep))
                if dep in self.tasks:
                    task.waiting_on += 1
                    self.dependents.setdefault(dep, []).append(task.id)
                else:
                    status = stored[dep].status
                    if status in FAILED_FOR_GOOD:
                        doomed.append((task, dep, f"upstream task '{dep}' {status.value}"))

        for task, dep_id, reason in doomed:
            if task.status is S.PENDING:
                self._doom(task, dep_id, reason, now)
        for task in created:
            if task.status is S.PENDING and task.waiting_on == 0:
                self._make_ready(task, now)
        return [alias.get(spec.id, spec.id) for spec in new]

    def _existing(
        self, spec: NewTask, stored: Mapping[str, StoredTask], stored_keys: Mapping[str, StoredTask]
    ) -> StoredTask | None:
        """The task this spec duplicates (by id or idempotency key), if any; raise if it
        conflicts with one."""
        found = self._known(spec.id, stored)
        if found is not None:
            if found.fingerprint != spec.fingerprint:
                raise TaskExistsError(
                    f"task '{spec.id}' already exists with a different definition; choose another id",
                    task_id=spec.id,
                )
            return found
        if spec.idempotency_key:
            key_id = self.by_key.get(spec.idempotency_key)
            found = self._known(key_id, stored) if key_id else stored_keys.get(spec.idempotency_key)
            if found is not None:
                if found.fingerprint != spec.fingerprint:
                    raise IdempotencyConflictError(
                        f"idempotency key '{spec.idempotency_key}' of task '{spec.id}' was already "
                        f"used by task '{found.id}' with a different definition",
                        task_id=spec.id,
                        idempotency_key=spec.idempotency_key,
                    )
                return found
        return None

    def _known(self, task_id: str, stored: Mapping[str, StoredTask]) -> StoredTask | None:
        live = self.tasks.get(task_id)
        if live is not None:
            return StoredTask(live.id, live.status, live.fingerprint, live.idempotency_key)
        return stored.get(task_id)

    # ---------------------------------------------------------------- agents

    def register_agent(
        self,
        agent_id: str,
        incarnation: str,
        capabilities: frozenset[str],
        capacity: int,
        now: float,
        info: dict[str, Any] | None = None,
    ) -> Agent:
        """Register (or refresh) an agent. A new incarnation of a known agent replaces the old
        one, whose attempts are lost with it."""
        current = self.agents.get(agent_id)
        if current is not None and current.incarnation == incarnation and current.status is AgentStatus.ALIVE:
            current.lease_expires_at = now + self.lease_ttl
            if current.capabilities != capabilities or current.capacity != capacity:
                self._capabilities_changed(current, capabilities, capacity, now)
                current.capabilities, current.capacity = capabilities, capacity
                self._dirty_agents[agent_id] = current
            return current
        if current is not None and current.status is AgentStatus.ALIVE:
            self._retire_agent(current, AgentStatus.LOST, now, "replaced by a new incarnation")
        if current is not None and (current.capabilities != capabilities or current.capacity != capacity):
            self._capabilities_changed(current, capabilities, capacity, now)
        agent = Agent(
            id=agent_id,
            incarnation=incarnation,
            capabilities=capabilities,
            capacity=capacity,
            registered_at=now,
            lease_expires_at=now + self.lease_ttl,
            info=dict(info or {}),
        )
        self.agents[agent_id] = agent
        self._dirty_agents[agent_id] = agent
        self.timers.add(agent.lease_expires_at, "lease", (agent_id, incarnation))
        self._events.append(
            Event(
                type="agent.registered",
                entity_type="agent",
                entity_id=agent_id,
                at=now,
                agent_id=agent_id,
                payload={
                    "incarnation": incarnation,
                    "capabilities": sorted(capabilities),
                    "capacity": capacity,
                    **agent.info,
                },
            )
        )
        return agent

    def _capabilities_changed(self, agent: Agent, capabilities: frozenset[str], capacity: int, now: float) -> None:
        self._events.append(
            Event(
                type="agent.capabilities.changed",
                entity_type="agent",
                entity_id=agent.id,
                at=now,
                agent_id=agent.id,
                payload={
                    "capabilities": sorted(capabilities),
                    "capacity": capacity,
                    "previous_capabilities": sorted(agent.capabilities),
                    "previous_capacity": agent.capacity,
                },
            )
        )

    def live_agent(self, agent_id: str, incarnation: str) -> Agent | None:
        agent = self.agents.get(agent_id)
        if agent is None or agent.incarnation != incarnation or agent.status is not AgentStatus.ALIVE:
            return None
        return agent

    def renew(self, agent: Agent, now: float) -> None:
        agent.lease_expires_at = now + self.lease_ttl

    def agent_lost(self, agent_id: str, incarnation: str, now: float, reason: str) -> bool:
        """Ray reported the agent dead (or its lease ran out): requeue its attempts."""
        agent = self.live_agent(agent_id, incarnation)
        if agent is None:
            return False
        self._retire_agent(agent, AgentStatus.LOST, now, reason)
        return True

    def agent_stopped(self, agent_id: str, incarnation: str, now: float) -> bool:
        """The agent left on purpose (``stop``, ``shutdown``); anything it still held is requeued
        as ``interrupted``, not charged: an operator's stop is not the task's fault."""
        agent = self.live_agent(agent_id, incarnation)
        if agent is None:
            return False
        self._retire_agent(agent, AgentStatus.STOPPED, now, "agent stopped", AttemptOutcome.INTERRUPTED)
        return True

    def agent_replaced(self, agent_id: str, incarnation: str, now: float, reason: str, *, restarting: bool) -> bool:
        """The agent is about to end its process to free the slots zombie handlers hold: its
        attempts still under way are requeued as ``interrupted`` (not charged). It is ``lost``
        while Ray restarts it (a new incarnation registers), ``stopped`` if it will not restart."""
        agent = self.live_agent(agent_id, incarnation)
        if agent is None:
            return False
        status = AgentStatus.LOST if restarting else AgentStatus.STOPPED
        self._retire_agent(agent, status, now, reason, AttemptOutcome.INTERRUPTED)
        return True

    def _retire_agent(
        self, agent: Agent, status: AgentStatus, now: float, reason: str,
        outcome: AttemptOutcome = AttemptOutcome.LOST,
    ) -> None:
        agent.status = status
        self._abandoned.extend(agent.busy)
        for key in list(agent.busy):
            task = self.tasks.get(key[0])
            if task is not None and task.attempt == key[1] and task.status in ACTIVE:
                self._attempt_failed(task, outcome, f"{outcome.value}: agent '{agent.id}' {reason}", now)
            self._release(agent, key, now)
        agent.zombies.clear()
        self._dirty_agents[agent.id] = agent
        self._events.append(
            Event(
                type="agent.lost" if status is AgentStatus.LOST else "agent.stopped",
                entity_type="agent",
                entity_id=agent.id,
                at=now,
                agent_id=agent.id,
                payload={"incarnation": agent.incarnation, "reason": reason},
            )
        )

    # ---------------------------------------------------------------- claiming

    def claim(self, agent: Agent, limit: int, now: float, request_id: str | None = None) -> list[Task]:
        """Give ``agent`` up to ``limit`` ready tasks it is able to run (bounded by free slots),
        highest priority first, FIFO within a priority."""
        count = min(limit, agent.free_slots)
        if count <= 0:
            return []
        claimed: list[Task] = []
        set_aside: list[Task] = []
        while len(claimed) < count and len(set_aside) < count + MAX_SET_ASIDE:
            batch = self.ready.pop_for(agent.capabilities, count - len(claimed))
            if not batch:
                break
            for task_id in batch:
                task = self.tasks[task_id]
                if task.locks and self._locks_conflict(task.locks):
                    set_aside.append(task)
                else:
                    claimed.append(self._claim_one(agent, task, now, request_id))
        for task in set_aside:
            self.ready.push(task.id, task.requires, task.priority, task.seq)
        return claimed

    def _claim_one(self, agent: Agent, task: Task, now: float, request_id: str | None) -> Task:
        task.attempt += 1
        task.agent_id = agent.id
        task.agent_incarnation = agent.incarnation
        task.claim_request_id = request_id
        task.deadline = None
        task.reason = None  # why the last attempt was requeued: a new attempt makes it stale
        self._move(task, S.CLAIMED, now, agent=agent.id, attempt=task.attempt, request_id=request_id)
        key = (task.id, task.attempt)
        attempt = Attempt(task.id, task.attempt, agent.id, agent.incarnation, claimed_at=now, locks=task.locks)
        self.open_attempts[key] = attempt
        self._dirty_attempts[key] = attempt
        self._new_attempts.add(key)
        agent.busy[key] = now
        self._count_locks(task.locks, +1)
        return task

    def _locks_conflict(self, locks: tuple[tuple[str, str, str], ...]) -> bool:
        for rtype, rid, mode in locks:
            exclusive, shared = self.lock_usage.get((rtype, rid), (0, 0))
            if exclusive or (mode == "exclusive" and shared):
                return True
        return False

    def _count_locks(self, locks: tuple[tuple[str, str, str], ...], delta: int) -> None:
        for rtype, rid, mode in locks:
            usage = self.lock_usage.setdefault((rtype, rid), [0, 0])
            usage[0 if mode == "exclusive" else 1] += delta
            if usage == [0, 0]:
                del self.lock_usage[(rtype, rid)]

    def claimed_by_request(self, agent: Agent, request_id: str) -> list[Task]:
        """Tasks this agent claimed with ``request_id`` and has not started: the reply a
        retried request must get again."""
        found = []
        for task_id, attempt in agent.busy:
            task = self.tasks.get(task_id)
            if (
                task is not None
                and task.attempt == attempt
                and task.status is S.CLAIMED
                and task.claim_request_id == request_id
            ):
                found.append(task)
        return sorted(found, key=lambda t: (-t.priority, t.seq))

    # ---------------------------------------------------------------- reports from agents

    def apply_report(self, agent: Agent, report: Report, now: float) -> Rejection | None:
        """Apply one started/finished report; return a rejection if its attempt is stale.

        A finished report frees the attempt's slot whether or not its result still counts. A
        zombie report marks the slot held by a zombie (whatever the task's status): the agent
        gets no more work until it is replaced.
        """
        key = (report.task_id, report.attempt)
        if report.kind == "zombie":
            if key in agent.busy:
                agent.zombies.add(key)
            return None
        task = self.tasks.get(report.task_id)
        rejection = None
        if (
            task is None
            or task.attempt != report.attempt
            or task.status not in ACTIVE
            or task.agent_id != agent.id
            or task.agent_incarnation != agent.incarnation
        ):
            repeated_start = (
                report.kind == "started"
                and task is not None
                and task.attempt == report.attempt
                and task.status is S.RUNNING
                and task.agent_id == agent.id
            )
            if not repeated_start:
                rejection = Rejection(report.task_id, report.attempt, _stale_reason(task, report.attempt))
        else:
            if task.status is S.CLAIMED:
                self._start(task, now)
            if report.kind == "finished":
                self._finish(task, report, now)
        if report.kind == "finished":
            self._release(agent, key, now)
        return rejection

    def _finish(self, task: Task, report: Report, now: float) -> None:
        outcome = report.outcome or AttemptOutcome.FAILED
        if outcome is AttemptOutcome.COMPLETED:
            self._end_attempt(task, outcome, None, now)
            task.result = report.result
            task.error = None
            self._move(task, S.COMPLETED, now, attempt=task.attempt)
        elif outcome is AttemptOutcome.CANCELLED:
            # The handler says it was cancelled, but this attempt was never cancelled here.
            error = report.error or "the handler stopped, reporting a cancellation nobody asked for"
            self._attempt_failed(task, AttemptOutcome.FAILED, error, now)
        else:
            self._attempt_failed(task, outcome, report.error, now)

    def heartbeat(self, agent: Agent, held: Iterable[AttemptKey], now: float) -> list[AttemptKey]:
        """Renew the agent's lease; return the held attempts that are stale (to be stopped).

        Attempts we believe occupy the agent that it does not list, and that were handed out more
        than a lease ago, were never received: they are lost and requeued.
        """
        self.renew(agent, now)
        held_set = set(held)
        stale = []
        for task_id, attempt in held_set:
            task = self.tasks.get(task_id)
            if (
                task is None
                or task.attempt != attempt
                or task.status not in ACTIVE
                or task.agent_id != agent.id
            ):
                stale.append((task_id, attempt))
        cutoff = now - self.lease_ttl
        for key, claimed_at in list(agent.busy.items()):
            if key not in held_set and claimed_at < cutoff:
                task = self.tasks.get(key[0])
                if task is not None and task.attempt == key[1] and task.status in ACTIVE:
                    self._lose_attempt(task, now, f"agent '{agent.id}' never received it")
                self._release(agent, key, now)
        return stale

    # ---------------------------------------------------------------- cancellation

    def cancel(self, task_id: str, now: float, reason: str = "cancelled by request") -> TaskStatus | None:
        """Cancel a live task. Returns the new status, or None if the task is not in memory
        (the caller decides whether it is terminal or unknown)."""
        return self.cancel_many([task_id], now, reason).get(task_id)

    def cancel_many(
        self, task_ids: Iterable[str], now: float, reason: str = "cancelled by request"
    ) -> dict[str, TaskStatus]:
        """Cancel every named live task as one decision; return ``{id: CANCELLED}`` for those in
        memory (ids not in memory are left to the caller: terminal or unknown).

        Order does not matter: every named task is cancelled with ``reason`` before any of them
        settles its dependents, so only dependents the caller did not name become
        ``upstream_failed``. Repeated ids count once.
        """
        named = [self.tasks[tid] for tid in dict.fromkeys(task_ids) if tid in self.tasks]
        outer = self._draining
        self._draining = True  # settling waits until every named task is cancelled
        try:
            # In submission order, whatever the argument order: a dependent of two named tasks
            # then always names the same one as its upstream.
            for task in sorted(named, key=lambda t: t.seq):
                if task.status in ACTIVE:
                    self._end_attempt(task, AttemptOutcome.CANCELLED, reason, now)
                    self._signal(task, reason)
                self.ready.discard(task.id)
                task.reason = reason
                self._move(task, S.CANCELLED, now, reason=reason)
        finally:
            self._draining = outer
        if not outer:
            self._settle_queued(now)
        return {task.id: S.CANCELLED for task in named}

    # ---------------------------------------------------------------- the storage backstop

    def fail_unstorable(self, changes: ChangeSet, problems: Mapping[str, str], now: float) -> None:
        """The owner could not store ``changes``: fail each task of ``problems`` (``{task id:
        why}``), wherever it stands, with the reason ``could not be stored: <why>``, and clear
        from ``changes`` what those tasks carried that a store may refuse.

        Cleared: each task's result, error, upstream, deadline and backoff time, and any time of it
        past what a store holds; a payload or idempotency key that is not storable (tasks created
        in ``changes``); its attempts' error texts (cleaned) and times past what a store holds;
        its events' payload entries that are not storable JSON. An attempt under way
        ends ``failed`` and its agent is told to stop. A task that already left memory (its
        final status is what could not be stored) is recorded ``failed`` instead. The moves are
        in the change log as usual: the owner commits them together with ``changes``.
        """
        live = {t.id: t for t in changes.created} | {t.id: t for t in changes.updated}
        created = {t.id for t in changes.created}
        for task_id, why in problems.items():
            task = self.tasks.get(task_id) or live.get(task_id)
            if task is None:
                continue
            reason = clean_text(UNSTORABLE_REASON.format(why), max_chars=MAX_ERROR_CHARS)
            task.result, task.deadline, task.not_before, task.upstream = None, None, None, None
            task.error = task.reason = reason
            task.started_at = task.started_at if _storable_time(task.started_at) else None
            task.created_at = task.created_at if _storable_time(task.created_at) else now
            if task_id in created:
                if not _storable_json(task.payload):
                    task.payload = None
                if task.idempotency_key and unstorable_char(task.idempotency_key):
                    self.by_key.pop(task.idempotency_key, None)
                    task.idempotency_key = None
            if task.status in ACTIVE:
                self._end_attempt(task, AttemptOutcome.FAILED, reason, now)
                self._signal(task, reason)
            if task.status not in TERMINAL:
                self.ready.discard(task.id)
                self._move(task, S.FAILED, now, attempt=task.attempt, error=reason, reason=reason)
            else:  # its final status is what could not be stored: record it failed instead
                task.status = S.FAILED
                task.updated_at = task.finished_at = now
                self._dirty[task.id] = task
                self._emit(FAILED_EVENT, task, now, payload={"attempt": task.attempt, "error": reason, "reason": reason})
        for attempt in changes.attempts:
            if attempt.task_id in problems:
                if attempt.error is not None:
                    attempt.error = clean_text(attempt.error, max_chars=MAX_ERROR_CHARS)
                attempt.claimed_at = attempt.claimed_at if _storable_time(attempt.claimed_at) else now
                for name in ("started_at", "finished_at", "released_at"):
                    if not _storable_time(getattr(attempt, name)):
                        setattr(attempt, name, now)
        for event in changes.events:
            if event.task_id in problems:
                event.at = event.at if _storable_time(event.at) else now
                event.payload = {
                    k: v for k, v in event.payload.items() if unstorable_char(k) is None and _storable_json(v)
                }

    # ---------------------------------------------------------------- time

    def next_due(self) -> float | None:
        return self.timers.next_due()

    def advance(self, now: float) -> None:
        """Fire every timer that is due: backoffs end, attempts time out, leases run out."""
        for kind, key in self.timers.pop_due(now):
            if kind == "retry":
                task = self.tasks.get(key[0])
                if task is not None and task.status is S.RETRY_WAIT and task.attempt == key[1]:
                    task.not_before = None
                    self._make_ready(task, now)
            elif kind == "timeout":
                task = self.tasks.get(key[0])
                if (
                    task is not None
                    and task.status is S.RUNNING
                    and task.attempt == key[1]
                    and task.deadline is not None
                    and task.deadline <= now
                ):
                    self._signal(task, "timed out")
                    self._attempt_failed(
                        task, AttemptOutcome.TIMED_OUT, f"timed out after {task.timeout:g}s", now
                    )
            elif kind == "lease":
                agent = self.live_agent(*key)
                if agent is not None:
                    if agent.lease_expires_at <= now:
                        self._retire_agent(agent, AgentStatus.LOST, now, "lease expired")
                    else:
                        self.timers.add(agent.lease_expires_at, "lease", key)

    # ---------------------------------------------------------------- queries

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for task in self.tasks.values():
            out[task.status.value] = out.get(task.status.value, 0) + 1
        return out

    def unclaimable(self) -> dict[frozenset[str], int]:
        alive = [a.capabilities for a in self.agents.values() if a.status is AgentStatus.ALIVE]
        return self.ready.unclaimable(alive)

    # ---------------------------------------------------------------- change log

    def take_changes(self) -> ChangeSet:
        """Drain the change log.

        Tasks and attempts are the live objects (agents are copied: they are small and their
        slots churn). Whoever persists a change set must turn it into rows before the graph is
        changed again (``Store.prepare``), or copy it.
        """
        changes = ChangeSet(
            created=list(self._created.values()),
            dependencies=self._deps,
            updated=[t for tid, t in self._dirty.items() if tid not in self._created],
            attempts=list(self._dirty_attempts.values()),
            new_attempts=self._new_attempts,
            agents=[_agent_snapshot(a) for a in self._dirty_agents.values()],
            events=self._events,
            signals=self._signals,
            finished=self._finished,
            abandoned=self._abandoned,
        )
        self._created = {}
        self._dirty = {}
        self._dirty_attempts = {}
        self._new_attempts = set()
        self._dirty_agents = {}
        self._deps = []
        self._events = []
        self._signals = []
        self._finished = []
        self._abandoned = []
        return changes

    # ---------------------------------------------------------------- internals

    def _move(self, task: Task, new: TaskStatus, now: float, **payload: Any) -> None:
        event_type = event_for(task.status, new, task.id)
        task.status = new
        task.updated_at = now
        if task.id not in self._created:
            self._dirty[task.id] = task
        request_id = payload.pop("request_id", None)
        self._emit(event_type, task, now, payload=payload, request_id=request_id)
        if new in TERMINAL:
            task.finished_at = now
            self._settle(task, now)

    def _settle(self, task: Task, now: float) -> None:
        """Take a task that just became terminal out of memory and settle its dependents.

        Iterative (a worklist, not recursion), so a failure at the head of a chain of any length
        dooms the whole chain.
        """
        self._settling.append(task)
        if self._draining:
            return  # an outer call is draining the worklist
        self._settle_queued(now)

    def _settle_queued(self, now: float) -> None:
        self._draining = True
        try:
            while self._settling:
                self._leave_memory(self._settling.popleft(), now)
        finally:
            self._draining = False

    def _leave_memory(self, task: Task, now: float) -> None:
        del self.tasks[task.id]
        self.ready.discard(task.id)
        if task.idempotency_key:
            self.by_key.pop(task.idempotency_key, None)
        self._finished.append(task.id)
        dependents = self.dependents.pop(task.id, ())
        if task.status is S.COMPLETED:
            for dep_id in dependents:
                dep = self.tasks.get(dep_id)
                if dep is not None and dep.status is S.PENDING:
                    dep.waiting_on -= 1
                    if dep.waiting_on == 0:
                        self._make_ready(dep, now)
            return
        if task.status is S.UPSTREAM_FAILED and task.upstream:
            root, reason = task.upstream, task.reason or ""
        else:
            root, reason = task.id, f"upstream task '{task.id}' {task.status.value}"
        for dep_id in dependents:
            dep = self.tasks.get(dep_id)
            if dep is not None and dep.status is S.PENDING:
                self._doom(dep, root, reason, now)

    def _doom(self, task: Task, root: str, reason: str, now: float) -> None:
        task.upstream = root
        task.reason = reason
        self._move(task, S.UPSTREAM_FAILED, now, reason=reason, upstream=root)

    def _make_ready(self, task: Task, now: float) -> None:
        self._move(task, S.READY, now)
        self.ready.push(task.id, task.requires, task.priority, task.seq)

    def _start(self, task: Task, now: float) -> None:
        task.started_at = now
        attempt = self.open_attempts.get((task.id, task.attempt))
        if attempt is not None:
            attempt.started_at = now
            self._dirty_attempts[(task.id, task.attempt)] = attempt
        if task.timeout is not None:
            task.deadline = now + task.timeout
            self.timers.add(task.deadline, "timeout", (task.id, task.attempt))
        self._move(task, S.RUNNING, now, attempt=task.attempt, agent=task.agent_id)

    def _end_attempt(self, task: Task, outcome: AttemptOutcome, error: str | None, now: float) -> None:
        key = (task.id, task.attempt)
        attempt = self.open_attempts.get(key)
        if attempt is not None and attempt.outcome is None:
            attempt.outcome = outcome
            attempt.error = error
            attempt.finished_at = now
            self._dirty_attempts[key] = attempt
        task.deadline = None

    def _release(self, agent: Agent, key: AttemptKey, now: float) -> None:
        agent.zombies.discard(key)
        if agent.busy.pop(key, None) is not None:
            self._close_attempt(key, now)

    def _close_attempt(self, key: AttemptKey, now: float) -> None:
        """The attempt's handler is over (or its agent is gone): record it and forget it."""
        attempt = self.open_attempts.pop(key, None)
        if attempt is None:
            return
        self._count_locks(attempt.locks, -1)
        if attempt.outcome is None:
            attempt.outcome = AttemptOutcome.LOST
            attempt.finished_at = now
        attempt.released_at = now
        self._dirty_attempts[key] = attempt

    def _attempt_failed(self, task: Task, outcome: AttemptOutcome, error: str | None, now: float) -> None:
        """End the current attempt unsuccessfully and decide: retry later, requeue, or give up."""
        self._end_attempt(task, outcome, error, now)
        task.error = error
        rule = OUTCOME_RULES[outcome]
        if not rule.charged:
            task.uncharged += 1
        charged = task.attempt - task.uncharged
        retries_left = rule.retryable and charged <= task.retry.max_retries
        if retries_left and not rule.backoff:
            task.reason = error
            self._move(task, S.READY, now, attempt=task.attempt, reason=error)
            self.ready.push(task.id, task.requires, task.priority, task.seq)
        elif retries_left:
            if outcome is AttemptOutcome.TIMED_OUT:
                # The event says what happened to this attempt; the move below says what comes next.
                self._emit(TIMED_OUT_EVENT, task, now, payload={"attempt": task.attempt, "error": error})
            delay = task.retry.delay(task.attempt - 1, self.rng)
            task.not_before = now + delay
            self._move(
                task,
                S.RETRY_WAIT,
                now,
                attempt=task.attempt,
                cause=outcome.value,
                error=error,
                delay=round(delay, 3),
            )
            self.timers.add(task.not_before, "retry", (task.id, task.attempt))
        else:
            final = S.TIMED_OUT if outcome is AttemptOutcome.TIMED_OUT else S.FAILED
            if rule.retryable:
                task.reason = f"gave up after {task.attempt} attempts"
            self._move(task, final, now, attempt=task.attempt, error=error, reason=task.reason)

    def _lose_attempt(self, task: Task, now: float, reason: str) -> None:
        self._attempt_failed(task, AttemptOutcome.LOST, f"lost: {reason}", now)

    def _signal(self, task: Task, reason: str) -> None:
        if task.agent_id and task.agent_incarnation:
            self._signals.append(
                CancelSignal(task.agent_id, task.agent_incarnation, task.id, task.attempt, reason)
            )

    def _emit(
        self,
        event_type: str,
        task: Task,
        now: float,
        payload: dict[str, Any],
        request_id: str | None = None,
    ) -> None:
        self._events.append(
            Event(
                type=event_type,
                entity_type="task",
                entity_id=task.id,
                at=now,
                payload={k: v for k, v in payload.items() if v is not None},
                task_id=task.id,
                agent_id=task.agent_id,
                ticket_id=task.ticket_id,
                request_id=request_id,
            )
        )



def _storable_time(value: float | None) -> bool:
    return value is None or 0.0 <= value <= MAX_TIMESTAMP_S


def _storable_json(value: Any) -> bool:
    try:
        check_json(value, "value")
    except ValueError:
        return False
    return True


def _stale_reason(task: Task | None, attempt: int) -> str:
    if task is None:
        return "the task is no longer running (it reached a final status)"
    if task.attempt != attempt:
        return f"attempt {attempt} is stale; the current attempt is {task.attempt}"
    return f"the task is {task.status.value}, not running"


def _agent_snapshot(agent: Agent) -> Agent:
    snap = copy.copy(agent)
    snap.busy = {}
    snap.zombies = set()
    snap.info = dict(agent.info)
    return snap
