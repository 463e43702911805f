"""The scheduler actor: the one writer of tasks, attempts and agents.

A thin shell around ``TaskGraph`` (decisions), on the durable-singleton shell
(``omoi_ray.actors.durable.DurableWriter``: start-up, ``Store``, ``GroupCommit``, deadline timer, describe).

Rules:
- Every public method applies its decisions to the graph, queues the resulting change set, and
  replies only after ``GroupCommit.sync``: nothing is acknowledged before it is committed.
- Singleton: created by ``omoi_ray.client.runtime`` with a fixed name and namespace, ``get_if_exists``,
  ``num_cpus=0``, ``max_restarts=-1``, detached. The constructor rebuilds memory from the
  database, so a restart carries on where the last committed batch left off.
- It claims the database first (``omoi_ray.actors.durable``) and renews the runtime's lease on it from
  its deadline timer; replaced by a newer process, it exits without committing.
- Idle agents park in ``exchange`` (a long poll) and are handed work as soon as it is ready, in
  the order ``core.ranking`` gives (the same order ``search_agents`` reports); the only timer is
  the graph's next deadline (stale and lease timers included). Nothing here polls.
- Ray reports agent deaths: the scheduler keeps one outstanding ``watch`` call per agent, which
  fails when the agent's process dies.
- What agents report passes one intake (``_intake``) before the graph sees it, whatever agent
  sent it: error text is cleaned, a result no store can hold fails its attempt for good.
- One class per concept, composed here: ``RegistryCalls`` (``scheduler_registry``: search,
  list, stats), ``MessagingCalls`` (``scheduler_messaging``: threads, messages, receipts, live
  delivery, retention), ``HandoffCalls`` (``scheduler_handoffs``: negotiated hand-offs), ``TicketCalls``
  (``scheduler_tickets``: tickets, phases, gates, context). They
  share this actor's graph, change log and group commit, so a handoff's task move and its thread
  outcome commit in one transaction. ``JoinCalls`` (``scheduler_joins``: a join's merge inputs
  and the record of its merge).
- A change set that still cannot be stored never stops the actor: ``GroupCommit`` hands it to
  ``repair_unstorable``, which fails the tasks concerned with their reason recorded, drops tasks
  whose created rows collide with stored ones (their submission is refused to its caller: the
  repair fills ``refused``, which ``submit`` raises), and drops a ticket's change it cannot store,
  reloading the ticket as stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from omoi_ray.actors.durable import DurableWriter, exit_replaced, fire_and_forget, holds_start_error
from omoi_ray.actors.scheduler_handoffs import HandoffCalls
from omoi_ray.actors.scheduler_joins import JoinCalls
from omoi_ray.actors.scheduler_messaging import PRUNE_EVERY, MessagingCalls
from omoi_ray.actors.scheduler_registry import RegistryCalls
from omoi_ray.actors.scheduler_tickets import TicketCalls

from omoi_ray.client.calls import FIRST_DELAY, MAX_DELAY, RETRY_ON
from omoi_ray.core.claims import Rejection, Report
from omoi_ray.core.coordination import LOOP, SYNC, loop_round_ids
from omoi_ray.core.handoff import HandoffStatus
from omoi_ray.core.health import HealthCause
from omoi_ray.core.model import AgentStatus, AttemptOutcome, NewTask, Task
from omoi_ray.core.ranking import dispatch_key
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.core.storable import (
    MAX_ERROR_CHARS,
    MAX_REASON_CHARS,
    check_text,
    clean_text,
    storable_json,
    unstorable_char,
)
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.errors import (
    InvalidArgumentError,
    InvalidCancelError,
    InvalidCoordinationError,
    InvalidSubmissionError,
    OwnershipLostError,
    TaskExistsError,
    TaskNotFoundError,
)
from omoi_ray.naming import LOCKS_NAME, agent_actor_name
from omoi_ray.protocol import ExchangeReply, RuntimeStatus, WaitReply
from omoi_ray.settings import Settings
from omoi_ray.specs.agents import AgentInfo
from omoi_ray.specs.coordination import parse_submission, read_specs
from omoi_ray.specs.tasks import (
    AttemptInfo,
    TaskInfo,
    attempt_info_from_row,
    check_name,
    check_prefix,
    info_from_row,
    info_from_task,
    parse_new_tasks,
    submission_list,
)
from omoi_ray.store.store import Store
from omoi_ray.store.tickets import load_ticket

log = logging.getLogger("omoi_ray.scheduler")



@dataclass(eq=False)
class _Parked:
    agent_id: str
    request_id: str
    future: asyncio.Future[list[Task]]


@dataclass(eq=False)
class _Countdown:
    remaining: int
    future: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def tick(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and not self.future.done():
            self.future.set_result(None)


@holds_start_error
class SchedulerActor(RegistryCalls, MessagingCalls, TicketCalls, HandoffCalls, JoinCalls, DurableWriter[TaskChanges]):
    """The scheduler singleton: a Ray actor (``ray.remote(SchedulerActor)``, started by
    ``omoi_ray.client.runtime``) around a ``TaskGraph``, rebuilt from the database at start-up.

    Its public methods are Ray calls, each replying once its changes are committed. The driver
    API (``submit``, ``get``, ``attempts``, ``wait``, ``cancel``, ``status``, ``events``,
    ``shutdown``) is called by the driver (``Runtime``, ``rt.tasks``, ``rt.events``); the agent
    API (``register``, ``deregister``, ``replace_agent``, ``exchange``) by agents. The registry,
    messaging and hand-off calls come from the classes it composes (see the module rules).

    Args:
        settings: the runtime's settings (database, namespace, leases, limits, long poll).

    Raises:
        OmoiError: start-up failed (the database is not migrated, or owned by another runtime);
            held and raised by every call (``holds_start_error``).
    """

    WRITER = "scheduler"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)  # settings, logging, migration check, store, claim
        self.renew_at = time.time() + settings.owner_lease / 3
        self.graph = TaskGraph(
            lease_ttl=settings.lease_ttl, stale_after=settings.stale_after,
            read_specs=read_specs(settings.payload_max_bytes), result_max_bytes=settings.result_max_bytes,
        )
        snapshot = self.store.load()
        now = time.time()
        self.graph.restore(
            snapshot.tasks,
            snapshot.dependencies,
            snapshot.agents,
            snapshot.open_attempts,
            snapshot.next_seq,
            now,
            threads=snapshot.threads,
            next_message_seq=snapshot.next_message_seq,
            handoffs=snapshot.handoffs,
            tickets=snapshot.tickets.tickets,
            artifacts=snapshot.tickets.artifacts,
            history_seq=snapshot.tickets.history_seq,
            stored_results=snapshot.node_results,
        )
        self.prune_at = now + PRUNE_EVERY
        #: agent name -> drivers parked in ``receive`` for it
        self.receivers: dict[str, set[asyncio.Future[None]]] = {}
        #: messages up to this ``seq`` were stored before this process: addressed to anyone
        self.stored_before = snapshot.next_message_seq - 1
        #: agent name -> the highest ``seq`` addressed to it committed by this process
        self.addressed_up_to: dict[str, int] = {}
        #: message id -> done once the ``send_many`` call posting it has finished (committed or
        #: refused): a call with one of its ids waits, then finds it stored
        self.posting: dict[str, asyncio.Future[None]] = {}
        self.parked: dict[str, _Parked] = {}
        self.handles: dict[str, Any] = {}
        self.locks: Any = None  # the lock manager, found on first need
        self.watches: dict[str, asyncio.Task[None]] = {}
        self.task_waiters: dict[str, list[_Countdown]] = {}
        #: offer id -> futures of ``await_handoff`` calls, resolved once the offer's close commits
        self.handoff_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.submit_lock = asyncio.Lock()
        #: task id -> why its submission was refused after the fact (the backstop dropped it)
        self.refused: dict[str, str] = {}
        self.stopping = False
        self.stats: dict[str, int] = {"exchanges": 0, "claimed": 0, "reports": 0}
        # Re-attach to the agents the database believes alive; those Ray no longer knows are lost.
        for agent in list(self.graph.agents.values()):
            if agent.status is not AgentStatus.ALIVE:
                continue
            try:
                handle = ray.get_actor(agent_actor_name(agent.id), namespace=settings.namespace)
            except ValueError:
                self.graph.agent_lost(agent.id, agent.incarnation, now, "not found after a scheduler restart")
                continue
            self._watch(agent.id, agent.incarnation, handle)
        self._start(self.graph, self.store.writer.tasks, on_unstorable=self._unstorable)
        log.info(
            "scheduler up (%s, %s, owner epoch %d): %d live tasks, %d agents, database %s",
            "restarted" if self.restarted else "new",
            self.claimed.value,
            self.store.fence.owner_epoch,
            len(self.graph.tasks),
            len(self.handles),
            self.store.safe_url,
        )

    def __repr__(self) -> str:
        return f"Scheduler(namespace={self.settings.namespace!r})"

    # ------------------------------------------------------------------ driver API

    async def submit(self, items: Sequence[Any], request_id: str | None = None) -> list[str]:
        """Validate and store a whole submission atomically; return the task ids in order."""
        items = submission_list(items)  # a list of tasks, whoever the caller (not one task, not a string)
        if len(items) > self.settings.max_submission:
            raise InvalidSubmissionError(
                f"a submission holds {len(items)} tasks, over the limit of "
                f"{self.settings.max_submission} (OMOI_MAX_SUBMISSION); split it"
            )
        new = parse_submission(items, self.settings.payload_max_bytes)
        async with self.submit_lock:
            ids = {t.id for t in new if t.id not in self.graph.tasks}
            ids |= {d for t in new for d in t.depends_on if d not in self.graph.tasks}
            keys = {t.idempotency_key for t in new if t.idempotency_key and t.idempotency_key not in self.graph.by_key}
            stored, stored_keys = {}, {}
            if ids or keys:
                await self.commit.sync()
                # A keyed read: done inline, a hop to the database thread would cost more.
                stored, stored_keys = self.store.lookup(ids, keys)
                finished = {d for t in new if t.kind in (SYNC, LOOP) for d in t.depends_on if d in stored}
                if finished:  # a sync's members, a loop's check, that already ended: the node takes their results
                    rows = self.store.task_rows(sorted(finished))
                    for tid, row in rows.items():
                        stored[tid] = dataclasses.replace(stored[tid], result=row["result"])
            await self._refuse_stored_round_ids(new)
            task_ids = self.graph.submit(new, time.time(), stored, stored_keys, request_id=request_id)
            self._after_change()
        await self.commit.sync()
        refused = [(tid, self.refused.pop(tid)) for tid in task_ids if tid in self.refused]
        if refused:
            tid, why = refused[0]
            raise TaskExistsError(f"submission refused, nothing of it was stored: {why}", task_id=tid)
        return task_ids

    async def get(self, task_ids: Sequence[str]) -> list[TaskInfo]:
        """Current state of each task, in order; raise ``TaskNotFoundError`` for unknown ids."""
        await self.commit.sync()
        missing = [tid for tid in task_ids if tid not in self.graph.tasks]
        rows = await self._db(self.store.task_rows, missing) if missing else {}
        unknown = [tid for tid in missing if tid not in rows]
        if unknown:
            raise TaskNotFoundError(_unknown_message(unknown), task_ids=unknown)
        out = []
        for tid in task_ids:
            task = self.graph.tasks.get(tid)
            if task is not None:
                out.append(info_from_task(task))
            else:
                out.append(info_from_row(rows[tid], depends_on=rows[tid]["depends_on"]))
        return out

    async def attempts(self, task_id: str) -> list[AttemptInfo]:
        """Every attempt of one task, read from the database once committed; called by the
        driver (``rt.tasks.attempts``).

        Args:
            task_id: a task id (checked by the driver).

        Returns:
            Its ``AttemptInfo``s, first to last (empty if it was never claimed).

        Raises:
            TaskNotFoundError: no such task, live or stored.
        """
        await self.commit.sync()
        rows = await self._db(self.store.attempt_rows, task_id)
        if not rows and task_id not in self.graph.tasks:
            found = await self._db(self.store.task_rows, [task_id])
            if not found:
                raise TaskNotFoundError(_unknown_message([task_id]), task_ids=[task_id])
        return [attempt_info_from_row(r) for r in rows]

    async def wait(self, task_ids: Sequence[str], timeout: float, prefix: str | None = None) -> WaitReply:
        """Wait up to ``timeout`` seconds for every task to be final; report progress either way.

        Args:
            task_ids: the tasks waited for.
            timeout: seconds to wait at most (0: report at once).
            prefix: an applied pattern's prefix, or None: its ready tasks (ids starting with
                ``prefix + "."``, its loops' later rounds included) count in ``unclaimable`` and
                ``unhandled`` too.

        Returns:
            ``WaitReply``: ``finished`` (``{id: status}`` of the tasks no longer live), ``live``
            (live tasks by status), ``unclaimable`` and ``unhandled`` (only ready tasks among
            ``task_ids`` and the prefix's, never other work of the runtime) and ``held`` (how
            many of those, ``task_ids`` and the prefix's, their ticket holds back).

        Raises:
            TaskNotFoundError: some ids are neither live nor stored (naming them).
            InvalidArgumentError: a prefix that is not a name or holds ``"."``.
        """
        if prefix is not None:
            try:
                check_prefix(prefix)
            except ValueError as exc:
                raise InvalidArgumentError(f"wait: {exc}") from None
        live = [tid for tid in task_ids if tid in self.graph.tasks]
        if live and timeout > 0:
            countdown = _Countdown(len(live))
            for tid in live:
                self.task_waiters.setdefault(tid, []).append(countdown)
            try:
                await asyncio.wait({countdown.future}, timeout=timeout)
            finally:
                for tid in live:
                    waiters = self.task_waiters.get(tid)
                    if waiters and countdown in waiters:
                        waiters.remove(countdown)
                        if not waiters:
                            del self.task_waiters[tid]
        await self.commit.sync()
        counts: dict[str, int] = {}
        gone = []
        for tid in task_ids:
            task = self.graph.tasks.get(tid)
            if task is None:
                gone.append(tid)
            else:
                counts[task.status.value] = counts.get(task.status.value, 0) + 1
        finished: dict[str, str] = {}
        if gone:
            rows = await self._db(self.store.lookup, gone)
            unknown = [tid for tid in gone if tid not in rows[0]]
            if unknown:
                raise TaskNotFoundError(_unknown_message(unknown), task_ids=unknown)
            finished = {tid: rows[0][tid].status.value for tid in gone}
        scope: list[str] = list(task_ids)
        if prefix is not None:
            head = prefix + "."
            scope.extend(tid for tid in self.graph.tasks if tid.startswith(head))
        holds = self.graph.tickets.held
        held = 0
        for tid in set(scope):
            task = self.graph.tasks.get(tid)
            held += bool(task is not None and task.ticket_id and tid in holds.get(task.ticket_id, ()))
        return WaitReply(finished=finished, live=counts, unclaimable=self._unclaimable(scope),
                         unhandled=self._unhandled(scope), held=held)

    async def cancel(self, task_ids: Sequence[Any], reason: str = "cancelled by request") -> dict[str, str]:
        """Cancel tasks, all or nothing; return ``{id: status afterwards}`` in the order given
        (tasks already final are left as they are).

        Every named live task ends ``cancelled`` with ``reason``, whatever the order of the ids;
        only dependents not named become ``upstream_failed``. Raises ``InvalidCancelError`` (an
        id that is not a task name, a list where separate ids belong, a reason that cannot be
        stored) or ``TaskNotFoundError`` (an unknown id); either way nothing is cancelled.
        """
        ids, reason = _cancel_request(task_ids, reason)
        elsewhere = [tid for tid in ids if tid not in self.graph.tasks]
        if elsewhere:
            await self.commit.sync()
            by_id, _ = await self._db(self.store.lookup, elsewhere)
            unknown = [tid for tid in elsewhere if tid not in by_id]
            if unknown:
                raise TaskNotFoundError(_unknown_message(unknown), task_ids=unknown)
        # No await since the check: every id is live in memory or final in the database.
        result = {tid: status.value for tid, status in self.graph.cancel_many(ids, time.time(), reason).items()}
        self._after_change()
        await self.commit.sync()
        rest = [tid for tid in ids if tid not in result]
        if rest:
            by_id, _ = await self._db(self.store.lookup, rest)
            result.update({tid: by_id[tid].status.value for tid in rest})
        return {tid: result[tid] for tid in ids}

    async def group_status(self, prefix: str) -> dict[str, str]:
        """``{task id: status}`` of every task, live or stored, whose id starts with
        ``prefix + "."`` (an applied pattern's items and the rounds its loops created so far),
        by id, once committed; called by the driver (``rt.pattern_result``, ``omoi-ray run``).

        Raises:
            InvalidArgumentError: a prefix that is not a name or holds ``"."``.
        """
        try:
            check_prefix(prefix)
        except ValueError as exc:
            raise InvalidArgumentError(f"group_status: {exc}") from None
        await self.commit.sync()
        out = await self._db(self.store.group_status, prefix)
        head = prefix + "."
        out.update((tid, task.status.value) for tid, task in self.graph.tasks.items() if tid.startswith(head))
        return {tid: out[tid] for tid in sorted(out)}

    async def cancel_group(self, prefix: str, reason: str = "cancelled by request") -> dict[str, str]:
        """Cancel every live task whose id starts with ``prefix + "."`` (an applied pattern's
        tasks, syncs, loops and the rounds its loops created), as one decision.

        Args:
            prefix: the group's id prefix (a task name without ``"."``).
            reason: why, stored as each task's reason (at most ``MAX_REASON_CHARS`` characters).

        Returns:
            ``{id: "cancelled"}`` for each task cancelled, in id order (empty: nothing was live).

        Raises:
            InvalidCancelError: a prefix that is not a name or holds ``"."``, or a reason that
                cannot be stored; nothing is cancelled.
        """
        try:
            check_prefix(prefix)
        except ValueError as exc:
            raise InvalidCancelError(f"cancel_group: {exc}") from None
        _, reason = _cancel_request([prefix], reason)
        head = prefix + "."
        ids = sorted(tid for tid in self.graph.tasks if tid.startswith(head))
        if not ids:
            return {}
        result = {tid: status.value for tid, status in self.graph.cancel_many(ids, time.time(), reason).items()}
        self._after_change()
        await self.commit.sync()
        return result

    async def status(self) -> RuntimeStatus:
        """The runtime at a glance, once committed; called by the driver (``Runtime.status``).

        Returns:
            A ``RuntimeStatus``: ``database`` (masked URL), ``namespace``, ``tasks`` (stored
            count per status), ``agents`` (an ``AgentInfo`` per known agent, by id),
            ``unclaimable`` (ready tasks no live agent has the capabilities for), ``unhandled``
            (ready tasks whose type no live agent with their capabilities handles), ``ready``
            (ready tasks in memory).
        """
        await self.commit.sync()
        counts = await self._db(self.store.status_counts)
        agents = [AgentInfo.of(a) for a in sorted(self.graph.agents.values(), key=lambda a: a.id)]
        return RuntimeStatus(
            database=self.store.safe_url,
            namespace=self.settings.namespace,
            tasks=counts,
            agents=agents,
            unclaimable=self._unclaimable(),
            ready=len(self.graph.ready),
            unhandled=self._unhandled(),
        )

    async def events(self, entity_id: str | None = None, limit: int = 1000) -> list[Any]:
        """The oldest ``limit`` events (of one entity), as ``EventRecord``s, once committed."""
        await self.commit.sync()
        return await self._db(self.store.events_of, entity_id, limit)

    async def shutdown(self) -> None:
        """Release every parked agent (they stop asking) before the actor is killed."""
        self.stopping = True
        for parked in list(self.parked.values()):
            if not parked.future.done():
                parked.future.set_result([])
        self.parked.clear()
        await self.commit.sync()
        try:  # another runtime may take the database at once
            await self._db(self.store.release)
        except Exception as exc:  # noqa: BLE001 - the lease then lapses on its own
            log.warning("could not release the database lease (%s: %s)", type(exc).__name__, exc)

    # ------------------------------------------------------------------ agent API

    async def register(
        self,
        agent_id: str,
        incarnation: str,
        capabilities: list[str],
        capacity: int,
        info: dict[str, Any],
        handle: Any,
        type: str = "agent",  # noqa: A002 - the field's name everywhere
        phase: str | None = None,
        tags: Sequence[str] = (),
        handles: Sequence[str] | None = None,
    ) -> None:
        """Register (or refresh) an agent and start watching its process; called by each agent
        as it starts, and again when ``exchange`` replies ``reregister``.

        A new incarnation of a known agent replaces the old one, whose attempts are lost with it.

        Args:
            agent_id: the agent's name.
            incarnation: hex id of the registering process.
            capabilities: the task types it can run.
            capacity: how many attempts it runs at once.
            info: shown, never interpreted (``{"node", "pid", "host"}``).
            handle: the agent's Ray actor handle (``watch`` is called on it).
            type, phase, tags: what kind of agent it is, the phase it serves, its labels
                (checked by ``AgentSpec`` where the agent was spawned or updated).
            handles: the task types it has handlers for, or None when it has a default handler
                (every type); it is handed only tasks of types it handles.

        Returns:
            None, once the registration is committed.
        """
        known = self.graph.live_agent(agent_id, incarnation)
        self.graph.register_agent(
            agent_id, incarnation, frozenset(capabilities), capacity, time.time(), info,
            type=type, phase=phase, tags=frozenset(tags),
            handles=None if handles is None else frozenset(_names(handles, "handles")),
        )
        if known is None or agent_id not in self.watches:  # the same incarnation again: an update
            self._watch(agent_id, incarnation, handle)
        self._after_change()
        await self.commit.sync()

    async def deregister(self, agent_id: str, incarnation: str) -> None:
        """The agent is leaving on purpose; what it still holds is requeued."""
        if self.graph.agent_stopped(agent_id, incarnation, time.time()):
            self._release_parked(agent_id)
            self._after_change()
        await self.commit.sync()

    async def replace_agent(self, agent_id: str, incarnation: str, reason: str, restarting: bool) -> None:
        """The agent ends its process to free slots held by zombie handlers; what it still holds is
        requeued without being charged (``interrupted``). Idempotent."""
        if self.graph.agent_replaced(agent_id, incarnation, time.time(), reason, restarting=restarting):
            self._release_parked(agent_id)
            self._after_change()
        await self.commit.sync()

    @ray.method(enable_task_events=False)
    async def exchange(
        self,
        agent_id: str,
        incarnation: str,
        request_id: str,
        reports: Sequence[Report],
        held: Sequence[tuple[str, int]] | None,
        wait: float | None,
    ) -> ExchangeReply:
        """Apply an agent's reports, renew its lease, and (unless ``wait`` is None) hand it up to
        its free slots of ready tasks, parking up to ``wait`` seconds when there are none."""
        reports = self._ticket_intake(_intake(reports, self.settings.result_max_bytes))
        if any(r.children for r in reports):
            # Children are judged against storage, then applied with no await in between, under
            # the submission lock: no submission creates one of their ids meanwhile.
            async with self.submit_lock:
                reports = await self._split_intake(reports)
                applied = self._apply_reports(agent_id, incarnation, reports, held)
        else:
            applied = self._apply_reports(agent_id, incarnation, reports, held)
        if applied is None:
            return ExchangeReply(reregister=True)
        agent, rejected, now = applied
        tasks: list[Task] = []
        if wait is not None and not self.stopping:
            parked = self.parked.get(agent_id)
            if parked is not None and parked.request_id != request_id:
                self._release_parked(agent_id)  # this call takes the work instead
            handed = self.graph.handoffs.undelivered(agent, set(map(tuple, held or ())))
            tasks = handed + (self.graph.claimed_by_request(agent, request_id) or self.graph.claim(
                agent, agent.free_slots, now, request_id
            ))
            if not tasks and wait > 0:
                tasks = await self._park(agent_id, request_id, wait)
        self.stats["claimed"] += len(tasks)
        self._after_change()
        await self.commit.sync()
        return ExchangeReply(
            tasks=[self._assignment(t) for t in tasks], rejected=rejected, shutting_down=self.stopping
        )

    # ------------------------------------------------------------------ internals

    def _apply_reports(
        self, agent_id: str, incarnation: str, reports: Sequence[Report], held: Sequence[tuple[str, int]] | None
    ) -> tuple[Any, list[Rejection], float] | None:
        """Renew the agent's lease and apply its reports and heartbeat; None if it must register
        again, else ``(agent, rejections, now)``."""
        now = time.time()
        self.stats["exchanges"] += 1
        self.stats["reports"] += len(reports)
        agent = self.graph.live_agent(agent_id, incarnation)
        if agent is None:
            return None
        self.graph.renew(agent, now)
        rejected: list[Rejection] = []
        for report in reports:
            rejection = self.graph.apply_report(agent, report, now)
            if rejection is not None:
                rejected.append(rejection)
        if held is not None:
            for task_id, attempt in self.graph.heartbeat(agent, held, now):
                rejected.append(Rejection(task_id, attempt, "stop: this attempt no longer counts"))
        return agent, rejected, now

    async def _refuse_stored_round_ids(self, new: Sequence[NewTask]) -> None:
        """Refuse a loop whose later rounds would reuse a stored task's id (its rounds would fail
        to store): every id rounds 2..max_rounds may create is looked up (InvalidCoordinationError)."""
        for task in new:
            if task.kind != LOOP or task.id in self.graph.tasks:
                continue
            body_ids = [b["id"] for b in task.coordination["body"]]
            ids = [i for i in loop_round_ids(task.id, task.coordination["max_rounds"], body_ids) if i not in self.graph.tasks]
            await self.commit.sync()
            stored, _ = self.store.lookup(ids, ()) if ids else ({}, {})
            if stored:
                taken = min(stored)
                raise InvalidCoordinationError(f"loop '{task.id}': round id '{taken}' already names a stored task")

    async def _split_intake(self, reports: Sequence[Report]) -> list[Report]:
        """Completed reports' children as the core takes them (validated ``NewTask``s), or the
        attempt's permanent failure saying why they were refused (a bad field, too many, an id or
        idempotency key already stored)."""
        out = list(reports)
        for i, report in enumerate(out):
            if not report.children:
                continue
            if report.outcome is not AttemptOutcome.COMPLETED:  # a failed attempt's children are dropped
                out[i] = report._replace(children=None)
                continue
            why = None
            try:
                if not isinstance(report.children, list) or len(report.children) > self.settings.max_submission:
                    raise InvalidSubmissionError(
                        f"a split holds more than {self.settings.max_submission} tasks (OMOI_MAX_SUBMISSION)"
                    )
                children = parse_new_tasks(report.children, self.settings.payload_max_bytes)
                ids = {c.id for c in children if c.id not in self.graph.tasks}
                keys = {c.idempotency_key for c in children if c.idempotency_key}
                await self.commit.sync()
                stored, stored_keys = self.store.lookup(ids, keys)
                taken = sorted(stored) + sorted(stored_keys)
                if taken:
                    raise InvalidSubmissionError(f"'{taken[0]}' already names a stored task")
            except InvalidSubmissionError as exc:
                why = str(exc)
            if why is None:
                out[i] = report._replace(children=children)
            else:
                out[i] = report._replace(
                    outcome=AttemptOutcome.PERMANENT_FAILURE, result=None, children=None,
                    error=clean_text(f"InvalidSplitError: split of task '{report.task_id}' refused: {why}",
                                     max_chars=MAX_ERROR_CHARS),
                )
        return out

    async def _park(self, agent_id: str, request_id: str, wait: float) -> list[Task]:
        self._release_parked(agent_id)
        parked = _Parked(agent_id, request_id, asyncio.get_running_loop().create_future())
        self.parked[agent_id] = parked
        self._after_change()  # commit this call's reports while it waits
        try:
            await asyncio.wait({parked.future}, timeout=wait)
        finally:
            if self.parked.get(agent_id) is parked:
                del self.parked[agent_id]
        return parked.future.result() if parked.future.done() else []

    def _release_parked(self, agent_id: str) -> None:
        old = self.parked.pop(agent_id, None)
        if old is not None and not old.future.done():
            old.future.set_result([])

    def _dispatch(self, now: float) -> None:
        """Offer ready tasks to parked agents in the ranking's order (``core.ranking.dispatch_key``:
        what a search ranks first is served first; ties by longest waiting, then id). A stale
        agent stays parked without work (``Claims.claim``); a gone one is released."""
        if not self.parked or not len(self.graph.ready):
            return
        candidates = []
        for agent_id in list(self.parked):
            agent = self.graph.agents.get(agent_id)
            if agent is None or agent.status is not AgentStatus.ALIVE:
                self._release_parked(agent_id)
            else:
                candidates.append(agent)
        if len(candidates) > 1:
            candidates.sort(key=dispatch_key)
        for agent in candidates:
            parked = self.parked[agent.id]
            tasks = self.graph.claim(agent, agent.free_slots, now, parked.request_id)
            if tasks:
                del self.parked[agent.id]
                parked.future.set_result(tasks)
            if not len(self.graph.ready):
                break

    def _after_change(self) -> None:
        """Dispatch, then queue the change log for commit and re-arm the timer (the shell's)."""
        self._dispatch(time.time())
        super()._after_change()

    def _counters(self) -> dict[str, Any]:
        """``describe``'s numbers: the shell's, then calls, claims, reports, live tasks, parked agents."""
        return {
            **super()._counters(),
            **self.stats,
            "live_tasks": len(self.graph.tasks),
            "parked_agents": len(self.parked),
        }

    def _on_committed(self, batch: TaskChanges) -> None:
        """After a commit: wake waiters on finished tasks, tell agents to stop cancelled attempts,
        hand committed messages to their recipients' agents and wake drivers receiving them."""
        if batch.messages:
            try:
                self._deliver(batch)
            except Exception:  # noqa: BLE001 - the messages are stored: agents read them from unread
                log.exception("could not hand %d committed message(s) to their agents", len(batch.messages))
        for tid in batch.finished:
            for countdown in self.task_waiters.pop(tid, ()):
                countdown.tick()
        for offer in batch.handoffs:
            if offer.status is not HandoffStatus.OPEN:
                for future in self.handoff_waiters.pop(offer.id, ()):
                    if not future.done():
                        future.set_result(None)
        by_agent: dict[str, list[tuple[str, int, str]]] = {}
        for signal in batch.signals:
            by_agent.setdefault(signal.agent_id, []).append((signal.task_id, signal.attempt, signal.reason))
        for agent_id, items in by_agent.items():
            handle = self.handles.get(agent_id)
            if handle is not None:
                asyncio.get_running_loop().create_task(fire_and_forget(handle.cancel_attempts.remote(items)))
        if batch.abandoned:
            # Their agent is gone: the locks those attempts held go now, not when leases lapse.
            locks = self._lock_manager()
            if locks is not None:
                holders = [f"{task_id}#{attempt}" for task_id, attempt in batch.abandoned]
                asyncio.get_running_loop().create_task(
                    fire_and_forget(locks.release_all.remote(holders=holders, reason="agent lost"))
                )

    def _unstorable(self, changes: TaskChanges, error: BaseException, round_: int) -> TaskChanges | None:
        """The backstop, called by ``GroupCommit`` when ``changes`` could not be stored."""
        repair = repair_unstorable(self.graph, self.store, changes, error, round_, self.refused)
        if repair is not None:
            self.timers.poke()
        return repair

    def _lock_manager(self) -> Any:
        if self.locks is None:
            try:
                self.locks = ray.get_actor(LOCKS_NAME, namespace=self.settings.namespace)
            except ValueError:
                return None
        return self.locks

    def _next_due(self) -> float:
        due = self.graph.next_due()
        own = min(self.renew_at, self.prune_at)
        return own if due is None else min(due, own)

    def _advance(self, now: float) -> None:
        """Renew the database lease when due, prune closed threads past retention when due,
        and let the graph act on its deadlines."""
        if now >= self.renew_at:
            self._renew_lease(now)
        if now >= self.prune_at:
            self.prune_at = now + PRUNE_EVERY
            asyncio.get_running_loop().create_task(self._prune())
        self.graph.advance(now)

    def _renew_lease(self, now: float) -> None:
        """Renew the runtime's lease on the database (every third of ``owner_lease``), on the
        database thread; a scheduler that was replaced exits instead."""
        lease = self.settings.owner_lease
        self.renew_at = now + lease / 3

        async def renew() -> None:
            try:
                await self._db(self.store.renew_lease, lease)
            except OwnershipLostError as exc:
                exit_replaced(exc)
            except Exception as exc:  # noqa: BLE001 - the database is down: try again soon
                log.warning("could not renew the database lease (%s: %s)", type(exc).__name__, exc)
                self.renew_at = min(self.renew_at, time.time() + min(1.0, lease / 10))
                self.timers.poke()

        asyncio.get_running_loop().create_task(renew())

    def _watch(self, agent_id: str, incarnation: str, handle: Any) -> None:
        self.handles[agent_id] = handle
        old = self.watches.pop(agent_id, None)
        if old is not None:
            old.cancel()
        self.watches[agent_id] = asyncio.get_event_loop().create_task(
            self._watch_agent(agent_id, incarnation, handle)
        )

    async def _watch_agent(self, agent_id: str, incarnation: str, handle: Any) -> None:
        """Park a ``watch`` call on the agent's process and record how this incarnation ended.

        ``RETRY_ON`` (the actor restarting, or this process's view of it not yet updated after a
        restart) is no death: the watch is asked again while the incarnation is live, so a just
        restarted agent is never declared dead (and its attempts charged) for it; an agent that
        never answers again loses its lease. Any other ``RayActorError`` is a death, at once."""
        delay = FIRST_DELAY
        while True:
            try:
                outcome = await handle.watch.remote(incarnation)
                reason = None if outcome == "stopped" else f"restarted as a new incarnation ({outcome})"
                cause = HealthCause.REPLACED
                break
            except RETRY_ON:
                if self.graph.live_agent(agent_id, incarnation) is None:  # it ended another way
                    if self.watches.get(agent_id) is asyncio.current_task():
                        del self.watches[agent_id]
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
            except ray.exceptions.RayActorError as exc:
                reason, cause = f"died ({type(exc).__name__})", HealthCause.RAY_DIED  # dead at once
                break
            except asyncio.CancelledError:
                return
        now = time.time()
        if reason is None:
            changed = self.graph.agent_stopped(agent_id, incarnation, now)
        else:
            changed = self.graph.agent_lost(agent_id, incarnation, now, reason, cause)
            if changed:
                log.warning("agent %s %s; its attempts are requeued", agent_id, reason)
        if changed:
            self._release_parked(agent_id)
            self._after_change()
        if self.watches.get(agent_id) is asyncio.current_task():
            del self.watches[agent_id]

    def _unclaimable(self, only: Sequence[str] | None = None) -> list[tuple[list[str], int]]:
        counts = self.graph.unclaimable(only)
        return [(sorted(req), n) for req, n in sorted(counts.items(), key=lambda kv: sorted(kv[0]))]

    def _unhandled(self, only: Sequence[str] | None = None) -> list[tuple[str, list[str], int]]:
        return sorted((task_type, sorted(req), n) for (task_type, req), n in self.graph.unhandled(only).items())


def _intake(reports: Sequence[Report], result_max_bytes: int) -> Sequence[Report]:
    """Agents' reports as the core may take them, whatever agent sent them: error text cleaned
    (``clean_text``), and a result that cannot be stored (``storable_json``: not storable JSON,
    or over ``result_max_bytes``) turned into a permanent failure of its attempt that says why."""
    out: list[Report] | None = None
    for i, report in enumerate(reports):
        if report.kind != "finished" or (report.error is None and report.result is None):
            continue
        fixed = report
        if report.result is not None and report.outcome is AttemptOutcome.COMPLETED:  # else unused
            problem = _unstorable_result(report.result, result_max_bytes)
            if problem is not None:
                fixed = report._replace(
                    outcome=AttemptOutcome.PERMANENT_FAILURE,
                    result=None,
                    error=f"ResultNotSerializableError: task '{report.task_id}' returned a result "
                    f"that cannot be stored: {problem}",
                )
        if fixed.error is not None:
            error = clean_text(fixed.error, max_chars=MAX_ERROR_CHARS)
            if error != fixed.error:
                fixed = fixed._replace(error=error)
        if fixed is not report:
            if out is None:
                out = list(reports)
            out[i] = fixed
    return reports if out is None else out


def _unstorable_result(result: Any, max_bytes: int) -> str | None:
    """Why ``result`` cannot be stored as a task's result, or None."""
    try:
        storable_json(result, "result", max_bytes=max_bytes, setting="OMOI_RESULT_MAX_BYTES")
    except (ValueError, RecursionError) as exc:
        return str(exc)
    return None


def _cancel_request(task_ids: Any, reason: Any) -> tuple[list[str], str]:
    """The distinct ids and the reason of a cancel call, checked; raise ``InvalidCancelError``."""
    if isinstance(task_ids, str) or not isinstance(task_ids, (list, tuple)):
        raise InvalidCancelError(f"cancel takes task ids as separate arguments, not {task_ids!r}")
    for tid in task_ids:
        if isinstance(tid, (list, tuple, set, frozenset, dict)):
            raise InvalidCancelError(
                f"cancel takes task ids as separate arguments: cancel('a', 'b') or cancel(*ids), "
                f"not a {type(tid).__name__}"
            )
        try:
            check_name(tid, "task id")
        except ValueError as exc:
            raise InvalidCancelError(f"cancel: {exc}") from None
    try:
        reason = check_text(reason, "cancel reason", max_chars=MAX_REASON_CHARS)
    except ValueError as exc:
        raise InvalidCancelError(str(exc)) from None
    return list(dict.fromkeys(task_ids)), reason


def repair_unstorable(
    graph: TaskGraph,
    store: Store,
    changes: TaskChanges,
    error: BaseException,
    round_: int,
    refused: dict[str, str] | None = None,
) -> TaskChanges | None:
    """``changes`` could not be stored (``error``): repair it, each problem's reason recorded,
    and return what to commit in its place, or None to give up (the actor then exits).

    First, rows it creates that collide with stored ones (a task id or idempotency key already
    stored: the database keeps the first, so memory must drop the second): the tasks created by
    that decision leave memory (``TaskGraph.drop_created``: a split's parent or a loop fails, a
    submission is refused through ``refused``, ``{task id: why}``, which ``submit`` raises).
    Then, in the same round, the tasks and tickets whose rows the storable rules find at fault
    (``BatchWriter.unstorable``, ``unstorable_tickets``) in round 0; if they find none, what is
    left after collisions is returned as it is, and without collisions every task and ticket
    ``changes`` touches is failed; round 1 fails every one of them; round 2 gives up. Failed tasks leave memory
    (``fail_unstorable``); a ticket's change is dropped, the ticket reloaded as stored (a
    created one forgotten) and ``ticket.change.refused`` recorded. The repair writes exactly the
    objects memory holds: what a caller reads afterwards is the database's row.
    """
    if round_ >= 2:
        return None
    now = time.time()
    taken = _taken(store, changes)
    if taken:
        log.error(
            "could not store a change set (%s): created task(s) collide with stored ones: %s",
            _one_line(error), "; ".join(sorted(taken.values())[:10]),
        )
        dropped, refusals = graph.drop_created(changes, taken, now)
        if refused is not None:
            refused.update(refusals)
        changes = TaskChanges.merge([changes, graph.take_changes()]).without(dropped)
    touched = {t.id for t in changes.created} | {t.id for t in changes.updated}
    touched |= {a.task_id for a in changes.attempts} | {e.task_id for e in changes.events if e.task_id}
    tickets = {k.id for k in changes.tickets} | {c.ticket_id for c in changes.phase_changes}
    tickets |= {a.ticket_id for a in changes.artifacts} | {g.ticket_id for g in changes.gate_results}
    tickets |= {e.entity_id for e in changes.events if e.entity_type == "ticket"}
    found = store.writer.unstorable(changes) if round_ == 0 else {}
    found_tickets = store.writer.unstorable_tickets(changes) if round_ == 0 else {}
    if found or found_tickets:
        problems, ticket_problems = found, found_tickets
    elif taken:  # the collisions were what could not be stored: the rest is tried as it is
        return changes
    else:
        problems, ticket_problems = dict.fromkeys(touched, _one_line(error)), dict.fromkeys(tickets, _one_line(error))
    if not problems and not ticket_problems:
        return None
    if problems:
        log.error(
            "could not store a change of %d task(s) (%s); failing %s",
            len(touched), _one_line(error), ", ".join(sorted(problems)[:10]),
        )
        graph.fail_unstorable(changes, problems, now)
    repaired = TaskChanges.merge([changes, graph.take_changes()])
    if ticket_problems:
        repaired = repaired.without(ticket_ids=ticket_problems)
        for ticket_id, why in sorted(ticket_problems.items()):
            reason = clean_text(f"could not be stored: {why}", max_chars=MAX_REASON_CHARS)
            log.error("dropped a change of ticket '%s': %s", ticket_id, reason)
            graph.tickets.reload(ticket_id, *load_ticket(store.engine, ticket_id), now)
            graph.tickets.change_refused(ticket_id, reason, now)
        repaired = TaskChanges.merge([repaired, graph.take_changes()])
    return repaired


def _taken(store: Store, changes: TaskChanges) -> dict[str, str]:
    """Tasks ``changes`` creates whose id or idempotency key a stored task already holds, as
    ``{task id: why}`` (a keyed read)."""
    if not changes.created:
        return {}
    ids = {t.id for t in changes.created if unstorable_char(t.id) is None}
    keys = {t.idempotency_key: t.id for t in changes.created
            if t.idempotency_key and unstorable_char(t.idempotency_key) is None}
    try:
        by_id, by_key = store.lookup(ids, set(keys))
    except Exception:  # the other repairs still apply; an outage shows on the next commit
        log.exception("could not look the created tasks of an unstorable change set up")
        return {}
    out = {tid: f"task id '{tid}' already names a stored task" for tid in by_id}
    for key, row in by_key.items():
        out.setdefault(keys[key], f"idempotency key of task '{keys[key]}' already names stored task '{row.id}'")
    return out


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return clean_text(f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": "), max_chars=300)


def _unknown_message(ids: Sequence[str]) -> str:
    shown = ", ".join(f"'{i}'" for i in ids[:5])
    more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
    return f"no task with id {shown}{more}"


def _names(value: Any, what: str) -> list[str]:
    """``value`` as a list of names (a bare string is refused: it is not a list of names)."""
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise InvalidArgumentError(f"{what} must be a list of names, not {value!r:.60}")
    return list(value)
