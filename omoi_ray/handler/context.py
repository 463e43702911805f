"""What a handler sees: the task it runs and the context of this attempt; and handler lookup.

Rules:
- A handler is a plain function, sync or async, called as ``handler(task, ctx)`` (or
  ``handler(task)`` if it takes one argument). What it returns becomes the task's result and must
  be JSON-serialisable.
- Raise ``PermanentError`` to fail without retrying; any other exception is retried under the
  task's retry policy.
- Cancellation and timeouts are cooperative for sync handlers (check ``ctx.cancelled()`` or call
  ``ctx.raise_if_cancelled()``) and immediate for async ones (``asyncio.CancelledError`` is
  raised at the next await).
- Each attempt gets its own empty workspace directory.
- An attempt that came from an accepted hand-off sees the offer as ``ctx.handoff`` (a
  ``core.handoff.HandoffContext``: offer id, from agent, reason, context); it is None otherwise.
  ``ctx.handoffs`` offers this attempt to other agents, and accepts or declines offers for this
  agent (``omoi_ray.client.handoffs``).
- Splitting: ``ctx.split([...tasks])`` (sync or async handlers alike: it only records them), or
  returning ``Split(children, result=...)``, makes the children part of this attempt's
  completion: the scheduler creates them in the transaction that completes the task, and the
  task's dependents wait for them too (``omoi_ray.core.coordination``). A failed attempt's
  children are dropped.
- A join (a task with ``merge``) reads its sources' merged results with ``ctx.merged()``
  (``ctx.merged_async()``); the merge runs here, in the agent (``omoi_ray.handler.merge``).
- Messages: ``ctx.inbox`` is the agent's live inbox (``omoi_ray.handler.inbox``); ``ctx.send``,
  ``ctx.send_many`` and ``ctx.mark_read`` go through the scheduler with the agent as sender or
  reader (``..._async`` forms for async handlers).
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omoi_ray.core import task_fields
from omoi_ray.errors import HandlerNotFoundError, TaskCancelledError
from omoi_ray.handler.inbox import Inbox


@dataclass(frozen=True, slots=True)
class TaskView:
    """The task as a handler sees it (read-only)."""

    id: str
    type: str
    payload: Any
    attempt: int
    priority: str
    ticket_id: str | None = None
    phase: str | None = None
    depends_on: tuple[str, ...] = ()

    @classmethod
    def of(cls, assignment: Any) -> TaskView:
        """The view of an ``omoi_ray.protocol.Assignment`` (the fields ``FIELDS`` declares for
        ``VIEW``)."""
        return _view_of(assignment)


_view_of = task_fields.compile_mapping(
    "view_of", task_fields.Shape.WIRE, task_fields.Shape.VIEW, dict.fromkeys(task_fields.KINDS, "{v}"),
    build="TaskView", namespace={"TaskView": TaskView},
)


@dataclass(frozen=True)
class Split:
    """A handler's return value that splits its task: ``children`` (``TaskSpec``s or dicts of
    their fields) are created when the task completes with ``result``.

    Example: ``return omoi.Split([omoi.TaskSpec(id=f"part-{i}", type="work") for i in range(3)],
    result={"parts": 3})``.
    """

    children: list[Any]
    result: Any = None


@dataclass(eq=False)
class TaskContext:
    """The context of one attempt."""

    task_id: str
    attempt: int
    agent_id: str
    workspace_path: Path
    timeout: float | None = None
    depends_on: tuple[str, ...] = ()
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    cancel_reason: str | None = None
    _scheduler: Any = field(default=None, repr=False)
    _lock_manager: Any = field(default=None, repr=False)
    locks: list[Any] = field(default_factory=list)  # grants of the task's declared locks
    holder: str = ""  # the lock holder name of this attempt
    took_locks: bool = False
    #: the accepted hand-off offer this attempt came from (``HandoffContext``), else None
    handoff: Any = None
    _handoffs: Any = field(default=None, repr=False)
    #: the children this attempt split off so far (spec dicts), created if it completes
    split_children: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def split(self, children: Any) -> list[str]:
        """Split this task: ``children`` run once it completes, and its dependents wait for them.

        Args:
            children: a list of ``TaskSpec`` or dicts of their fields; they may depend on each
                other and on live tasks. Calls add up.

        Returns:
            The children's ids, in order.

        Raises:
            InvalidTaskSpecError: a bad child (checked here; the scheduler checks ids and the
                graph when the attempt completes and fails it, creating nothing, if they break
                a rule: ``InvalidSplitError``).
        """
        from omoi_ray.specs.tasks import check_list, iter_task_specs

        try:
            items = check_list(children, "children")
        except ValueError as exc:
            from omoi_ray.errors import InvalidTaskSpecError

            raise InvalidTaskSpecError(f"task '{self.task_id}' split: {exc}") from None
        specs = [s.model_dump(mode="json") for s in iter_task_specs(list(items), 2**62)]
        self.split_children.extend(specs)
        return [s["id"] for s in specs]
    #: the ticket context the scheduler handed this attempt (``ticket_context()``), else None
    ticket: Any = field(default=None, repr=False)

    def ticket_context(self) -> dict[str, Any]:
        """What the earlier phases of this task's ticket produced (``core.tickets.context_for``).

        Returns:
            ``{"ticket_id", "phase", "phases": {phase: {"tasks", "summaries", "decisions",
            "risks", "artifacts", "dropped"}}, "summary": str}`` for a task of a ticket made by
            ``rt.tickets.create`` (phases strictly before the task's, bounded: at most 10 entries
            per list, 300 characters each; the summary at most 2,000 characters); ``{}`` for a
            task without one. Read when the attempt was handed out.
        """
        return dict(self.ticket) if self.ticket else {}

    @property
    def handoffs(self) -> Any:
        """A ``HandoffClient`` acting for this attempt and its agent: ``offer`` (this task, by
        default) / ``offer_async``, ``accept(offer_id)``, ``decline(offer_id, reason=...)``,
        ``get`` (each with ``_async``), under the handlers' call policy (stops retrying once the
        attempt is cancelled)."""
        if self._handoffs is None:
            from omoi_ray.client.calls import HANDLER
            from omoi_ray.client.handoffs import HandoffClient

            self._handoffs = HandoffClient(
                lambda: self._scheduler, agent=self.agent_id, task_id=self.task_id, attempt=self.attempt,
                policy=HANDLER, check=self.raise_if_cancelled,
            )
        return self._handoffs
    #: the agent's live inbox, shared by its running handlers (``await ctx.inbox.get(timeout=1)``
    #: in async handlers, ``ctx.inbox.get(timeout=1)`` in sync ones; None on timeout)
    inbox: Inbox = field(default_factory=Inbox, repr=False)

    @property
    def workspace(self) -> Path:
        """This attempt's own directory, created on first use (empty at the start)."""
        self.workspace_path.mkdir(parents=True, exist_ok=True)
        return self.workspace_path

    def cancelled(self) -> bool:
        """True once this attempt was cancelled or timed out; stop as soon as you can."""
        return self._cancelled.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise ``TaskCancelledError`` if this attempt was cancelled or timed out."""
        if self._cancelled.is_set():
            raise TaskCancelledError(
                f"task '{self.task_id}' attempt {self.attempt}: {self.cancel_reason or 'cancelled'}"
            )

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds until the attempt is cancelled; True if it was."""
        return self._cancelled.wait(timeout)

    def upstream_results(self) -> dict[str, Any]:
        """Results of the tasks this one depends on (they all completed: that is why it runs).
        Blocks, so call it from sync handlers; async handlers use
        ``await ctx.upstream_results_async()``.

        Returns:
            ``{task id: result}`` for every dependency (``{}`` without dependencies).

        Raises:
            TaskCancelledError: the attempt was cancelled while the scheduler was unavailable.
            OmoiError: the scheduler's own typed error, as itself.
        """
        from omoi_ray.client.calls import drive

        return drive(self._upstream_results())

    async def upstream_results_async(self) -> dict[str, Any]:
        """``upstream_results`` for async handlers (awaits the same call)."""
        from omoi_ray.client.calls import drive_async

        return await drive_async(self._upstream_results())

    def _upstream_results(self) -> Any:
        """The one definition of ``upstream_results`` (a generator of call steps)."""
        from omoi_ray.client.calls import HANDLER, Step

        if not self.depends_on:
            return {}
        ids = list(self.depends_on)
        infos = yield Step(lambda: self._scheduler.get.remote(ids), policy=HANDLER, what="the scheduler",
                           check=self.raise_if_cancelled)
        return {info.id: info.result for info in infos}

    def merged(self) -> Any:
        """The merge of this join's upstream results, by the task's ``merge`` strategy (sync
        handlers; async ones ``await ctx.merged_async()``).

        Sources are the ``depends_on`` tasks in declared order; a sync upstream contributes each
        of its members as one source, in member order. Each call records
        ``coordination.merge.completed``.

        Returns:
            The strategy's result (``omoi_ray.core.merge``; ``majority``: ``{"winner", "votes",
            "counts", "quorum", "tie", "abstained"}``).

        Raises:
            MergeError: the task declares no merge, or the strategy refuses the sources
                (``MergeQuorumError``, ``MergeTieError``); a ``PermanentError``, so the task
                fails for good if the handler lets it through.
            TaskCancelledError: the attempt was cancelled while the scheduler was unavailable.
        """
        from omoi_ray.client.calls import drive

        return drive(self._merged())

    async def merged_async(self) -> Any:
        """``merged`` for async handlers (the same calls, awaited)."""
        from omoi_ray.client.calls import drive_async

        return await drive_async(self._merged())

    def _merged(self) -> Any:
        """The one definition of ``merged`` (a generator of call steps)."""
        from omoi_ray.core.merge import summary
        from omoi_ray.handler.merge import compute

        inputs = yield from self._call("merge_inputs", self.task_id)
        result = compute(self.task_id, inputs["merge"], inputs["sources"])
        yield from self._call("record_merge", self.task_id, self.attempt, summary(inputs["merge"], inputs["sources"], result))
        return result

    def send(self, to: str | None = None, body: Any = None, *, thread: str, kind: str = "message") -> Any:
        """Post a message in ``thread`` as this agent (sync handlers; blocks until committed).

        Args:
            to: one participant, or None to broadcast to every other participant.
            body: any JSON value up to ``OMOI_MESSAGE_MAX_BYTES``.
            thread: the thread's id; kind: ``"message"`` unless a protocol says otherwise.

        Returns:
            The committed message's ``MessageInfo``.

        Raises:
            InvalidMessageError, MessageTooLargeError, NotParticipantError, ThreadClosedError,
                ThreadNotFoundError: as ``rt.messages.send``; nothing is stored then.
        """
        return self.send_many([{"thread": thread, "to": to, "body": body, "kind": kind}])[0]

    async def send_async(self, to: str | None = None, body: Any = None, *, thread: str, kind: str = "message") -> Any:
        """``send`` for async handlers."""
        return (await self.send_many_async([{"thread": thread, "to": to, "body": body, "kind": kind}]))[0]

    def send_many(self, posts: list[dict[str, Any]]) -> list[Any]:
        """Post several messages as this agent, all or nothing (each a mapping with ``thread``,
        ``body`` and optional ``to``, ``kind``); returns their ``MessageInfo``s in order."""
        from omoi_ray.client.calls import drive

        return drive(self._posting(posts))

    async def send_many_async(self, posts: list[dict[str, Any]]) -> list[Any]:
        """``send_many`` for async handlers."""
        from omoi_ray.client.calls import drive_async

        return await drive_async(self._posting(posts))

    def mark_read(self, message_ids: list[str]) -> int:
        """Mark messages addressed to this agent read (the first read time is kept)."""
        from omoi_ray.client.calls import drive

        return drive(self._call("mark_read", self.agent_id, list(message_ids)))

    async def mark_read_async(self, message_ids: list[str]) -> int:
        """``mark_read`` for async handlers."""
        from omoi_ray.client.calls import drive_async

        return await drive_async(self._call("mark_read", self.agent_id, list(message_ids)))

    def _as_sender(self, posts: Any) -> Any:
        """``posts`` with this agent as their sender and a message id each, chosen once, so a
        post made again after a scheduler restart is not stored twice (a bad shape is left for
        the scheduler to refuse)."""
        from omoi_ray.specs.messages import with_ids

        if not isinstance(posts, (list, tuple)):
            return posts
        return with_ids([{**p, "sender": self.agent_id} if isinstance(p, Mapping) else p for p in posts])

    def _posting(self, posts: Any) -> Any:
        """The ``send_many`` call of ``posts`` (``_as_sender``) under the handlers' call policy;
        the scheduler looks the ids up only when the call may repeat an earlier one (a later
        try, or ids the handler gave), so a first post does not read the database."""
        from omoi_ray.client.calls import HANDLER, Step, telling_repeats
        from omoi_ray.specs.messages import gives_ids

        given, posts = gives_ids(posts), self._as_sender(posts)
        result = yield Step(telling_repeats(lambda again: self._scheduler.send_many.remote(posts, again or given)),
                            policy=HANDLER, what="the scheduler", check=self.raise_if_cancelled)
        return result

    def _call(self, method: str, *args: Any) -> Any:
        """One scheduler call under the handlers' call policy (a generator of call steps)."""
        from omoi_ray.client.calls import HANDLER, Step

        result = yield Step(lambda: getattr(self._scheduler, method).remote(*args), policy=HANDLER,
                            what="the scheduler", check=self.raise_if_cancelled)
        return result

    def token(self, resource: str) -> int:
        """The fencing token of a lock this attempt holds (``"type:id"``)."""
        for grant in self.locks:
            if grant.resource == resource:
                return grant.token
        raise KeyError(f"task '{self.task_id}' holds no lock on {resource!r}")

    def lock(self, resources: Any, mode: str = "exclusive", *, wait: float | None = None, ttl: float = 30.0) -> Any:
        """Take a lock now (sync handlers); it is released when the attempt ends, whatever its
        outcome, and renewed by the agent meanwhile.

        Args:
            resources, mode, wait, ttl: as for ``LockClient.acquire``.

        Returns:
            A ``Lease`` (tokens in ``.tokens``).

        Raises:
            InvalidLockRequestError, LockTimeoutError, LockUnavailableError, DeadlockError: as
                ``LockClient.acquire``; TaskCancelledError: the attempt ended while waiting.
        """
        self.took_locks = True
        lease = self._lock_client().acquire(resources, mode, wait=wait, ttl=ttl, task_id=self.task_id,
                                            agent_id=self.agent_id)
        self.locks.extend(lease.grants)
        return lease

    async def lock_async(self, resources: Any, mode: str = "exclusive", *, wait: float | None = None, ttl: float = 30.0) -> list[Any]:
        """``lock`` for async handlers; returns the grants (``resource``, ``token``, ...)."""
        self.took_locks = True
        lease = await self._lock_client().acquire_async(resources, mode, wait=wait, ttl=ttl, task_id=self.task_id,
                                                        agent_id=self.agent_id)
        self.locks.extend(lease.grants)
        return lease.grants

    def _lock_client(self) -> Any:
        """A lock client holding as this attempt, under the handlers' call policy."""
        from omoi_ray.client.calls import HANDLER
        from omoi_ray.client.locks import LockClient

        return LockClient(self._lock_manager, self.holder, policy=HANDLER, check=self.raise_if_cancelled)

    def _cancel(self, reason: str) -> None:
        if not self._cancelled.is_set():
            self.cancel_reason = reason
            self._cancelled.set()


def resolve_handler(handler: Callable[..., Any] | str) -> Callable[..., Any]:
    """Turn an import path ``pkg.module:function`` into the function (or return the callable)."""
    if callable(handler):
        return handler
    module_name, _, attr = handler.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerNotFoundError(f"handler '{handler}': cannot import module '{module_name}' ({exc})") from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerNotFoundError(f"handler '{handler}': module '{module_name}' has no '{attr}'") from None
    if not callable(target):
        raise HandlerNotFoundError(f"handler '{handler}' is not callable")
    return target


@dataclass(frozen=True)
class BoundHandler:
    """A handler resolved once, with how to call it: ``fn``, whether it is async (a coroutine
    function, or an object whose ``__call__`` is one), and whether it takes ``(task, ctx)``
    (``wants_context``) or only ``(task)``."""

    fn: Callable[..., Any]
    is_async: bool
    wants_context: bool

    @classmethod
    def of(cls, handler: Callable[..., Any] | str) -> BoundHandler:
        """Resolve ``handler`` and read its signature.

        Args:
            handler: a callable, or an import path ``"pkg.module:function"``.

        Returns:
            A ``BoundHandler``; ``wants_context`` is True when the handler takes two or more
            positional arguments, ``*args``, or has a signature that cannot be read.

        Raises:
            HandlerNotFoundError: the import path cannot be imported, names nothing, or names
                something not callable.
        """
        fn = resolve_handler(handler)
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
        try:
            params = [
                p
                for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            ]
            wants_context = len(params) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
        except (TypeError, ValueError):
            wants_context = True
        return cls(fn, is_async, wants_context)

    def call(self, task: TaskView, ctx: TaskContext) -> Any:
        """Call the handler as ``fn(task, ctx)`` or ``fn(task)``.

        Returns:
            Whatever the handler returns: its result, or a coroutine for an async handler (the
            agent runs it in an event loop of its own).

        Raises:
            Whatever the handler raises, unchanged.
        """
        return self.fn(task, ctx) if self.wants_context else self.fn(task)


class HandlerTable:
    """Handlers by task type, with an optional fallback for every other type."""

    def __init__(self, handlers: Mapping[str, Any], default: Any = None) -> None:
        self._by_type = {task_type: BoundHandler.of(h) for task_type, h in handlers.items()}
        self._default = BoundHandler.of(default) if default is not None else None

    def for_type(self, task_type: str) -> BoundHandler:
        """The handler for tasks of ``task_type``, or the fallback.

        Raises:
            HandlerNotFoundError: no handler for this type and no fallback (the message lists
                the types handled).
        """
        bound = self._by_type.get(task_type, self._default)
        if bound is None:
            known = ", ".join(sorted(self._by_type)) or "none"
            raise HandlerNotFoundError(
                f"this agent has no handler for task type '{task_type}' (it handles: {known})"
            )
        return bound

    @property
    def types(self) -> list[str]:
        """The task types with a handler of their own, sorted (the fallback is not listed)."""
        return sorted(self._by_type)
