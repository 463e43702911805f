"""The agent actor: runs handlers for the tasks the scheduler hands it, within its capacity.

Rules:
- At most ``capacity`` handlers run at once: the scheduler never hands out more than the free
  slots it knows of, and a local semaphore holds the line regardless.
- Two loops talk to the scheduler through ``exchange``: the claimer asks for work (long poll)
  whenever a slot is free, carrying whatever reports are pending; the reporter sends reports
  that appear while the claimer is parked. Reports accumulated during a call form the next
  batch, so the number of calls stays low under load.
- Every call carries a request id and is retried with the same id until the scheduler (or the
  lock manager) answers, under the agents' call policy (``omoi_ray.client.calls.AGENT``: never gives
  up, logs while it waits): singleton restarts lose nothing, double nothing, and cost no attempt.
- Handler code never runs on the actor's event loop, which is the agent's control plane
  (claims, reports, heartbeats, lease and lock renewals): sync handlers run on the thread pool,
  and each async handler runs in an event loop of its own on a pool thread. A blocking call in a
  handler therefore stalls only that handler; a watchdog logs a handler loop that stops
  answering, naming the handler and the task.
- Whatever a handler does (return, raise any ``BaseException``, including ``SystemExit``,
  ``KeyboardInterrupt``, ``GeneratorExit``, or an exception whose ``str`` raises) ends its
  attempt with an outcome and readable error text (``clean_text``), on the handler's thread;
  the agent keeps serving. A rejected or cancelled attempt is told to stop (``ctx.cancelled()``;
  async handlers are cancelled, thread-safely).
- A handler's result becomes plain, storable JSON data on the handler's thread too
  (``_plain_result``): a value's own code (a dict subclass's ``items``, ``__iter__``, ``__str__``)
  never runs on the control loop, and a result that cannot be stored, whatever it raises, is a
  permanent failure of its attempt. The scheduler's intake checks it again, as for any agent.
- Hard limit: a handler still running ``OMOI_HARD_TIMEOUT_GRACE`` seconds after it was told to
  stop (timeout, cancellation) is a zombie. The agent reports it (the scheduler shows the slot as
  held by a zombie and gives the agent no more work), stops claiming, lets its other attempts
  finish (each within its own timeout; those without one get the grace period), then tells the
  scheduler it is being replaced (what it still holds is requeued, not charged) and ends its
  process: Ray restarts it if ``max_restarts`` permits, else it is reported stopped.
- The agent's lease is renewed by every call and by a heartbeat every third of the lease.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ray

from omoi_ray.client.calls import AGENT, Step, ask_until, call_async, drive_async
from omoi_ray.core.claims import Report
from omoi_ray.core.model import AttemptOutcome
from omoi_ray.core.storable import clean_text, storable_json
from omoi_ray.errors import OmoiError, PermanentError, ResultNotSerializableError, TaskCancelledError
from omoi_ray.handler.context import BoundHandler, HandlerTable, Split, TaskContext, TaskView
from omoi_ray.handler.inbox import Inbox
from omoi_ray.logs import setup_actor_logging
from omoi_ray.naming import LOCKS_NAME, SCHEDULER_NAME
from omoi_ray.protocol import Assignment, ExchangeReply
from omoi_ray.settings import Settings
from omoi_ray.specs.locks import request_id_for
from omoi_ray.specs.tasks import AgentSpec

log = logging.getLogger("omoi_ray.agent")

TIMED_OUT = "timed out"
#: how often the watchdog pings the event loops of running async handlers (seconds)
WATCHDOG_INTERVAL_S = 0.5
#: a handler loop that has not answered a ping for this long is logged as blocked (seconds)
HANDLER_LOOP_BLOCKED_S = 1.0


@dataclass(eq=False)
class _Running:
    assignment: Assignment
    ctx: TaskContext
    inner: asyncio.Future[Any] | None = None  # the declared locks being acquired (control loop)
    fn: Any = None  # the handler function (named in logs)
    #: an async handler's own event loop and its task (set on the handler's thread)
    loop: asyncio.AbstractEventLoop | None = None
    coro_task: asyncio.Task[Any] | None = None
    ping_sent: float = 0.0  # watchdog: monotonic time of the last ping, and of its answer
    pong: float = 0.0
    blocked_since: float | None = None
    hard_timer: asyncio.TimerHandle | None = None  # set when the attempt is told to stop
    zombie: bool = False  # it ignored its stop past the grace period

    @property
    def handler(self) -> str:
        return "?" if self.fn is None else _handler_name(self.fn)


class AgentActor:
    """One agent: a Ray actor (``ray.remote(AgentActor)``, started by ``omoi_ray.client.agents``)
    that registers with the scheduler, claims tasks matching its capabilities and runs their
    handlers, at most ``capacity`` at once (see the module rules).

    Its public methods are Ray calls: ``ready`` comes from the driver that starts the agent
    (``omoi_ray.client.agents``); ``info``, ``pid`` and ``stop`` from the driver's ``AgentRef``;
    ``watch``, ``cancel_attempts`` and ``deliver`` (committed messages) from the scheduler.

    Args:
        spec: the agent's name, capabilities, capacity and handlers (``AgentSpec``).
        settings: the runtime's settings (namespace, long poll, lease, workspace, grace period).
    """

    def __init__(self, spec: AgentSpec, settings: Settings) -> None:
        setup_actor_logging()
        self.spec = spec
        self.settings = settings
        self.name = spec.name
        self.capabilities = list(spec.capabilities)
        self.tags = list(spec.tags)
        self.capacity = spec.capacity
        # A bad handler must reach the driver as its typed error: Ray keeps only the text of
        # exceptions raised in a constructor, so the error is held and raised by ``ready``.
        self.init_error: OmoiError | None = None
        try:
            self.handlers = HandlerTable(spec.handlers, spec.handler)
        except OmoiError as exc:
            self.init_error = exc
        self.incarnation = uuid.uuid4().hex
        self.workspace_root = settings.resolved_workspace_dir()
        self.pool = ThreadPoolExecutor(max_workers=spec.capacity, thread_name_prefix=f"omoi-{spec.name}")
        self.slots = _Slots(spec.capacity)
        self.running: dict[tuple[str, int], _Running] = {}
        self.outbox: list[Report] = []
        self.unacked: set[tuple[str, int]] = set()
        self.reports_ready = asyncio.Event()
        self.slot_freed = asyncio.Event()
        self.state_changed = asyncio.Event()  # a slot freed, a report call ended, or stopping
        self.reporting = False  # a report call (which also claims) is under way
        self.registered = asyncio.Event()
        self.incarnation_ended = asyncio.Event()  # set when this incarnation stops or is replaced
        self.stopped = asyncio.Event()
        self.stopping = False
        self.draining = False  # a zombie holds a slot: claim nothing more, then replace the process
        self.claimer: asyncio.Task[None] | None = None
        self.last_call = 0.0
        self.renewing: asyncio.Task[None] | None = None  # the heartbeat's lock renewal under way
        self.stats = {"started": 0, "finished": 0, "rejected": 0, "max_running": 0}
        #: committed messages addressed to this agent, read by its handlers (``ctx.inbox``)
        self.inbox = Inbox()
        self.scheduler = ray.get_actor(SCHEDULER_NAME, namespace=settings.namespace)
        self.lock_manager = ray.get_actor(LOCKS_NAME, namespace=settings.namespace)
        self.me = ray.get_runtime_context().current_actor
        self.loops = [] if self.init_error else [asyncio.get_event_loop().create_task(self._main())]

    def __repr__(self) -> str:
        return f"Agent({self.name}, capabilities={self.capabilities}, capacity={self.capacity})"

    # ------------------------------------------------------------------ public methods

    async def ready(self) -> dict[str, Any]:
        """Return once the agent is registered with the scheduler (raise if it cannot start)."""
        if self.init_error is not None:
            raise self.init_error
        await self.registered.wait()
        return {"name": self.name, "incarnation": self.incarnation, "pid": os.getpid()}

    async def watch(self, incarnation: str) -> str:
        """Parked by the scheduler: returns when this incarnation ends; fails if the process dies."""
        if incarnation == self.incarnation:
            await self.incarnation_ended.wait()
        return "stopped" if incarnation == self.incarnation else f"incarnation {self.incarnation}"

    async def cancel_attempts(self, items: list[tuple[str, int, str]]) -> int:
        """Stop the given attempts (sent by the scheduler after a cancel or timeout)."""
        stopped = 0
        for task_id, attempt, reason in items:
            stopped += self._stop_attempt((task_id, attempt), reason)
        return stopped

    @ray.method(enable_task_events=False)
    async def deliver(self, messages: list[Any]) -> int:
        """Put committed messages addressed to this agent in its inbox (sent by the scheduler
        after each commit, in ``seq`` order); returns how many the inbox holds."""
        self.inbox.put_many(messages)
        return len(self.inbox)

    async def info(self) -> dict[str, Any]:
        """What the agent knows of itself; called by the driver (``AgentRef.info``).

        Returns:
            ``{"name", "incarnation" (hex id of this process), "type", "phase", "handles" (task
            types with a handler, None with a default handler), "capabilities",
            "tags", "capacity",
            "running": [(task id, attempt), ...] sorted, "zombies": the running attempts that
            ignored their stop past the grace period, "draining" (bool: claims nothing more),
            "stats": {"started", "finished", "rejected", "max_running"}, "inbox": {"queued",
            "delivered", "dropped"}, "pid"}``.
        """
        return {
            "name": self.name,
            "incarnation": self.incarnation,
            "type": self.spec.type,
            "phase": self.spec.phase,
            "handles": self._handles(),
            "capabilities": self.capabilities,
            "tags": self.tags,
            "capacity": self.capacity,
            "running": sorted(self.running),
            "zombies": sorted(key for key, run in self.running.items() if run.zombie),
            "draining": self.draining,
            "stats": dict(self.stats),
            "inbox": {"queued": len(self.inbox), "delivered": self.inbox.delivered, "dropped": self.inbox.dropped},
            "pid": os.getpid(),
        }

    async def update(
        self, capabilities: list[str] | None, tags: list[str] | None, capacity: int | None
    ) -> dict[str, Any]:
        """Change what this live agent offers, then register again with the same incarnation
        (the scheduler records an ``agent.capabilities.changed`` event only for a real change);
        called by the driver (``AgentRef.update``, which checked the arguments).

        Args:
            capabilities: the new capability names, or None to keep them.
            tags: the new tags, or None to keep them.
            capacity: the new number of slots, or None to keep it. Fewer slots than handlers
                running: the running ones finish, and no new one starts until below the limit.

        Returns:
            What ``info`` returns, once the scheduler committed the registration.
        """
        if capabilities is not None:
            self.capabilities = list(capabilities)
        if tags is not None:
            self.tags = list(tags)
        if capacity is not None and capacity != self.capacity:
            self.capacity = capacity
            old, self.pool = self.pool, ThreadPoolExecutor(max_workers=capacity, thread_name_prefix=f"omoi-{self.name}")
            old.shutdown(wait=False)  # its running handlers finish on their threads
            self.slots.resize(capacity)
        await self.registered.wait()
        await self._register()
        self.state_changed.set()  # more slots: the claimer asks for work
        return await self.info()

    async def pid(self) -> int:
        """The actor's process id on its node; called by the driver (``AgentRef.pid``)."""
        return os.getpid()

    async def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Leave gracefully: stop claiming, let running handlers finish (cancelling them after
        ``timeout`` seconds), report, and deregister. Whatever is left is requeued. Zombie
        handlers (see the module rules) are not waited for."""
        self.stopping = True
        self.slot_freed.set()
        self.state_changed.set()
        deadline = time.monotonic() + timeout
        while self._live_runs() and time.monotonic() < deadline:
            self.slot_freed.clear()
            try:
                await asyncio.wait_for(self.slot_freed.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        for key in list(self.running):
            self._stop_attempt(key, "agent stopping")
        reports = self._take_reports()
        if reports:
            await self._exchange(reports, wait=None)
        await self._call("deregister", self.name, self.incarnation)
        self.stopped.set()
        self.incarnation_ended.set()
        for task in self.loops:
            task.cancel()
        return dict(self.stats)

    # ------------------------------------------------------------------ loops

    async def _main(self) -> None:
        await self._register()
        self.claimer = asyncio.get_running_loop().create_task(self._guard(self._claimer, "claimer"))
        self.loops += [
            self.claimer,
            asyncio.get_running_loop().create_task(self._guard(self._reporter, "reporter")),
            asyncio.get_running_loop().create_task(self._guard(self._heartbeat, "heartbeat")),
            asyncio.get_running_loop().create_task(self._guard(self._watchdog, "watchdog")),
        ]

    async def _guard(self, body: Any, what: str) -> None:
        """Keep a loop alive across unexpected errors (logged, then retried after a pause)."""
        pause = 0.1
        while not self.stopped.is_set():
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a loop must survive anything but cancellation
                log.exception("agent %s: %s loop failed; restarting it in %.1fs", self.name, what, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _register(self) -> None:
        info = {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "host": socket.gethostname()}
        await self._call(
            "register", self.name, self.incarnation, self.capabilities, self.capacity, info, self.me,
            self.spec.type, self.spec.phase, self.tags, self._handles(),
        )
        self.registered.set()

    def _handles(self) -> list[str] | None:
        """The task types this agent is handed: those with a handler, or None (every type) when
        it has a default handler (``spec.handler``)."""
        return None if self.spec.handler is not None else sorted(self.spec.handlers)

    async def _claimer(self) -> None:
        """Park on the scheduler for work while slots are free and nothing else will ask for it."""
        while not self.stopping and not self.draining:
            if self._free_slots() <= 0 or self.reporting or self.outbox:
                self.state_changed.clear()
                if self._free_slots() <= 0 or self.reporting or self.outbox:
                    await self.state_changed.wait()
                continue
            reply = await self._exchange([], wait=self.settings.long_poll)
            if reply is not None:
                self._start_all(reply)
                if reply.shutting_down:
                    await asyncio.sleep(self.settings.long_poll)  # the runtime is going away

    async def _reporter(self) -> None:
        """Send reports as they appear, and take the next tasks in the same call's reply."""
        while not self.stopped.is_set():
            await self.reports_ready.wait()
            self.reports_ready.clear()
            if self.running and self.settings.report_linger > 0:
                # Handlers finishing together share one call (and a start shares it with its end).
                await asyncio.sleep(self.settings.report_linger)
            reports = self._take_reports()
            if not reports:
                continue
            self.reporting = True
            try:
                reply = await self._exchange(reports, wait=None if self.stopping or self.draining else 0.0)
            finally:
                self.reporting = False
                self.state_changed.set()
            if reply is not None:
                self._start_all(reply)

    def _start_all(self, reply: ExchangeReply) -> None:
        for assignment in reply.tasks:
            self._start(assignment)

    def _free_slots(self) -> int:
        return self.capacity - len(self.running)

    def _live_runs(self) -> list[_Running]:
        """Running attempts that are not zombies."""
        return [run for run in self.running.values() if not run.zombie]

    async def _heartbeat(self) -> None:
        """Renew the agent's lease whenever no call did for a third of it (so the scheduler never
        hears nothing for longer than that: it counts two missed heartbeats as ``stale``), and the
        leases of the locks its running attempts hold every third of the shorter lease."""
        lease = self.settings.lease_ttl / 3
        interval = min(self.settings.lease_ttl, self.settings.lock_ttl) / 3
        next_locks = time.monotonic() + interval
        while not self.stopped.is_set():
            now = time.monotonic()
            await asyncio.sleep(max(0.01, min(self.last_call + lease, next_locks) - now))
            if time.monotonic() - self.last_call >= lease * 0.99:
                await self._exchange(self._take_reports(), wait=None)
            if time.monotonic() < next_locks:
                continue
            next_locks = time.monotonic() + interval
            holders = [run.ctx.holder for run in self.running.values() if run.ctx.took_locks]
            if holders and (self.renewing is None or self.renewing.done()):
                # its own task: a lock manager that is restarting never delays the agent's lease
                self.renewing = asyncio.get_running_loop().create_task(self._renew_locks(holders))

    async def _renew_locks(self, holders: list[str]) -> None:
        try:
            await self._call_locks("renew_all", holders=holders)
        except Exception:  # noqa: BLE001 - the next beat tries again; leases outlast a miss
            log.warning("agent %s: lock renewal failed", self.name, exc_info=True)

    # ------------------------------------------------------------------ talking to the scheduler

    async def _exchange(self, reports: list[Report], wait: float | None) -> ExchangeReply | None:
        request_id = uuid.uuid4().hex
        held = [*self.running, *self.unacked]
        reply: ExchangeReply = await self._call(
            "exchange", self.name, self.incarnation, request_id, reports, held, wait
        )
        self.last_call = time.monotonic()
        for report in reports:
            if report.kind == "finished":
                self.unacked.discard((report.task_id, report.attempt))
        if reply.reregister:
            if not self.draining:  # a draining agent is about to end its process anyway
                await self._reregister()
            return None
        for rejection in reply.rejected:
            self.stats["rejected"] += 1
            self._stop_attempt((rejection.task_id, rejection.attempt), rejection.reason)
        return reply

    async def _reregister(self) -> None:
        """The scheduler no longer knows this incarnation (it declared us lost): start afresh."""
        log.warning("agent %s: the scheduler does not know incarnation %s; registering again", self.name, self.incarnation)
        for key in list(self.running):
            self._stop_attempt(key, "the agent was declared lost")
        self.outbox.clear()
        self.unacked.clear()
        self.incarnation = uuid.uuid4().hex
        old, self.incarnation_ended = self.incarnation_ended, asyncio.Event()
        old.set()
        await self._register()

    async def _call(self, method: str, *args: Any) -> Any:
        """Call the scheduler, retrying with the same arguments until it answers (the agents'
        call policy); raises the scheduler's own ``OmoiError`` as itself."""
        return await call_async(
            lambda: getattr(self.scheduler, method).remote(*args),
            policy=AGENT, what=f"the scheduler (called by agent {self.name})", refresh=self._refresh_scheduler,
        )

    def _refresh_scheduler(self) -> Any:
        """Look the scheduler up again by name (its old actor is gone); None while there is none."""
        try:
            self.scheduler = ray.get_actor(SCHEDULER_NAME, namespace=self.settings.namespace)
        except ValueError:
            return None  # the policy keeps trying, and logs while it waits
        return self.scheduler

    def _refresh_locks(self) -> Any:
        """``_refresh_scheduler`` for the lock manager."""
        try:
            self.lock_manager = ray.get_actor(LOCKS_NAME, namespace=self.settings.namespace)
        except ValueError:
            return None
        return self.lock_manager

    # ------------------------------------------------------------------ running attempts

    def _start(self, assignment: Assignment) -> None:
        key = (assignment.task_id, assignment.attempt)
        if key in self.running or key in self.unacked:
            return  # a repeated delivery of an attempt we already have
        workspace = self.workspace_root / assignment.task_id / f"attempt-{assignment.attempt}"
        ctx = TaskContext(
            task_id=assignment.task_id,
            attempt=assignment.attempt,
            agent_id=self.name,
            workspace_path=workspace,
            timeout=assignment.timeout,
            depends_on=assignment.depends_on,
            _scheduler=self.scheduler,
            _lock_manager=self.lock_manager,
            holder=f"{assignment.task_id}#{assignment.attempt}",
            handoff=assignment.handoff,
            ticket=assignment.ticket_context,
            inbox=self.inbox,
        )
        run = _Running(assignment, ctx)
        self.running[key] = run
        self.stats["max_running"] = max(self.stats["max_running"], len(self.running))
        asyncio.get_running_loop().create_task(self._run(run))

    async def _run(self, run: _Running) -> None:
        a, ctx = run.assignment, run.ctx
        key = (a.task_id, a.attempt)
        loop = asyncio.get_running_loop()
        async with self.slots:
            self.stats["started"] += 1
            self._report(Report("started", a.task_id, a.attempt))
            timer = loop.call_later(a.timeout, self._stop_attempt, key, TIMED_OUT) if a.timeout else None
            outcome, result, error = AttemptOutcome.FAILED, None, None
            try:
                bound = self.handlers.for_type(a.type)
                run.fn = bound.fn
                view = TaskView.of(a)
                if a.locks:
                    ctx.took_locks = True
                    run.inner = asyncio.ensure_future(self._task_locks(a, ctx))
                    if ctx.cancelled():
                        run.inner.cancel()
                    ctx.locks.extend(await run.inner)
                    run.inner = None
                # Off the control loop; whatever the handler does comes back as an outcome, and
                # its result as plain JSON data.
                outcome, result, error = await loop.run_in_executor(
                    self.pool, _call_handler, bound, view, ctx, run, self.name, self.settings.result_max_bytes
                )
            except PermanentError as exc:
                outcome, error = AttemptOutcome.PERMANENT_FAILURE, _describe(exc)
            except (asyncio.CancelledError, TaskCancelledError) as exc:
                outcome, error = AttemptOutcome.CANCELLED, ctx.cancel_reason or _describe(exc)
            except Exception as exc:  # any error here is the attempt's outcome
                log.warning("agent %s: task %s attempt %d failed", self.name, a.task_id, a.attempt, exc_info=True)
                outcome, error = AttemptOutcome.FAILED, _describe(exc)
            finally:
                if timer is not None:
                    timer.cancel()
                if run.hard_timer is not None:
                    run.hard_timer.cancel()
                if ctx.took_locks:
                    await self._release_locks(ctx)
            if ctx.cancel_reason == TIMED_OUT:
                # A result that arrives after the deadline does not count.
                outcome, result, error = AttemptOutcome.TIMED_OUT, None, f"timed out after {a.timeout:g}s"
        del self.running[key]
        self.unacked.add(key)
        self.stats["finished"] += 1
        children = ctx.split_children if outcome is AttemptOutcome.COMPLETED and ctx.split_children else None
        self._report(Report("finished", a.task_id, a.attempt, outcome, result, error, children))
        self.slot_freed.set()
        self.state_changed.set()

    async def _task_locks(self, a: Assignment, ctx: TaskContext) -> list[Any]:
        """The task's declared locks, before its handler runs (waiting no longer than its timeout):
        a long poll asked again with the same request id until granted."""
        locks, request_id = [list(lock) for lock in a.locks], request_id_for(f"task:{ctx.holder}")
        reply = await drive_async(ask_until(
            Step(lambda: self.lock_manager.acquire.remote(
                ctx.holder, locks, ttl=self.settings.lock_ttl, wait=a.timeout, request_id=request_id,
                task_id=a.task_id, agent_id=self.name,
            ), policy=AGENT, what=f"the lock manager (called by agent {self.name})", refresh=self._refresh_locks),
            lambda reply: reply.granted,
        ))
        return list(reply.grants)

    async def _release_locks(self, ctx: TaskContext) -> None:
        """Whatever the attempt's outcome: give back every lock it took."""
        try:
            await self._call_locks("release_all", holder=ctx.holder, reason="attempt ended")
        except Exception:  # noqa: BLE001 - they expire anyway; never fail the attempt for this
            log.warning("agent %s: could not release the locks of %s", self.name, ctx.holder, exc_info=True)

    async def _call_locks(self, method: str, **kwargs: Any) -> Any:
        """Call the lock manager under the agents' call policy (like ``_call``)."""
        return await call_async(
            lambda: getattr(self.lock_manager, method).remote(**kwargs),
            policy=AGENT, what=f"the lock manager (called by agent {self.name})", refresh=self._refresh_locks,
        )

    def _stop_attempt(self, key: tuple[str, int], reason: str) -> int:
        """Tell an attempt to stop (on the control loop); past the grace period it is a zombie."""
        run = self.running.get(key)
        if run is None:
            return 0
        run.ctx._cancel(reason)
        if run.inner is not None and not run.inner.done():
            run.inner.cancel()
        handler_loop, coro_task = run.loop, run.coro_task
        if handler_loop is not None and coro_task is not None:
            try:
                handler_loop.call_soon_threadsafe(coro_task.cancel)
            except RuntimeError:
                pass  # its loop is closed: the handler already ended
        if run.hard_timer is None and not self.stopping:
            run.hard_timer = asyncio.get_running_loop().call_later(
                self.settings.hard_timeout_grace, self._hard_limit, run
            )
        return 1

    # ------------------------------------------------------------------ the hard limit

    def _hard_limit(self, run: _Running) -> None:
        """The handler ignored its stop for the whole grace period: it is a zombie."""
        a = run.assignment
        if self.running.get((a.task_id, a.attempt)) is not run or run.zombie or self.stopping:
            return
        run.zombie = True
        log.error(
            "agent %s: handler %s of task %s attempt %d ignored '%s' for %gs (OMOI_HARD_TIMEOUT_GRACE); "
            "its slot is held by a zombie: the agent stops claiming, lets its other attempts finish, "
            "then has its process replaced",
            self.name, run.handler, a.task_id, a.attempt, run.ctx.cancel_reason,
            self.settings.hard_timeout_grace,
        )
        self._report(Report("zombie", a.task_id, a.attempt))
        self.slot_freed.set()
        self.state_changed.set()
        if not self.draining:
            self.draining = True
            self.loops.append(asyncio.get_running_loop().create_task(self._replace()))

    async def _replace(self) -> None:
        """Drain, then end this process so the slots zombies hold are truly freed."""
        patience = time.monotonic() + self.settings.hard_timeout_grace  # for attempts without a timeout
        while not self.stopping and any(run.zombie for run in self.running.values()):
            self.slot_freed.clear()
            waiting = [
                run for run in self._live_runs()
                if run.assignment.timeout is not None or time.monotonic() < patience
            ]
            if not waiting:
                break
            untimed = any(run.assignment.timeout is None for run in waiting)
            try:
                await asyncio.wait_for(
                    self.slot_freed.wait(), max(0.0, patience - time.monotonic()) if untimed else None
                )
            except TimeoutError:
                pass
        if self.stopping:
            return  # stop() deregisters and the actor is ended anyway
        zombies = [run for run in self.running.values() if run.zombie]
        if not zombies:
            # Every zombie came back after all (and its slot was freed): no need to replace.
            log.warning("agent %s: its zombie handlers ended by themselves; claiming again", self.name)
            self.draining = False
            if self.claimer is None or self.claimer.done():  # else it carries on claiming
                self.claimer = asyncio.get_running_loop().create_task(self._guard(self._claimer, "claimer"))
                self.loops.append(self.claimer)
            self.state_changed.set()
            return
        restarting = self._restart_permitted()
        reason = (
            f"replaced its process to free {len(zombies)} slot(s) held by zombie handler(s) "
            f"({', '.join(f'{r.handler} on {r.assignment.task_id}#{r.assignment.attempt}' for r in zombies)})"
        )
        try:
            reports = self._take_reports()
            if reports:
                await self._exchange(reports, wait=None)
            await self._call("replace_agent", self.name, self.incarnation, clean_text(reason), restarting)
        finally:
            log.error(
                "agent %s: %s; %s", self.name, reason,
                "Ray restarts it" if restarting else "it will not restart (max_restarts is used up): stopped",
            )
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1 if restarting else 0)

    def _restart_permitted(self) -> bool:
        """Whether Ray restarts this actor when its process ends (``max_restarts`` not used up).
        Never raises: it is asked on the way out (``times_restarted``)."""
        limit = self.spec.max_restarts
        if limit < 0:
            return True
        if limit == 0:
            return False
        # here, not at the top: the module brings the store, which agents otherwise never load
        from omoi_ray.actors.durable import times_restarted

        used = times_restarted()
        if used is None:
            # unknown: assume the restarts are used up, as if restarted before; the scheduler
            # is then told this agent does not come back and frees its tasks now, rather than
            # waiting for a restart that might not come
            used = limit
        return used < limit

    # ------------------------------------------------------------------ the watchdog

    async def _watchdog(self) -> None:
        """Ping the event loops of running async handlers; log one that stops answering (a
        blocking call inside an async handler), naming the handler and the task."""
        while not self.stopped.is_set():
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            now = time.monotonic()
            for run in list(self.running.values()):
                handler_loop = run.loop
                if handler_loop is None:
                    continue
                a = run.assignment
                if run.ping_sent > run.pong:  # the last ping is unanswered
                    if run.blocked_since is None and now - run.ping_sent >= HANDLER_LOOP_BLOCKED_S:
                        run.blocked_since = run.ping_sent
                        log.warning(
                            "agent %s: the event loop of async handler %s (task %s attempt %d) has not "
                            "answered for %.1fs: a blocking call inside an async handler (time.sleep, a "
                            "synchronous client) holds it; its cancellation and timeout wait until it returns",
                            self.name, run.handler, a.task_id, a.attempt, now - run.ping_sent,
                        )
                    continue
                if run.blocked_since is not None:
                    log.warning(
                        "agent %s: async handler %s (task %s attempt %d) answers again after %.1fs blocked",
                        self.name, run.handler, a.task_id, a.attempt, run.pong - run.blocked_since,
                    )
                    run.blocked_since = None
                run.ping_sent = now
                try:
                    handler_loop.call_soon_threadsafe(_pong, run)
                except RuntimeError:
                    pass  # its loop is closed: the handler just ended

    def _report(self, report: Report) -> None:
        self.outbox.append(report)
        self.reports_ready.set()

    def _take_reports(self) -> list[Report]:
        reports, self.outbox = self.outbox, []
        return reports


class _Slots:
    """The agent's own limit on handlers running at once (``async with``), resizable while
    handlers run (``AgentRef.update``): fewer slots make new handlers wait until enough end."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.freed = asyncio.Event()

    def resize(self, limit: int) -> None:
        """Allow ``limit`` handlers at once from now on."""
        self.limit = limit
        self.freed.set()

    async def __aenter__(self) -> None:
        while self.used >= self.limit:
            self.freed.clear()
            await self.freed.wait()
        self.used += 1

    async def __aexit__(self, *exc: object) -> None:
        self.used -= 1
        self.freed.set()


def _describe(exc: BaseException) -> str:
    """``Type: message`` of any exception, as storable text (even if its ``str`` raises)."""
    name = clean_text(type(exc).__name__, max_chars=200)
    text = clean_text(exc)
    return clean_text(f"{name}: {text}") if text else name


def _handler_name(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return clean_text(f"{module}:{name}", max_chars=200)


def _pong(run: _Running) -> None:
    run.pong = time.monotonic()


def _call_handler(
    bound: BoundHandler, view: TaskView, ctx: TaskContext, run: _Running, agent: str, max_bytes: int
) -> tuple[AttemptOutcome, Any, str | None]:
    """Run one handler to its end on a pool thread and return ``(outcome, result, error)``,
    ``result`` as plain JSON data (``_plain_result``).

    Never raises: any ``BaseException`` the handler lets out (or that describing it raises)
    becomes the attempt's outcome with readable error text. Its result is made plain here too,
    so code of the result's own (``items``, ``__iter__``, ``__str__``) runs on this thread and
    never on the agent's control loop.
    """
    try:
        outcome, value, error = _outcome_of_handler(bound, view, ctx, run, agent)
        if outcome is AttemptOutcome.COMPLETED and isinstance(value, Split):
            try:
                ctx.split(value.children)
            except ValueError as exc:  # a bad child: the handler's own mistake, not retried
                return AttemptOutcome.PERMANENT_FAILURE, None, _describe(exc)
            value = value.result
        if outcome is not AttemptOutcome.COMPLETED:
            return outcome, None, error
        try:
            return outcome, _plain_result(view.id, value, max_bytes), None
        except ResultNotSerializableError as exc:
            return AttemptOutcome.PERMANENT_FAILURE, None, _describe(exc)
    except BaseException as exc:  # noqa: BLE001 - even describing (or logging) the error failed
        return AttemptOutcome.FAILED, None, f"the handler ended with a {type(exc).__name__} that could not be described"


def _plain_result(task_id: str, value: Any, max_bytes: int) -> Any:
    """A plain copy of a handler's result (dicts, lists, str, int, float, bool, None) that
    every store can hold: ``storable_json`` (as the scheduler's intake checks), of at most
    ``max_bytes`` bytes (``OMOI_RESULT_MAX_BYTES``), read back. Raises
    ``ResultNotSerializableError`` (a permanent failure) saying why for anything else, including
    any ``BaseException`` the value's own methods raise and a ``RecursionError``."""
    try:
        return json.loads(storable_json(value, "result", max_bytes=max_bytes, setting="OMOI_RESULT_MAX_BYTES"))
    except ValueError as exc:  # names the part of the result in error, or its size
        problem = clean_text(exc)
    except BaseException as exc:  # noqa: BLE001 - the result's own code raised (or recursed)
        problem = f"reading it raised {_describe(exc)}"
    raise ResultNotSerializableError(f"task '{task_id}' returned a result that cannot be stored: {problem}")


def _outcome_of_handler(
    bound: BoundHandler, view: TaskView, ctx: TaskContext, run: _Running, agent: str
) -> tuple[AttemptOutcome, Any, str | None]:
    try:
        value = _run_coroutine(bound, view, ctx, run) if bound.is_async else bound.call(view, ctx)
        return AttemptOutcome.COMPLETED, value, None
    except PermanentError as exc:
        return AttemptOutcome.PERMANENT_FAILURE, None, _describe(exc)
    except (asyncio.CancelledError, TaskCancelledError) as exc:
        if ctx.cancelled():
            return AttemptOutcome.CANCELLED, None, ctx.cancel_reason or _describe(exc)
        error = f"{_describe(exc)} (raised by the handler itself: nobody cancelled this attempt)"
        _log_raised(agent, run, view, error, exc)
        return AttemptOutcome.FAILED, None, error
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt, ...: the attempt's outcome
        error = _describe(exc)
        _log_raised(agent, run, view, error, exc)
        return AttemptOutcome.FAILED, None, error


def _log_raised(agent: str, run: _Running, view: TaskView, error: str, exc: BaseException) -> None:
    # Logging must never change an attempt's outcome: a traceback holding a lone surrogate makes
    # the log stream's encoder raise (and logging's own error report with it).
    try:
        log.warning(
            "agent %s: handler %s of task %s attempt %d raised %s", agent, run.handler, view.id, view.attempt,
            error, exc_info=exc,
        )
    except Exception:  # noqa: BLE001
        try:
            log.warning("agent %s: handler %s of task %s attempt %d raised %s (traceback not printable)",
                        agent, run.handler, view.id, view.attempt, error)
        except Exception:  # noqa: BLE001
            pass


def _run_coroutine(bound: BoundHandler, view: TaskView, ctx: TaskContext, run: _Running) -> Any:
    """Run an async handler in an event loop of its own (on this pool thread) and return its
    value. Cancellation reaches it through ``run.loop``/``run.coro_task`` (thread-safe)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        task = loop.create_task(bound.call(view, ctx))
        run.coro_task, run.loop = task, loop
        if ctx.cancelled():  # stopped before the control loop could see the handler's loop
            task.cancel()
        return loop.run_until_complete(task)
    finally:
        run.loop = None
        _close_loop(loop)
        asyncio.set_event_loop(None)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the handler left running (waiting a little for it), then close the loop."""
    try:
        leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            loop.run_until_complete(asyncio.wait(leftover, timeout=1.0))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except BaseException:  # whatever the leftovers do, the loop is closed
        log.debug("closing a handler's event loop failed", exc_info=True)
    finally:
        loop.close()
