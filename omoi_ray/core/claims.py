"""Claims: handing ready tasks to agents, fencing their attempts, and ending attempts.

``Claims`` holds the open attempts (those whose handlers have not been reported ended) and the
locks they declare. It hands agents ready tasks (``claim``), applies what agents report about
attempts (``apply_report``, ``heartbeat``), and decides what an attempt's end means for its task
(``attempt_failed``, by the table ``OUTCOME_RULES``).

Rules:
- Attempts are fenced: a start, result or heartbeat counts only if it names the task's current
  attempt, from the agent incarnation holding it, while the task is claimed or running.
  Anything else is stale and is answered with a rejection, never applied.
- An agent's slots are the attempts it has been given whose handlers have not yet ended. A slot
  is freed when the agent reports the handler ended, or when the agent is gone, never when the
  scheduler merely gives up on an attempt (a timed-out handler still occupies its thread).
- What an attempt's outcome means for its task is data (``OUTCOME_RULES``): errors and timeouts
  wait out the backoff in ``retry_wait``; attempts lost with their agent go straight back to
  ``ready``. Every attempt counts towards ``max_retries`` except those the rules mark uncharged
  (``interrupted``: the agent was stopped on purpose, or its process was replaced to free a
  slot a zombie handler held).
- Every attempt that runs past its timeout writes ``task.timed_out``, whether or not the task is
  retried.
- Tasks that declare locks are not handed out while an attempt that still occupies a slot
  declares a conflicting lock (exclusive against anything): they keep their place and wait. This
  only spares agents waits the scheduler can foresee; the lock manager is what guarantees safety.
- Claiming a new attempt clears the task's ``reason`` (why the last attempt was requeued), so a
  completed task never shows the reason of an earlier attempt.
- An agent is handed only tasks it is able to run: it has every capability the task requires
  and handles the task's type (``Agent.handles``: None, a default handler, handles every type).
- Only a ``healthy`` agent is handed work (a ``stale`` one waits for its next call); an
  agent's ``idle_since`` (for "longest waiting" ties) is kept here, where slots fill and free,
  and its ``tasks_done`` counts completed attempts.
- An agent's zombie report (a handler that ignored its stop past the grace period) marks its
  slot held by a zombie: the agent gets no more work (``Agent.free_slots`` is 0).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from omoi_ray.core.dag import LiveTasks
from omoi_ray.core.health import LIVE, AgentHealth
from omoi_ray.core.model import Agent, Attempt, AttemptOutcome, CancelSignal, Task
from omoi_ray.core.task_changes import AttemptKey
from omoi_ray.core.tasks import ACTIVE, TIMED_OUT_EVENT, TaskStatus
from omoi_ray.core.timers import Timers
from omoi_ray.errors import InvalidSplitError

S = TaskStatus
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
    # the task moved on to the acceptor's new attempt (``core.handoff``), never retried from here
    AttemptOutcome.HANDED_OFF: OutcomeRule(retryable=False, charged=False, backoff=False),
    AttemptOutcome.PERMANENT_FAILURE: OutcomeRule(retryable=False, charged=True, backoff=False),
    AttemptOutcome.CANCELLED: OutcomeRule(retryable=False, charged=True, backoff=False),
}


class Report(NamedTuple):
    """What an agent says about one attempt (a tuple: it crosses Ray on every call).

    ``kind`` is ``"started"``, ``"finished"`` or ``"zombie"`` (the handler ignored its stop past
    the grace period: its slot stays held until the agent's process is replaced); a finished
    report carries the outcome and either the result or the error text. A completed one may
    carry ``children``: the tasks its handler split off (validated ``NewTask``s by the time the
    core sees them; ``core.coordination``).
    """

    kind: str
    task_id: str
    attempt: int
    outcome: AttemptOutcome | None = None
    result: Any = None
    error: str | None = None
    children: Any = None


class Rejection(NamedTuple):
    """A report that was not applied: its attempt is stale (``reason`` says why)."""

    task_id: str
    attempt: int
    reason: str


class Claims:
    """The open attempts of the live tasks, and every decision about them.

    Attributes:
        open_attempts: ``(task id, attempt)`` -> attempt, for every attempt whose handler has
            not been reported ended (whatever its task's status).
        lock_usage: ``(resource type, resource id)`` -> ``[exclusive, shared]`` counts of the locks
            declared by open attempts.
    """

    def __init__(self, live: LiveTasks, timers: Timers, rng: random.Random, lease_ttl: float) -> None:
        self.live = live
        self.timers = timers
        self.rng = rng
        self.lease_ttl = lease_ttl
        self.open_attempts: dict[AttemptKey, Attempt] = {}
        self.lock_usage: dict[tuple[str, str], list[int]] = {}
        #: told when a task's current attempt ends (``Handoffs.attempt_ended`` withdraws its offer)
        self.on_attempt_end: Callable[[Task, float], None] | None = None
        #: creates a completing task's children and completes it with the callback it is given
        #: (``Coordination.split``; raises ``InvalidSplitError`` having changed nothing)
        self.on_split: Callable[[Task, Any, float, Callable[[], None]], None] | None = None

    # ---------------------------------------------------------------- restoring

    def restore_attempt(self, attempt: Attempt, agent: Agent | None, now: float) -> None:
        """Hold a stored open attempt again; ``agent`` is its live agent, or None if it is gone
        (then the attempt is abandoned and closed at once)."""
        key = (attempt.task_id, attempt.attempt)
        self.open_attempts[key] = attempt
        # an open attempt holds its slot, and its task's declared locks, until it is released,
        # whatever its task's status (a cancelled task's handler may still be running)
        self._count_locks(attempt.locks, +1)
        if agent is not None:
            agent.busy[key] = attempt.claimed_at
        else:
            self.live.log.abandoned.add(key)
            self.close_attempt(key, now)

    def rearm(self, task: Task) -> None:
        """Set the timer a restored task waits on: its backoff's end, or its running attempt's
        deadline."""
        if task.status is S.RETRY_WAIT and task.not_before is not None:
            self.timers.add(task.not_before, "retry", (task.id, task.attempt))
        elif task.status is S.RUNNING and task.deadline is not None:
            self.timers.add(task.deadline, "timeout", (task.id, task.attempt))

    # ---------------------------------------------------------------- claiming

    def claim(self, agent: Agent, limit: int, now: float, request_id: str | None = None) -> list[Task]:
        """Give ``agent`` up to ``limit`` ready tasks it is able to run: it has the capabilities
        each requires and handles each one's type (``Agent.handles``).

        Args:
            agent: a live agent; its free slots bound the count.
            limit: the most tasks wanted.
            now: the caller's clock reading (seconds).
            request_id: the claim's request id, so a retried request gets the same tasks.

        Returns:
            The claimed tasks (now ``claimed``, each with a new attempt), highest priority first,
            FIFO within a priority; tasks whose declared locks conflict with an open attempt's
            keep their place.
        """
        count = min(limit, agent.free_slots)
        if count <= 0 or agent.health is not AgentHealth.HEALTHY:  # a stale agent waits for its next call
            return []
        claimed: list[Task] = []
        set_aside: list[Task] = []
        ready = self.live.ready
        while len(claimed) < count and len(set_aside) < count + MAX_SET_ASIDE:
            batch = ready.pop_for(agent.capabilities, count - len(claimed), handles=agent.handles)
            if not batch:
                break
            for task_id in batch:
                task = self.live.tasks[task_id]
                if task.locks and self._locks_conflict(task.locks):
                    set_aside.append(task)
                else:
                    claimed.append(self._claim_one(agent, task, now, request_id))
        for task in set_aside:
            ready.push(task.id, task.requires, task.priority, task.seq, task_type=task.type)
        return claimed

    def hand_over(self, task: Task, agent: Agent, now: float, request_id: str, **payload: Any) -> Task:
        """Claim ``task`` for ``agent`` as a new attempt, straight from its current ``claimed`` or
        ``running`` one (a hand-off: the caller has ended that attempt). ``payload`` joins the
        ``task.claimed`` event's."""
        return self._claim_one(agent, task, now, request_id, **payload)

    def _claim_one(self, agent: Agent, task: Task, now: float, request_id: str | None, **payload: Any) -> Task:
        task.attempt += 1
        task.agent_id = agent.id
        task.agent_incarnation = agent.incarnation
        task.claim_request_id = request_id
        task.deadline = None
        task.reason = None  # why the last attempt was requeued: a new attempt makes it stale
        self.live.move(task, S.CLAIMED, now, agent=agent.id, attempt=task.attempt, request_id=request_id, **payload)
        key = (task.id, task.attempt)
        attempt = Attempt(task.id, task.attempt, agent.id, agent.incarnation, claimed_at=now, locks=task.locks)
        self.open_attempts[key] = attempt
        self.live.log.attempts.add(attempt)
        self.live.log.new_attempts.add(key)
        agent.busy[key] = now
        if agent.free_slots == 0:
            agent.idle_since = None  # it waits for nothing now
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
        retried request must get again (highest priority first, FIFO within a priority)."""
        found = []
        for task_id, attempt in agent.busy:
            task = self.live.tasks.get(task_id)
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
        """Apply one started/finished/zombie report from ``agent``.

        A finished report frees the attempt's slot whether or not its result still counts. A
        zombie report marks the slot held by a zombie (whatever the task's status): the agent
        gets no more work until it is replaced.

        Returns:
            None if applied (or a repeated start), else a ``Rejection`` naming why it is stale.
        """
        key = (report.task_id, report.attempt)
        if report.kind == "zombie":
            if key in agent.busy:
                agent.zombies.add(key)
                agent.idle_since = None
            return None
        task = self.live.tasks.get(report.task_id)
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
                if report.outcome is AttemptOutcome.COMPLETED:
                    agent.tasks_done += 1
                    self.live.log.agents.add(agent)
        if report.kind == "finished":
            self.release(agent, key, now)
        return rejection

    def _start(self, task: Task, now: float) -> None:
        task.started_at = now
        attempt = self.open_attempts.get((task.id, task.attempt))
        if attempt is not None:
            attempt.started_at = now
            self.live.log.attempts.add(attempt)
        if task.timeout is not None:
            task.deadline = now + task.timeout
            self.timers.add(task.deadline, "timeout", (task.id, task.attempt))
        self.live.move(task, S.RUNNING, now, attempt=task.attempt, agent=task.agent_id)

    def _finish(self, task: Task, report: Report, now: float) -> None:
        outcome = report.outcome or AttemptOutcome.FAILED
        if outcome is AttemptOutcome.COMPLETED:
            if report.children and self.on_split is not None:
                try:
                    self.on_split(task, report.children, now, lambda: self._complete(task, report.result, now))
                except InvalidSplitError as exc:
                    self.attempt_failed(task, AttemptOutcome.PERMANENT_FAILURE, f"InvalidSplitError: {exc}", now)
            else:
                self._complete(task, report.result, now)
        elif outcome is AttemptOutcome.CANCELLED:
            # The handler says it was cancelled, but this attempt was never cancelled here.
            error = report.error or "the handler stopped, reporting a cancellation nobody asked for"
            self.attempt_failed(task, AttemptOutcome.FAILED, error, now)
        else:
            self.attempt_failed(task, outcome, report.error, now)

    def _complete(self, task: Task, result: Any, now: float) -> None:
        self.end_attempt(task, AttemptOutcome.COMPLETED, None, now)
        task.result = result
        task.error = None
        self.live.move(task, S.COMPLETED, now, attempt=task.attempt)

    def heartbeat(self, agent: Agent, held: Iterable[AttemptKey], now: float) -> list[AttemptKey]:
        """Check the attempts ``agent`` says it holds (its lease was just renewed).

        Attempts we believe occupy the agent that it does not list, and that were handed out more
        than a lease ago, were never received: they are lost and requeued.

        Returns:
            The held attempts that are stale (the agent is to stop them).
        """
        held_set = set(held)
        stale = []
        for task_id, attempt in held_set:
            task = self.live.tasks.get(task_id)
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
                task = self.live.tasks.get(key[0])
                if task is not None and task.attempt == key[1] and task.status in ACTIVE:
                    self.lose_attempt(task, now, f"agent '{agent.id}' never received it")
                self.release(agent, key, now)
        return stale

    def abandon(self, agent: Agent, outcome: AttemptOutcome, reason: str, now: float) -> None:
        """``agent`` is gone: each attempt in its slots ends with ``outcome`` (its task retried
        or failed by ``OUTCOME_RULES``) and its slot is freed; its zombies are forgotten."""
        self.live.log.abandoned.extend(agent.busy)
        for key in list(agent.busy):
            task = self.live.tasks.get(key[0])
            if task is not None and task.attempt == key[1] and task.status in ACTIVE:
                self.attempt_failed(task, outcome, f"{outcome.value}: agent '{agent.id}' {reason}", now)
            self.release(agent, key, now)
        agent.zombies.clear()

    # ---------------------------------------------------------------- timers

    def retry_due(self, key: AttemptKey, now: float) -> None:
        """A backoff ended: the task becomes ready if it still waits for that attempt's retry."""
        task = self.live.tasks.get(key[0])
        if task is not None and task.status is S.RETRY_WAIT and task.attempt == key[1]:
            task.not_before = None
            self.live.make_ready(task, now)

    def timeout_due(self, key: AttemptKey, now: float) -> None:
        """A deadline passed: the attempt times out if it is still the one running."""
        task = self.live.tasks.get(key[0])
        if (
            task is not None
            and task.status is S.RUNNING
            and task.attempt == key[1]
            and task.deadline is not None
            and task.deadline <= now
        ):
            self.signal(task, "timed out")
            self.attempt_failed(task, AttemptOutcome.TIMED_OUT, f"timed out after {task.timeout:g}s", now)

    # ---------------------------------------------------------------- ending attempts

    def end_attempt(self, task: Task, outcome: AttemptOutcome, error: str | None, now: float) -> None:
        """Record the outcome of ``task``'s current attempt (its slot stays held)."""
        key = (task.id, task.attempt)
        attempt = self.open_attempts.get(key)
        if attempt is not None and attempt.outcome is None:
            attempt.outcome = outcome
            attempt.error = error
            attempt.finished_at = now
            self.live.log.attempts.add(attempt)
        task.deadline = None
        if self.on_attempt_end is not None:
            self.on_attempt_end(task, now)

    def attempt_failed(self, task: Task, outcome: AttemptOutcome, error: str | None, now: float) -> None:
        """End the current attempt unsuccessfully and decide: retry later, requeue, or give up."""
        self.end_attempt(task, outcome, error, now)
        task.error = error
        rule = OUTCOME_RULES[outcome]
        if not rule.charged:
            task.uncharged += 1
        charged = task.attempt - task.uncharged
        retries_left = rule.retryable and charged <= task.retry.max_retries
        if retries_left and not rule.backoff:
            task.reason = error
            self.live.move(task, S.READY, now, attempt=task.attempt, reason=error)
            self.live.push_ready(task, now)  # held again if its ticket holds it meanwhile
        elif retries_left:
            if outcome is AttemptOutcome.TIMED_OUT:
                # The event says what happened to this attempt; the move below says what comes next.
                self.live.emit(TIMED_OUT_EVENT, task, now, payload={"attempt": task.attempt, "error": error})
            delay = task.retry.delay(task.attempt - 1, self.rng)
            task.not_before = now + delay
            self.live.move(
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
            self.live.move(task, final, now, attempt=task.attempt, error=error, reason=task.reason)

    def lose_attempt(self, task: Task, now: float, reason: str) -> None:
        """The current attempt is lost (``lost: <reason>``): requeue or give up."""
        self.attempt_failed(task, AttemptOutcome.LOST, f"lost: {reason}", now)

    def signal(self, task: Task, reason: str) -> None:
        """Tell the agent running ``task``'s current attempt to stop it (once stored)."""
        if task.agent_id and task.agent_incarnation:
            self.live.log.signals.add(
                CancelSignal(task.agent_id, task.agent_incarnation, task.id, task.attempt, reason)
            )

    def release(self, agent: Agent, key: AttemptKey, now: float) -> None:
        """The attempt's handler ended: free its slot on ``agent`` and close it."""
        agent.zombies.discard(key)
        if agent.busy.pop(key, None) is not None:
            self.close_attempt(key, now)
            if agent.idle_since is None and agent.free_slots > 0 and agent.health in LIVE:
                agent.idle_since = now  # it has had a free slot since now

    def close_attempt(self, key: AttemptKey, now: float) -> None:
        """The attempt's handler is over (or its agent is gone): record it and forget it."""
        attempt = self.open_attempts.pop(key, None)
        if attempt is None:
            return
        self._count_locks(attempt.locks, -1)
        if attempt.outcome is None:
            attempt.outcome = AttemptOutcome.LOST
            attempt.finished_at = now
        attempt.released_at = now
        self.live.log.attempts.add(attempt)


def _stale_reason(task: Task | None, attempt: int) -> str:
    if task is None:
        return "the task is no longer running (it reached a final status)"
    if task.attempt != attempt:
        return f"attempt {attempt} is stale; the current attempt is {task.attempt}"
    return f"the task is {task.status.value}, not running"
