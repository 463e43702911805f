"""The agent actor: runs handlers for the tasks the scheduler hands it, within its capacity.

Rules:
- At most ``capacity`` handlers run at once: the scheduler never hands out more than the free
  slots it knows of, and a local semaphore holds the line regardless.
- Two loops talk to the scheduler through ``exchange``: the claimer asks for work (long poll)
  whenever a slot is free, carrying whatever reports are pending; the reporter sends reports
  that appear while the claimer is parked. Reports accumulated during a call form the next
  batch, so the number of calls stays low under load.
- Every call carries a request id and is retried with the same id until the scheduler (or the
  lock manager) answers, under the agents' call policy (``omoi_ray.calls.AGENT``: never gives
  up, logs while it waits): singleton restarts lose nothing, double nothing, and cost no attempt.
- A handler exception never kills the agent; it becomes the attempt's outcome. A rejected or
  cancelled attempt is told to stop (``ctx.cancelled()``; async handlers are cancelled).
- The agent's lease is renewed by every call and by a heartbeat every third of the lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ray

from omoi_ray.calls import AGENT, call_async
from omoi_ray.core.model import AttemptOutcome
from omoi_ray.core.task_graph import Report
from omoi_ray.errors import OmoiError, PermanentError, ResultNotSerializableError, TaskCancelledError
from omoi_ray.naming import LOCKS_NAME, SCHEDULER_NAME
from omoi_ray.logs import setup_actor_logging
from omoi_ray.handlers import HandlerTable, TaskContext, TaskView, acquire_async
from omoi_ray.lock_specs import request_id_for
from omoi_ray.protocol import Assignment, ExchangeReply
from omoi_ray.settings import Settings
from omoi_ray.specs import AgentSpec, json_size

log = logging.getLogger("omoi_ray.agent")

TIMED_OUT = "timed out"


@dataclass(eq=False)
class _Running:
    assignment: Assignment
    ctx: TaskContext
    inner: asyncio.Future[Any] | None = None


class AgentActor:
    def __init__(self, spec: AgentSpec, settings: Settings) -> None:
        setup_actor_logging()
        self.spec = spec
        self.settings = settings
        self.name = spec.name
        self.capabilities = list(spec.capabilities)
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
        self.slots = asyncio.Semaphore(spec.capacity)
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
        self.last_call = 0.0
        self.renewing: asyncio.Task[None] | None = None  # the heartbeat's lock renewal under way
        self.stats = {"started": 0, "finished": 0, "rejected": 0, "max_running": 0}
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

    async def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "incarnation": self.incarnation,
            "capabilities": self.capabilities,
            "capacity": self.capacity,
            "running": sorted(self.running),
            "stats": dict(self.stats),
            "pid": os.getpid(),
        }

    async def pid(self) -> int:
        return os.getpid()

    async def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Leave gracefully: stop claiming, let running handlers finish (cancelling them after
        ``timeout`` seconds), report, and deregister. Whatever is left is requeued."""
        self.stopping = True
        self.slot_freed.set()
        self.state_changed.set()
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
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
        self.loops += [
            asyncio.get_running_loop().create_task(self._guard(self._claimer, "claimer")),
            asyncio.get_running_loop().create_task(self._guard(self._reporter, "reporter")),
            asyncio.get_running_loop().create_task(self._guard(self._heartbeat, "heartbeat")),
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
            "register", self.name, self.incarnation, self.capabilities, self.capacity, info, self.me
        )
        self.registered.set()

    async def _claimer(self) -> None:
        """Park on the scheduler for work while slots are free and nothing else will ask for it."""
        while not self.stopping:
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
                reply = await self._exchange(reports, wait=None if self.stopping else 0.0)
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

    async def _heartbeat(self) -> None:
        """Renew the agent's lease (if no call did lately) and the leases of the locks its
        running attempts hold."""
        lease = self.settings.lease_ttl / 3
        interval = min(self.settings.lease_ttl, self.settings.lock_ttl) / 3
        while not self.stopped.is_set():
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_call >= lease * 0.9:
                await self._exchange(self._take_reports(), wait=None)
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
                view = TaskView(a.task_id, a.type, a.payload, a.attempt, a.priority, a.ticket_id, a.phase, a.depends_on)
                if a.locks:
                    ctx.took_locks = True
                    run.inner = asyncio.ensure_future(self._task_locks(a, ctx))
                    if ctx.cancelled():
                        run.inner.cancel()
                    ctx.locks.extend(await run.inner)
                    run.inner = None
                if bound.is_async:
                    run.inner = asyncio.ensure_future(bound.call(view, ctx))
                    if ctx.cancelled():
                        run.inner.cancel()
                    value = await run.inner
                else:
                    value = await loop.run_in_executor(self.pool, bound.call, view, ctx)
                result = self._check_result(a.task_id, value)
                outcome = AttemptOutcome.COMPLETED
            except PermanentError as exc:
                outcome, error = AttemptOutcome.PERMANENT_FAILURE, _describe(exc)
            except (asyncio.CancelledError, TaskCancelledError) as exc:
                outcome, error = AttemptOutcome.CANCELLED, ctx.cancel_reason or _describe(exc)
            except Exception as exc:  # noqa: BLE001 - any handler error is the attempt's outcome
                log.warning("agent %s: task %s attempt %d raised", self.name, a.task_id, a.attempt, exc_info=True)
                outcome, error = AttemptOutcome.FAILED, _describe(exc)
            finally:
                if timer is not None:
                    timer.cancel()
                if ctx.took_locks:
                    await self._release_locks(ctx)
            if ctx.cancel_reason == TIMED_OUT:
                # A result that arrives after the deadline does not count.
                outcome, result, error = AttemptOutcome.TIMED_OUT, None, f"timed out after {a.timeout:g}s"
        del self.running[key]
        self.unacked.add(key)
        self.stats["finished"] += 1
        self._report(Report("finished", a.task_id, a.attempt, outcome, result, error))
        self.slot_freed.set()
        self.state_changed.set()

    async def _task_locks(self, a: Assignment, ctx: TaskContext) -> list[Any]:
        """The task's declared locks, before its handler runs (waiting no longer than its timeout)."""
        return await acquire_async(
            self.lock_manager, ctx.holder, [list(lock) for lock in a.locks], ttl=self.settings.lock_ttl,
            wait=a.timeout, task_id=a.task_id, agent_id=self.name, request_id=request_id_for(f"task:{ctx.holder}"),
            policy=AGENT, refresh=self._refresh_locks,
        )

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

    def _check_result(self, task_id: str, value: Any) -> Any:
        try:
            size = json_size(value, "result")
        except ValueError as exc:
            raise ResultNotSerializableError(
                f"task '{task_id}' returned a {type(value).__name__}, which is not JSON-serialisable: {exc}"
            ) from None
        if size > self.settings.result_max_bytes:
            raise ResultNotSerializableError(
                f"task '{task_id}' returned {size} bytes of JSON, over the limit of "
                f"{self.settings.result_max_bytes} (OMOI_RESULT_MAX_BYTES); store it elsewhere and return a reference"
            )
        return value

    def _stop_attempt(self, key: tuple[str, int], reason: str) -> int:
        run = self.running.get(key)
        if run is None:
            return 0
        run.ctx._cancel(reason)
        if run.inner is not None and not run.inner.done():
            run.inner.cancel()
        return 1

    def _report(self, report: Report) -> None:
        self.outbox.append(report)
        self.reports_ready.set()

    def _take_reports(self) -> list[Report]:
        reports, self.outbox = self.outbox, []
        return reports


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
