"""Test doubles for omoi-ray users and for omoi-ray's own tests: run a handler in process, with a
fake clock and in-memory stand-ins for the scheduler, the lock manager and the store.

Quick use (no Ray, no database)::

    from omoi_ray.testing import run_handler

    def double(task, ctx):
        return {"twice": task.payload["n"] * 2, "token": ctx.token("file:a")}

    assert run_handler(double, {"n": 2}, locks={"file:a": 7}) == {"twice": 4, "token": 7}

Rules:
- ``run_handler`` calls the handler exactly as an agent does (``handler(task, ctx)``, or
  ``handler(task)`` when it takes one argument; async handlers run to completion in their own
  event loop) and returns its result or raises its exception unchanged: a ``PermanentError`` stays
  a ``PermanentError``. A result that no store could hold (not JSON, NaN, over-deep) raises
  ``ValueError`` naming the field, as the agent would refuse it.
- The context is a real ``TaskContext`` whose calls out of the process are answered in memory:
  ``upstream_results()`` from ``upstream``, ``token()`` from ``locks`` (the task's declared locks,
  resource ``"type:id"`` -> fencing token), ``lock()``/``lock_async()`` from an in-memory
  ``LockTable`` on the fake clock (shared across calls through ``FakeLockManager``); a lock that
  is not free fails at once with ``LockUnavailableError`` instead of waiting.
- Cancellation is data: ``cancelled="reason"`` starts the attempt cancelled (``ctx.cancelled()``
  is True, ``ctx.raise_if_cancelled()`` raises ``TaskCancelledError``); ``make_context`` returns
  the context so a test can cancel it at any point with ``ctx._cancel(reason)``.
- Messages are data too: ``inbox=[...]`` fills ``ctx.inbox`` (``MessageInfo``s, or mappings
  for ``fake_message``), and a test can put more in at any point (``ctx.inbox.put_many``);
  ``ctx.send``/``ctx.send_many`` record their posts in ``ctx.sent`` (with the agent as sender)
  and answer ``MessageInfo``s; ``ctx.mark_read`` records the ids in ``ctx.read``.
- Joins are data: ``merge=`` (a strategy, as ``TaskSpec.merge``) with ``upstream=`` makes
  ``ctx.merged()`` merge the upstream results in their order, as an agent would (a custom
  function is imported); each merge's summary is recorded in ``ctx.merges``.
- ``FakeClock`` is the only time source of the doubles: nothing here sleeps or reads the wall
  clock. ``MemoryStore`` is the in-memory store with ``Store``'s ``apply``/``load``/``lookup``.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omoi_ray.client.calls import Answered
from omoi_ray.client.locks import Lease
from omoi_ray.core.handoff import HandoffContext
from omoi_ray.core.locks import LockTable, RequestState
from omoi_ray.core.merge import check_merge, summary
from omoi_ray.core.storable import check_json
from omoi_ray.errors import InvalidMergeError, LockUnavailableError
from omoi_ray.handler.context import BoundHandler, TaskContext, TaskView
from omoi_ray.handler.inbox import Inbox
from omoi_ray.handler.merge import compute
from omoi_ray.specs.locks import parse_request
from omoi_ray.specs.messages import MessageInfo
from omoi_ray.store.memory import MemoryStore

__all__ = ["FakeClock", "FakeLockManager", "FakeTaskContext", "MemoryStore", "fake_message", "make_context",
           "run_handler", "run_handler_async"]

_MESSAGE_SEQ = itertools.count(1)


def fake_message(
    body: Any = None, *, sender: str = "peer", thread_id: str = "thread", to: str | None = None,
    kind: str = "message", id: str | None = None, seq: int | None = None,
) -> MessageInfo:
    """A ``MessageInfo`` as the scheduler would deliver it (``id`` and ``seq`` made up when not given)."""
    seq = next(_MESSAGE_SEQ) if seq is None else seq
    return MessageInfo(id=id or f"fake-{seq}", seq=seq, thread_id=thread_id, sender=sender, to=to, kind=kind, body=body)


class FakeClock:
    """A clock that moves only when told to.

    Args:
        start: the first reading, in seconds (any epoch; default 1000.0).

    Calling the clock returns ``now``; ``advance(seconds)`` moves it forward and returns the new
    reading. Raises ``ValueError`` for a negative step: time never goes back.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        """The current reading, ``now`` (seconds)."""
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward ``seconds`` (>= 0); returns the new reading."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, not {seconds!r}")
        self.now += seconds
        return self.now


@dataclass(frozen=True, slots=True)
class FakeGrant:
    """A granted lock as a handler sees it: ``resource`` is ``"type:id"``, ``token`` its fencing token."""

    id: str
    resource: str
    mode: str
    token: int


class FakeLockManager:
    """An in-memory lock manager: the core ``LockTable`` on a ``FakeClock``, answering the calls
    a ``Lease`` makes (``release``, ``renew``) at once.

    Args:
        clock: the time source (default: a new ``FakeClock``).

    A lock that cannot be granted at once fails with ``LockUnavailableError`` (nothing else runs
    to release it, so waiting could not end); share one manager between ``run_handler`` calls
    and contexts to test contention.
    """

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.table = LockTable()
        self._ids = itertools.count(1)
        self.handle = self  # what a Lease calls: handle.release.remote(...), handle.renew.remote(...)
        self.release = _Remote(
            lambda holder, ids, request_id=None: len(self.table.release(holder, ids, self.clock()))
        )
        self.renew = _Remote(lambda holder, ids: self._grants(self.table.renew(holder, ids, self.clock())))

    def _call(self, fn: Callable[[], Any], **_: Any) -> Any:
        return fn()

    def _step(self, method: str, *args: Any, if_repeated: Any = None, **kwargs: Any) -> Answered:
        """What a ``Lease`` yields to call the lock manager: answered here, at once."""
        return Answered(getattr(self, method).remote(*args, **kwargs))

    def acquire(self, holder: str, resources: Any, mode: str = "exclusive", *, ttl: float = 30.0,
                task_id: str | None = None, agent_id: str | None = None) -> Lease:
        """Take every resource at once or raise. Returns a ``Lease`` (tokens in ``.tokens``).

        Raises:
            InvalidLockRequestError: a malformed resource, mode or ttl.
            LockUnavailableError: a resource is held in a conflicting mode.
            DeadlockError, LockUpgradeError: as the real lock manager would.
        """
        spec = parse_request(holder, resources, mode, ttl=ttl, wait=0)
        request_id = f"fake-{next(self._ids)}"
        request = self.table.acquire(request_id, spec.holder, spec.items, self.clock(), ttl=spec.ttl, wait=0,
                                     task_id=task_id, agent_id=agent_id)
        if request.state is not RequestState.GRANTED:  # wait=0 refuses rather than queues; be sure
            raise LockUnavailableError(f"lock request '{request_id}' was not granted at once")
        grants = [self.table.grant_of(g) for g in request.grants]
        held = self._grants([g for g in grants if g is not None])
        return Lease(self, spec.holder, request_id, held, spec.ttl)

    @staticmethod
    def _grants(grants: list[Any]) -> list[FakeGrant]:
        return [FakeGrant(g.id, f"{g.resource[0]}:{g.resource[1]}", g.mode.value, g.token) for g in grants]


class _Remote:
    """``fn`` reachable as ``obj.method.remote(...)``, answered at once."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.remote = fn


class FakeTaskContext(TaskContext):
    """A ``TaskContext`` whose scheduler and lock manager are in memory (see the module rules)."""

    upstream: Mapping[str, Any] = {}
    lock_manager: FakeLockManager | None = None
    sent: list[dict[str, Any]]
    read: list[str]
    merge: dict[str, Any] | None = None
    merges: list[dict[str, Any]]

    def send_many(self, posts: list[dict[str, Any]]) -> list[Any]:
        """Record ``posts`` in ``sent`` (as this agent) and answer their ``MessageInfo``s."""
        out = []
        for post in self._as_sender(posts):
            self.sent.append({k: v for k, v in post.items() if k != "id"})  # the id is transport only
            out.append(fake_message(post.get("body"), sender=self.agent_id, thread_id=post["thread"],
                                    to=post.get("to"), kind=post.get("kind", "message")))
        return out

    async def send_many_async(self, posts: list[dict[str, Any]]) -> list[Any]:
        """``send_many`` for async handlers."""
        return self.send_many(posts)

    def mark_read(self, message_ids: list[str]) -> int:
        """Record the ids in ``read``."""
        self.read.extend(message_ids)
        return len(message_ids)

    async def mark_read_async(self, message_ids: list[str]) -> int:
        """``mark_read`` for async handlers."""
        return self.mark_read(message_ids)

    def upstream_results(self) -> dict[str, Any]:
        """The results given as ``upstream``, by task id."""
        return {tid: self.upstream[tid] for tid in self.depends_on}

    async def upstream_results_async(self) -> dict[str, Any]:
        """``upstream_results`` for async handlers."""
        return self.upstream_results()

    def merged(self) -> Any:
        """The merge of ``upstream`` (in order) by ``merge``; its summary goes to ``merges``."""
        sources = [(tid, self.upstream[tid]) for tid in self.depends_on]
        result = compute(self.task_id, self.merge, sources)
        self.merges.append(summary(self.merge, sources, result))
        return result

    async def merged_async(self) -> Any:
        """``merged`` for async handlers."""
        return self.merged()

    def lock(self, resources: Any, mode: str = "exclusive", *, wait: float | None = None,
             ttl: float = 30.0) -> Any:
        """Take a lock from the in-memory lock manager; see ``FakeLockManager.acquire``."""
        self.took_locks = True
        assert self.lock_manager is not None
        lease = self.lock_manager.acquire(self.holder, resources, mode, ttl=ttl, task_id=self.task_id,
                                          agent_id=self.agent_id)
        self.locks.extend(lease.grants)
        return lease

    async def lock_async(self, resources: Any, mode: str = "exclusive", *, wait: float | None = None,
                         ttl: float = 30.0) -> list[Any]:
        """``lock`` for async handlers; returns the grants (``FakeGrant``)."""
        return list(self.lock(resources, mode, wait=wait, ttl=ttl).grants)


def make_context(
    task_id: str = "task",
    *,
    attempt: int = 1,
    agent_id: str = "test-agent",
    upstream: Mapping[str, Any] | None = None,
    locks: Mapping[str, int] | None = None,
    lock_manager: FakeLockManager | None = None,
    cancelled: str | None = None,
    timeout: float | None = None,
    workspace: Path | None = None,
    inbox: Inbox | Any = None,
    handoff: Mapping[str, Any] | None = None,
    merge: Any = None,
) -> FakeTaskContext:
    """A context for one attempt of ``task_id``, answered in memory.

    Args:
        upstream: results of the tasks this one depends on, by task id (their ids become
            ``depends_on``).
        locks: the task's declared locks as ``{"type:id": fencing token}`` (``ctx.token``).
        lock_manager: the lock manager ``ctx.lock`` takes from (default: a new one).
        cancelled: a reason to start the attempt cancelled, or None.
        timeout: the attempt's timeout in seconds, as the handler may read it.
        workspace: the attempt's directory (default: a new temporary directory).
        inbox: an ``Inbox`` to share, or messages to start ``ctx.inbox`` with (``MessageInfo``s,
            or mappings of ``fake_message``'s arguments).
        handoff: make the attempt one that came from an accepted hand-off: ``ctx.handoff`` is a
            ``HandoffContext`` of these fields (``offer_id``, ``from_agent``, ``reason``,
            ``context``, ``thread_id``; the first three required).
        merge: the task's merge strategy (as ``TaskSpec.merge``), for ``ctx.merged()``.

    Returns:
        A ``FakeTaskContext``.
    """
    ctx = FakeTaskContext(
        task_id=task_id, attempt=attempt, agent_id=agent_id,
        workspace_path=workspace or Path(tempfile.mkdtemp(prefix="omoi-ws-")),
        timeout=timeout, depends_on=tuple(upstream or ()), holder=f"{agent_id}/{task_id}#{attempt}",
    )
    ctx.upstream = dict(upstream or {})
    ctx.handoff = HandoffContext(**handoff) if handoff is not None else None
    ctx.sent, ctx.read, ctx.merges = [], [], []
    try:
        ctx.merge = check_merge(merge)
    except ValueError as exc:
        raise InvalidMergeError(f"task '{task_id}': merge: {exc}") from None
    if isinstance(inbox, Inbox):
        ctx.inbox = inbox
    elif inbox is not None:
        ctx.inbox.put_many(m if isinstance(m, MessageInfo) else fake_message(**m) for m in inbox)
    ctx.lock_manager = lock_manager or FakeLockManager()
    ctx.locks.extend(FakeGrant(f"declared-{i}", resource, "exclusive", token)
                     for i, (resource, token) in enumerate((locks or {}).items()))
    if cancelled is not None:
        ctx._cancel(cancelled)
    return ctx


def _task(task_id: str, task_type: str, payload: Any, ctx: TaskContext, priority: str) -> TaskView:
    return TaskView(id=task_id, type=task_type, payload=payload, attempt=ctx.attempt, priority=priority,
                    depends_on=ctx.depends_on)


def _prepared(
    handler: Callable[..., Any] | str, payload: Any, task_id: str, task_type: str, priority: str,
    ctx: FakeTaskContext | None, context: dict[str, Any],
) -> tuple[BoundHandler, TaskView, FakeTaskContext]:
    """What both ``run_handler`` flavours start from: the bound handler, the task it sees, its context."""
    bound = BoundHandler.of(handler)
    ctx = ctx or make_context(task_id, **context)
    return bound, _task(ctx.task_id, task_type, payload, ctx, priority), ctx


def run_handler(
    handler: Callable[..., Any] | str,
    payload: Any = None,
    *,
    task_id: str = "task",
    task_type: str = "task",
    priority: str = "MEDIUM",
    ctx: FakeTaskContext | None = None,
    **context: Any,
) -> Any:
    """Run ``handler`` once, in this process, as an agent would.

    Args:
        handler: a function (sync or async) or an import path ``"pkg.module:function"``.
        payload: the task's payload (any JSON value).
        task_id, task_type, priority: what the handler sees in ``task``.
        ctx: a context from ``make_context``; otherwise ``context`` keywords build one
            (``attempt``, ``upstream``, ``locks``, ``lock_manager``, ``cancelled``, ``timeout``,
            ``workspace``, ``agent_id``, ``inbox``, ``merge``).

    Returns:
        The handler's result.

    Raises:
        Whatever the handler raises, unchanged; ``HandlerNotFoundError`` for an import path that
        does not resolve; ``ValueError`` naming the field when the result is not storable JSON.
    """
    bound, task, ctx = _prepared(handler, payload, task_id, task_type, priority, ctx, context)
    result = asyncio.run(bound.call(task, ctx)) if bound.is_async else bound.call(task, ctx)
    check_json(result, "result")
    return result


async def run_handler_async(
    handler: Callable[..., Any] | str,
    payload: Any = None,
    *,
    task_id: str = "task",
    task_type: str = "task",
    priority: str = "MEDIUM",
    ctx: FakeTaskContext | None = None,
    **context: Any,
) -> Any:
    """``run_handler`` from async code (a sync handler runs in a worker thread); same arguments,
    result and errors."""
    bound, task, ctx = _prepared(handler, payload, task_id, task_type, priority, ctx, context)
    result = await (bound.call(task, ctx) if bound.is_async else asyncio.to_thread(bound.call, task, ctx))
    check_json(result, "result")
    return result
