"""The scheduler core: the small front that composes the parts of the scheduler's state.

``TaskGraph`` is what the scheduler actor drives. It holds no rule of its own beyond wiring and
the two decisions that span every part (restoring from storage, failing what storage refused);
each rule lives in its part:

- ``core.dag.LiveTasks``: the live tasks, their moves, the ready index and DAG settlement;
- ``core.submission``: submission and idempotency;
- ``core.agents.AgentRegistry``: agents, incarnations, leases, health (``core.health``), capacity;
- ``core.ranking``: the one ranking of agents, for searches and for the owner's dispatch;
- ``core.claims.Claims``: claiming, attempt fencing, reports and heartbeats, ``OUTCOME_RULES``;
- ``core.handoff.Handoffs``: negotiated hand-offs of a held task to another agent;
- ``core.threads.Threads``: collaboration threads, messages and read receipts;
- ``core.coordination.Coordination``: handler-less nodes (sync, loop) and splits;
- ``core.tickets.Tickets``: tickets, their phases, gates, artifacts and context; tasks held for
  their ticket's phase;
- ``core.timers.Timers``: deadlines (``advance`` dispatches each due timer to its part);
- ``core.task_changes.TaskChanges``: the change set every part records into.

Its methods take the caller's clock reading and return decisions; every change they make is also
recorded in a change log that the owner drains (``take_changes``), persists in one transaction,
and only then acts on. Nothing here reads a clock, touches a database, or talks to Ray.

Rules:
- Every part records into one ``ChangeRecorder[TaskChanges]``; ``take_changes`` drains it once
  for all of them.
- A change the owner could not store fails the tasks it concerns (``fail_unstorable``): from any
  live status to ``failed``, reason ``could not be stored: ...``, with what a store may refuse
  cleared from them; dependents become ``upstream_failed`` as for any failure.
- Cancelling several tasks is one decision: every named task is cancelled before any of them
  settles its dependents.
- A task's ``reason`` says why it is in its current status where its error does not: why it was
  requeued (while ``ready``), why it ended (gave up, cancelled, failed upstream, not storable).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from omoi_ray.core.agents import AgentRegistry
from omoi_ray.core.changes import ChangeRecorder
from omoi_ray.core.claims import Claims
from omoi_ray.core.coordination import SPLIT_CREATED, Coordination, ReadSpecs
from omoi_ray.core.dag import LiveTasks
from omoi_ray.core.handoff import Handoff, Handoffs
from omoi_ray.core.merge import merge_completed
from omoi_ray.core.model import TASK_KIND, Agent, Attempt, AttemptOutcome, NewTask, Task, Thread
from omoi_ray.core.ranking import Match, Query, search
from omoi_ray.core.storable import MAX_ERROR_CHARS, MAX_TIMESTAMP_S, check_json, clean_text, unstorable_char
from omoi_ray.core.submission import StoredTask, submit
from omoi_ray.core.task_changes import AttemptKey, TaskChanges
from omoi_ray.core.tasks import ACTIVE, FAILED_EVENT, FAILED_FOR_GOOD, TERMINAL, TaskStatus
from omoi_ray.core.threads import Threads
from omoi_ray.core.tickets import Artifact, Ticket, Tickets
from omoi_ray.core.timers import Timers

S = TaskStatus

#: the reason (and error) of a task failed because a change of it could not be stored
UNSTORABLE_REASON = "could not be stored: {}"


class TaskGraph:
    """The scheduler's state and every decision it makes, without I/O.

    Args:
        lease_ttl: seconds an agent's lease lasts from its last call.
        stale_after: seconds of silence after which an agent is ``stale`` (default ``2/3 *
            lease_ttl``: two missed heartbeats).
        rng: the randomness of retry backoff jitter (seeded in tests).
        read_specs: turns spec dicts (a loop's stored body) into ``NewTask``s: the edge's
            parser, injected (``core.coordination``).
        result_max_bytes: the cap on a sync's or loop's combined result (``OMOI_RESULT_MAX_BYTES``);
            None: none.

    Attributes:
        tasks, dependents, by_key, ready: the live tasks' (``LiveTasks``).
        agents: agent id -> agent (``AgentRegistry``).
        open_attempts, lock_usage: the claims' (``Claims``).
        threads: the collaboration threads and messages (``Threads``).
        handoffs: the hand-off offers (``Handoffs``).
        timers: every deadline of every part.
    """

    def __init__(
        self,
        *,
        lease_ttl: float = 30.0,
        rng: random.Random | None = None,
        stale_after: float | None = None,
        read_specs: ReadSpecs | None = None,
        result_max_bytes: int | None = None,
    ) -> None:
        self.lease_ttl = lease_ttl
        self.rng = rng or random.Random()
        self.log: ChangeRecorder[TaskChanges] = ChangeRecorder(TaskChanges)
        self.timers = Timers()
        self.live = LiveTasks(self.log)
        self.claims = Claims(self.live, self.timers, self.rng, lease_ttl)
        self.registry = AgentRegistry(self.log, self.timers, self.claims, lease_ttl, stale_after)
        self.threads = Threads(self.log, self.registry.agents)
        self.handoffs = Handoffs(self.log, self.timers, self.live, self.claims, self.registry.agents, self.threads)
        self.claims.on_attempt_end = self.handoffs.attempt_ended
        self.coordination = Coordination(self.live, self.timers, read_specs, result_max_bytes)
        self.claims.on_split = self.coordination.split
        self.tickets = Tickets(self.log, self.live)
        # what each part owns, under the names the scheduler actor and the tests read
        self.tasks = self.live.tasks
        self.dependents = self.live.dependents
        self.by_key = self.live.by_key
        self.ready = self.live.ready
        self.agents = self.registry.agents
        self.open_attempts = self.claims.open_attempts
        self.lock_usage = self.claims.lock_usage
        #: timer kind -> the part's handler of a due timer
        self._due: dict[str, Callable[[Any, float], None]] = {
            "retry": self.claims.retry_due,
            "timeout": self.claims.timeout_due,
            "lease": self.registry.lease_due,
            "handoff": self.handoffs.expire_due,
            "stale": self.registry.stale_due,
            "sync": self.coordination.sync_due,
        }
        # the parts' decisions, offered as they are
        self.claim = self.claims.claim
        self.claimed_by_request = self.claims.claimed_by_request
        self.apply_report = self.claims.apply_report
        self.register_agent = self.registry.register
        self.live_agent = self.registry.live
        self.renew = self.registry.renew
        self.agent_lost = self.registry.lost
        self.agent_stopped = self.registry.stopped
        self.agent_replaced = self.registry.replaced

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next new task gets."""
        return self.live.next_seq

    @next_seq.setter
    def next_seq(self, value: int) -> None:
        self.live.next_seq = value

    # ---------------------------------------------------------------- restoring from storage

    def restore(
        self,
        tasks: Iterable[Task],
        dependencies: Iterable[tuple[str, str, TaskStatus]],
        agents: Iterable[Agent],
        open_attempts: Iterable[Attempt],
        next_seq: int,
        now: float,
        threads: Iterable[Thread] = (),
        next_message_seq: int = 1,
        handoffs: Iterable[Handoff] = (),
        tickets: Iterable[Ticket] = (),
        artifacts: Iterable[Artifact] = (),
        history_seq: Mapping[str, int] | None = None,
        stored_results: Mapping[str, Any] | None = None,
    ) -> None:
        """Rebuild memory from stored rows.

        Args:
            tasks: the live tasks.
            dependencies: ``(task, dependency, dependency status)`` for every edge of a live task.
            agents: those stored as alive; each gets a fresh lease from ``now``.
            open_attempts: attempts whose handlers were never reported ended, each with its
                task's declared locks.
            next_seq: the ``seq`` the next new task gets (at least).
            now: the caller's clock reading (seconds).
            threads: the stored active threads.
            next_message_seq: the ``seq`` the next message gets (at least).
            handoffs: open offers, and accepted ones whose new attempt is still claimed.
            tickets, artifacts, history_seq: the stored tickets, their artifacts, and each
                ticket's last phase-history ``seq`` (held tasks are held again on restore).
            stored_results: the stored results of pending loops' current checks that completed
                (``coordination.pending_loop_checks``; others may be left out): a pending loop
                whose check already ended is judged here (``Coordination.restored``).

        Whatever the stored rows leave unfinished (an attempt of an agent that is gone, a pending
        task whose dependencies are all done) is settled here, in the change log.
        """
        live = self.live
        self.tickets.restore(tickets, artifacts, history_seq or {})
        for task in tasks:
            task.waiting_on = 0
            live.add(task)
        doomed: list[tuple[Task, str, TaskStatus]] = []
        #: node id -> its dependencies that are no longer live, with their stored status
        ended: dict[str, dict[str, TaskStatus]] = {}
        for task_id, dep_id, dep_status in dependencies:
            task = live.tasks.get(task_id)
            if task is None:
                continue
            task.depends_on = (*task.depends_on, dep_id)
            linked = live.link(task, dep_id)
            if not linked and dep_status in FAILED_FOR_GOOD and task.kind == TASK_KIND:
                doomed.append((task, dep_id, dep_status))
            elif not linked and task.kind != TASK_KIND:
                ended.setdefault(task.id, {})[dep_id] = dep_status
        self.registry.restore(agents, now)
        self.threads.restore(threads, next_message_seq)
        for attempt in open_attempts:
            agent = self.registry.live(attempt.agent_id, attempt.agent_incarnation)
            self.claims.restore_attempt(attempt, agent, now)
        live.next_seq = max(live.next_seq, next_seq)
        for task in list(live.tasks.values()):
            if task.status is S.READY:
                live.push_ready(task, now)  # a ready row its ticket now holds is held again
            else:
                self.claims.rearm(task)
        self.handoffs.restore(list(handoffs))
        for task, dep_id, dep_status in doomed:
            if task.status is S.PENDING:
                live.doom(task, dep_id, f"upstream task '{dep_id}' {dep_status.value}", now,
                          cancelled=dep_status is S.CANCELLED)
        for task in list(live.tasks.values()):
            if task.kind != TASK_KIND:
                self.coordination.restored(task, now, ended.get(task.id, {}), stored_results or {})
            elif task.status is S.PENDING and task.waiting_on == 0:
                live.make_ready(task, now)
            elif task.status in ACTIVE and self.registry.live(task.agent_id or "", task.agent_incarnation or "") is None:
                self.claims.lose_attempt(task, now, "its agent was gone when the scheduler restarted")
        self.handoffs.settle_restored(now)

    # ---------------------------------------------------------------- submission

    def submit(
        self,
        new: Sequence[NewTask],
        now: float,
        stored: Mapping[str, StoredTask] | None = None,
        stored_keys: Mapping[str, StoredTask] | None = None,
        request_id: str | None = None,
    ) -> list[str]:
        """Create the tasks of one submission atomically and return their ids in order (see
        ``core.submission.submit``, which raises ``InvalidSubmissionError`` and changes nothing
        for conflicts and graph-rule breaches)."""
        for task in new:
            self.tickets.check_task(task.id, task.ticket_id, task.phase)
        self.coordination.refuse_round_ids(new)
        return submit(self.live, new, now, stored, stored_keys, request_id)

    def cancel_ticket(self, ticket_id: str, now: float, reason: str = "ticket cancelled") -> tuple[Ticket, list[str]]:
        """Cancel a ticket and every unfinished task of it, as one decision (``cancel_many``).

        Returns:
            The ticket and the ids of the tasks cancelled.

        Raises:
            TicketNotFoundError, TicketClosedError (the ticket is done).
        """
        ticket, ids = self.tickets.cancel(ticket_id, reason, now)
        self.cancel_many(ids, now, reason)
        return ticket, ids

    # ---------------------------------------------------------------- agents' calls

    def heartbeat(self, agent: Agent, held: Iterable[AttemptKey], now: float) -> list[AttemptKey]:
        """Renew the agent's lease; return the held attempts that are stale (to be stopped)
        (see ``Claims.heartbeat``)."""
        self.registry.renew(agent, now)
        return self.claims.heartbeat(agent, held, now)

    # ---------------------------------------------------------------- joins

    def record_merge(self, task_id: str, attempt: int, summary: dict[str, Any], now: float) -> bool:
        """Record ``coordination.merge.completed`` for a join whose handler merged its sources.

        Args:
            task_id, attempt: the join task and the attempt that merged.
            summary: ``core.merge.summary``'s payload (strategy, source ids, result keys).
            now: the caller's clock.

        Returns:
            True if recorded; False when that attempt is no longer the task's active one (a
            stale attempt's merge is not worth an event).
        """
        task = self.live.tasks.get(task_id)
        if task is None or task.attempt != attempt or task.status not in ACTIVE:
            return False
        self.log.events.add(merge_completed(task, attempt, summary, now))
        return True

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
        live = self.live
        named = [live.tasks[tid] for tid in dict.fromkeys(task_ids) if tid in live.tasks]
        with live.settling_after(now):
            # In submission order, whatever the argument order: a dependent of two named tasks
            # then always names the same one as its upstream.
            for task in sorted(named, key=lambda t: t.seq):
                if task.status in ACTIVE:
                    self.claims.end_attempt(task, AttemptOutcome.CANCELLED, reason, now)
                    self.claims.signal(task, reason)
                live.ready.discard(task.id)
                task.reason = reason
                live.move(task, S.CANCELLED, now, reason=reason)
        return {task.id: S.CANCELLED for task in named}

    # ---------------------------------------------------------------- the storage backstop

    def fail_unstorable(self, changes: TaskChanges, problems: Mapping[str, str], now: float) -> None:
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
        live = self.live
        known = {t.id: t for t in changes.created} | {t.id: t for t in changes.updated}
        created = {t.id for t in changes.created}
        for task_id, why in problems.items():
            task = live.tasks.get(task_id) or known.get(task_id)
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
                    live.by_key.pop(task.idempotency_key, None)
                    task.idempotency_key = None
            if task.status in ACTIVE:
                self.claims.end_attempt(task, AttemptOutcome.FAILED, reason, now)
                self.claims.signal(task, reason)
            if task.status not in TERMINAL:
                live.ready.discard(task.id)
                live.move(task, S.FAILED, now, attempt=task.attempt, error=reason, reason=reason)
            else:  # its final status is what could not be stored: record it failed instead
                task.status = S.FAILED
                task.updated_at = task.finished_at = now
                self.log.updated.add(task)
                live.emit(FAILED_EVENT, task, now, payload={"attempt": task.attempt, "error": reason, "reason": reason})
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

    def drop_created(
        self, changes: TaskChanges, taken: Mapping[str, str], now: float
    ) -> tuple[list[str], dict[str, str]]:
        """The owner could not store ``changes`` because rows it creates collide with stored ones
        (``taken``: ``{created task id: why}``, a duplicate id or idempotency key). Every task
        created by the same decision (``changes.decisions``) leaves memory as if never created (a
        submission, a split's children and a loop's round are all-or-nothing; children or a round
        of a task created in ``changes`` belong to its decision), and so does every decision
        of ``changes`` with a task depending on a dropped one (why: ``task 'z' depends on task
        'x', which could not be stored: <why>``); other decisions of ``changes`` stay. Each
        dropped decision's origin answers for it:

        - a split's parent (completed in ``changes``) is recorded ``failed`` instead (its attempt
          too), reason ``could not be stored: split of task 'p' refused: <why>``; its plain
          dependents, which waited on the children, become ``upstream_failed``;
        - a loop whose round it was fails with that reason (its dependents as after any failure);
        - a submission is refused: its ids are returned, ``{task id: why}``, for the owner to
          raise to the caller; a live task outside ``changes`` depending on one of them becomes
          ``upstream_failed`` (reason ``upstream task 'x' could not be stored: <why>``).

        Returns:
            The ids dropped, and the refused submissions' ``{task id: why}``.

        The caller commits ``changes.without(dropped ids)`` with the moves recorded here
        (``take_changes``). Limits: what the split parent's completion already caused in memory
        beyond its dependents (a node that took it as a member, its ticket's context) stays.
        """
        live = self.live
        created = {t.id: t for t in changes.created}
        group = _decision_of(changes, created)
        joined: dict[int, int] = {}  # a decision -> the one it is part of

        def find(g: int) -> int:
            while g in joined:
                g = joined[g]
            return g

        splits = [(e.entity_id, e.payload.get("children")) for e in changes.events if e.type == SPLIT_CREATED]
        splits = [(p, [c for c in children if c in group]) for p, children in splits if isinstance(children, list)]
        for parent_id, children in splits:  # children of a task created here: its decision's own
            for child in children:
                if parent_id in created and find(group[child]) != find(group[parent_id]):
                    joined[find(group[child])] = find(group[parent_id])
        parent_of: dict[int, str] = {}  # a decision -> the split parent or loop that made it
        for parent_id, children in splits:
            for child in children:
                if parent_id not in created:
                    parent_of[find(group[child])] = parent_id
        why_of: dict[int, str] = {}
        first: dict[int, str] = {}  # a dropped decision -> the collision that started it
        for task_id, why in taken.items():
            if task_id in group:
                why_of.setdefault(find(group[task_id]), why)
                first.setdefault(find(group[task_id]), why)
        # a decision with a task depending on a dropped one goes too: it must not run without it
        spreading = True
        while spreading:
            spreading = False
            for task in created.values():
                g = find(group[task.id])
                lost = next((d for d in task.depends_on if d in group and find(group[d]) in why_of), None)
                if g not in why_of and lost is not None:
                    first[g] = first[find(group[lost])]
                    why_of[g] = f"task '{task.id}' depends on task '{lost}', which could not be stored: {first[g]}"
                    spreading = True
        dropped = [tid for tid in created if find(group[tid]) in why_of]
        waiting: dict[str, tuple[str, str]] = {}  # a surviving dependent -> (its root, why it fails)
        for task_id in dropped:
            g = find(group[task_id])
            task = live.tasks.get(task_id)
            if task is None:  # it already left memory (doomed at creation): nothing to forget
                continue
            if task.status in ACTIVE:  # handed to an agent before the commit: it stops, its slot frees
                self.claims.signal(task, UNSTORABLE_REASON.format(why_of[g]))
                agent = self.agents.get(task.agent_id or "")
                if agent is not None:
                    self.claims.release(agent, (task.id, task.attempt), now)
            root = parent_of.get(g)
            doom = (root, f"upstream task '{root}' failed") if root is not None else \
                (task_id, f"upstream task '{task_id}' could not be stored: {why_of[g]}")
            for dep_id in live.forget(task, now):
                waiting.setdefault(dep_id, doom)
        known = {t.id: t for t in changes.updated}
        for g, why in why_of.items():
            parent_id = parent_of.get(g)
            if parent_id is None:
                continue
            reason = f"split of task '{parent_id}' refused: {why}"
            self.fail_unstorable(changes, {parent_id: reason}, now)
            parent = live.tasks.get(parent_id) or known.get(parent_id)
            for attempt in changes.attempts:
                if parent is not None and (attempt.task_id, attempt.attempt) == (parent_id, parent.attempt) \
                        and attempt.outcome is AttemptOutcome.COMPLETED:
                    attempt.outcome = AttemptOutcome.PERMANENT_FAILURE
                    attempt.error = parent.error
        for dep_id, (root, reason) in waiting.items():
            dep = live.tasks.get(dep_id)
            if dep is not None and dep.status is S.PENDING:
                live.doom(dep, root, clean_text(reason, max_chars=MAX_ERROR_CHARS), now)
        refusals = {tid: why_of[find(group[tid])] for tid in dropped if find(group[tid]) not in parent_of}
        return dropped, refusals

    # ---------------------------------------------------------------- time

    def next_due(self) -> float | None:
        """When the earliest timer is due (seconds since the epoch), or None if there is none."""
        return self.timers.next_due()

    def advance(self, now: float) -> None:
        """Fire every timer that is due: backoffs end, attempts time out, leases run out."""
        for kind, key in self.timers.pop_due(now):
            self._due[kind](key, now)

    # ---------------------------------------------------------------- queries

    def search_agents(self, query: Query) -> list[Match]:
        """Rank the known agents for ``query`` (``core.ranking.search``); reads only."""
        return search(self.registry.agents.values(), query)

    def unclaimable(self, only: Iterable[str] | None = None) -> dict[frozenset[str], int]:
        """Ready tasks (all, or those among the ids ``only``) no alive agent is able to run:
        required capabilities -> count."""
        return self.ready.unclaimable(self.registry.alive_capabilities(), only)

    def unhandled(self, only: Iterable[str] | None = None) -> dict[tuple[str, frozenset[str]], int]:
        """Ready tasks some alive agent has the capabilities for but none of those handles the
        type of (``ReadyIndex.unhandled`` over the alive agents' profiles).

        Args:
            only: count only these task ids (those not ready are ignored); None counts every
                ready task.

        Returns:
            ``{(task type, required capabilities): count}``, groups with none left out.
        """
        return self.ready.unhandled(self.registry.alive_profiles(), only)

    # ---------------------------------------------------------------- change log

    def take_changes(self) -> TaskChanges:
        """Drain the change log.

        Tasks and attempts are the live objects (agents are copied: they are small and their
        slots churn). Whoever persists a change set must turn it into rows before the graph is
        changed again (``Store.prepare``), or copy it.
        """
        changes = self.log.take()
        if changes.created:
            created = {t.id for t in changes.created}
            changes.updated = [t for t in changes.updated if t.id not in created]
        changes.agents = [_agent_snapshot(a) for a in changes.agents]
        return changes


def _decision_of(changes: TaskChanges, created: Mapping[str, Task]) -> dict[str, int]:
    """Each task created in ``changes`` -> the number of the decision that created it (its
    ``decisions`` entry; one of its own for a task no entry names)."""
    group: dict[str, int] = {}
    for i, ids in enumerate(changes.decisions):
        for tid in ids:
            if tid in created:
                group.setdefault(tid, i)
    n = len(changes.decisions)
    for tid in created:
        if tid not in group:
            group[tid], n = n, n + 1
    return group


def _storable_time(value: float | None) -> bool:
    return value is None or 0.0 <= value <= MAX_TIMESTAMP_S


def _storable_json(value: Any) -> bool:
    try:
        check_json(value, "value")
    except ValueError:
        return False
    return True


def _agent_snapshot(agent: Agent) -> Agent:
    snap = copy.copy(agent)
    snap.busy = {}
    snap.zombies = set()
    snap.info = dict(agent.info)
    return snap
