"""The shell every durable singleton actor shares: start-up, group commit, deadlines, describe.

A durable singleton (the scheduler, the lock manager, the next writer) keeps its state in memory
as a core object with a change log (``omoi_ray.core.changes.ChangeLog``), and owns one kind of
rows in the database. Everything such an actor does that is not its own concept lives here, so
a new writer adds only its decisions. The event relay shares the start-up part (``Singleton``).

Rules:
- Start-up runs in one order: logging, settings, migration check, the store, the ownership
  claim, then the actor's own restore, then ``_start`` (group commit, deadline loop, the first
  flush of the change log). A singleton claims the database (``omoi_ray.store.ownership``)
  before it loads anything, so what it loads includes every commit made before its claim and
  none made after by a writer it replaced.
- A constructor's typed error must reach the driver as that error: Ray keeps only the text of
  an exception raised in a constructor (the caller sees "actor died"). ``holds_start_error``
  keeps the ``OmoiError`` instead, and every public method (inherited ones too) raises it;
  ``connect`` then ends the actor and raises the error itself.
- A writer whose owner epoch was replaced (``OwnershipLostError``) exits at once, writing
  nothing (``exit_replaced``): Ray restarts it if it is still the actor Ray knows (its restart
  claims again, as the same owner), and a zombie process simply ends.
- Every change goes one way: the actor changes its core object, then ``_after_change`` drains
  the change log into the group commit and re-arms the deadline timer; the actor replies only
  after ``commit.sync()``. The group commit is given the store's writer for this actor's kind
  of change set (``store.writer.tasks``, ``.locks``): nothing dispatches on a batch's type.
- One timer per actor, for its earliest deadline (``_next_due``); when it passes, ``_advance``
  runs and the change log is flushed. No polling.
- ``describe`` answers the same basics for every singleton (``BASICS``: database, namespace,
  writer, pid, restarted, owner epoch) plus its counters (the commit's, then the actor's own).
- Metrics: after every commit the counters go to ``_publish_metrics``, the one place to plug
  them in (``metrics_sink``, e.g. backed by ``ray.util.metrics``); by default nothing is
  published and nothing is computed.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from omoi_ray.actors.group_commit import GroupCommit

from omoi_ray.core.changes import ChangeLog, ChangeSet
from omoi_ray.errors import OmoiError
from omoi_ray.logs import setup_actor_logging
from omoi_ray.owner import runtime_owner
from omoi_ray.settings import Settings
from omoi_ray.store.store import Store
from omoi_ray.store.writes import ChangeWriter

log = logging.getLogger("omoi_ray.durable")

EXIT_REPLACED = 71  # the process exit status of a writer that found itself replaced

#: the keys every singleton's ``describe`` answers
BASICS = ("database", "namespace", "writer", "pid", "restarted", "owner_epoch")

#: where counters go after each commit: ``sink(writer, counters)``
MetricsSink = Callable[[str, Mapping[str, float]], None]

A = TypeVar("A", bound=type)
C = TypeVar("C", bound=ChangeSet)


# ---------------------------------------------------------------------- start errors, replacement


def holds_start_error(cls: A) -> A:
    """Class decorator: an ``OmoiError`` raised by ``__init__`` is kept as ``start_error`` and
    raised by every public method, inherited ones included (the actor stays up, answering with
    it, until it is ended).

    Args:
        cls: the actor class (decorate the class handed to ``ray.remote``, not its bases).

    Returns:
        ``cls`` itself, its ``__init__`` and public methods wrapped.
    """
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        self.start_error = None
        try:
            init(self, *args, **kwargs)
        except OmoiError as exc:
            log.error("%s cannot start: %s", cls.__name__, exc)
            self.start_error = exc

    cls.__init__ = __init__  # type: ignore[misc]
    for name in dir(cls):
        method = inspect.getattr_static(cls, name)
        if name.startswith("_") or not inspect.isfunction(method) or getattr(method, "_holds_start_error", False):
            continue
        setattr(cls, name, _guarded(method))
    return cls


def _guarded(method: Any) -> Any:
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def guarded_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            if self.start_error is not None:
                raise self.start_error
            return await method(self, *args, **kwargs)

        guarded_async._holds_start_error = True  # type: ignore[attr-defined]
        return guarded_async

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.start_error is not None:
            raise self.start_error
        return method(self, *args, **kwargs)

    guarded._holds_start_error = True  # type: ignore[attr-defined]
    return guarded


def exit_replaced(exc: BaseException) -> None:
    """End this actor's process: its owner epoch was replaced, so nothing it holds may be
    committed. Outside an actor (an actor class used in-process, as tests do) it only logs, and
    the caller stops instead.

    Args:
        exc: the ``OwnershipLostError`` that said so (logged).
    """
    log.critical("%s; exiting without writing", exc)
    if not _in_actor():
        return
    logging.shutdown()
    os._exit(EXIT_REPLACED)


def _in_actor() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


# ---------------------------------------------------------------------- deadlines


class DeadlineLoop:
    """Call ``fire(now)`` whenever the earliest deadline (``next_due()``) has passed.

    Call ``poke()`` after any change that may have brought a deadline forward; it wakes the loop
    only when the new deadline is earlier than the one it sleeps towards. Must be created on a
    running event loop (an async actor's constructor runs on one).

    Args:
        next_due: the earliest deadline (Unix seconds), or None for none.
        fire: called with the current time (Unix seconds) once that deadline has passed.
    """

    def __init__(self, next_due: Callable[[], float | None], fire: Callable[[float], None]) -> None:
        self._next_due = next_due
        self._fire = fire
        self._wake = asyncio.Event()
        self._due: float | None = None
        self._task = asyncio.get_event_loop().create_task(self._run())

    def poke(self) -> None:
        """Look at the earliest deadline again if it may have moved forward."""
        due = self._next_due()
        if due is not None and (self._due is None or due < self._due):
            self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            due = self._due = self._next_due()
            timeout = None if due is None else max(0.0, due - time.time())
            if timeout is None or timeout > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                    continue  # something changed: look at the earliest deadline again
                except asyncio.TimeoutError:
                    pass
            self._fire(time.time())


# ---------------------------------------------------------------------- the shells


class Singleton:
    """Start-up shared by every singleton actor: logging, migration check, store, claim.

    Subclasses set ``WRITER`` (their name in the ownership tables and commit marks: one of
    ``omoi_ray.store.ownership.WRITERS``) and call ``super().__init__(settings)`` first.

    Args:
        settings: the runtime's settings (database URL, namespace, owner lease in seconds).

    Raises:
        OmoiError: the database is not migrated (``SchemaError``-like errors of
            ``migrate.check``) or another runtime owns it (``DatabaseOwnedError``); held by
            ``holds_start_error`` on the actor class.
    """

    WRITER: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        setup_actor_logging()
        self.settings = settings
        url = settings.resolved_database_url()
        from omoi_ray.store import migrate  # only singleton processes need alembic

        migrate.check(url)
        self.store = Store(url)
        # Before loading: what is loaded then holds every commit of a writer this one replaces.
        self.claimed = self.store.claim(self.WRITER, runtime_owner(settings.namespace), settings.owner_lease)
        # an unknown count reads as "restarted": it only words logs and ``describe``, and a
        # fresh start claimed when unsure would hide a restart
        self.restarted = _in_actor() and times_restarted() != 0

    def _basics(self) -> dict[str, Any]:
        """The ``BASICS`` of ``describe``: where this singleton writes and which process it is."""
        fence = self.store.fence
        return {
            "database": self.store.safe_url,
            "namespace": self.settings.namespace,
            "writer": self.WRITER,
            "pid": os.getpid(),
            "restarted": self.restarted,
            "owner_epoch": None if fence is None else fence.owner_epoch,  # this process's claim
        }


class DurableWriter(Singleton, Generic[C]):
    """A singleton that writes one kind of change set: ``Singleton`` plus the group commit, the
    deadline loop, ``describe`` and the metrics hook.

    A subclass restores its core object from ``self.store`` after ``super().__init__`` and then
    calls ``_start``; it implements ``_next_due`` and ``_advance`` (its deadlines) and may extend
    ``_on_committed`` (what to do once a batch is durable), ``_after_change`` and ``_counters``.
    """

    #: where counters go after each commit (None: nowhere, and none are computed)
    metrics_sink: ClassVar[MetricsSink | None] = None

    commit: GroupCommit[C]
    timers: DeadlineLoop

    def _start(
        self,
        changes: ChangeLog[C],
        writer: ChangeWriter[C],
        *,
        on_unstorable: Callable[[C, BaseException, int], C | None] | None = None,
    ) -> None:
        """Start writing: the group commit, the deadline loop, and a first flush of the change
        log (what restore changed). Call once, at the end of the constructor.

        Args:
            changes: the core object whose ``take_changes`` drains its change log.
            writer: the store's writer for that kind of change set (``store.writer.tasks``).
            on_unstorable: the actor's repair of a change set the store refuses (see
                ``GroupCommit``); None: such a batch ends the process.
        """
        self._changes = changes
        self.commit = GroupCommit(writer, self._committed, writer=self.WRITER, on_unstorable=on_unstorable)
        self.timers = DeadlineLoop(self._next_due, self._deadline)
        self._after_change()

    async def describe(self) -> dict[str, Any]:
        """The singleton's basics (``BASICS``) and counters.

        Returns:
            ``{"database", "namespace", "writer", "pid", "restarted", "owner_epoch", "commits",
            "events_written", "commit_seconds", "write_seconds", ...}`` plus the actor's own
            counters (``_counters``).
        """
        return {**self._basics(), **self._counters()}

    # ------------------------------------------------------------------ hooks

    def _after_change(self) -> None:
        """Queue the change log for commit and re-arm the timer (subclasses that act on every
        change first extend this)."""
        self.commit.add(self._changes.take_changes())
        self.timers.poke()

    def _on_committed(self, batch: C) -> None:
        """A batch is durable: tell whoever waits for it (the subclass's part; none here)."""

    def _next_due(self) -> float | None:
        """The earliest deadline (Unix seconds), or None."""
        raise NotImplementedError

    def _advance(self, now: float) -> None:
        """Act on every deadline up to ``now`` (Unix seconds); the change log is flushed after."""
        raise NotImplementedError

    def _counters(self) -> dict[str, Any]:
        """Numbers for ``describe`` and metrics: the group commit's; subclasses add theirs."""
        commit = self.commit
        return {
            "commits": commit.commits,
            "events_written": commit.events_written,
            "commit_seconds": round(commit.commit_seconds, 3),
            "write_seconds": round(commit.write_seconds, 3),
        }

    def _publish_metrics(self) -> None:
        """The one place counters leave the actor (after each commit): to ``metrics_sink``."""
        sink = vars(self).get("metrics_sink", type(self).metrics_sink)  # unbound, set on the class or instance
        if sink is not None:
            sink(self.WRITER, self._counters())

    # ------------------------------------------------------------------ plumbing

    def _committed(self, batch: C) -> None:
        self._on_committed(batch)
        self._publish_metrics()

    def _deadline(self, now: float) -> None:
        self._advance(now)
        self._after_change()

    async def _db(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the database thread, after every batch committed so far."""
        return await asyncio.get_running_loop().run_in_executor(self.commit.executor, fn, *args)


def times_restarted() -> int | None:
    """How many times Ray has restarted the current actor: its restart count in the GCS, read by
    the actor's hex id (what Ray's ``was_current_actor_reconstructed`` reads, without its
    deprecated ``actor_id`` call, whose ``RayDeprecationWarning`` reached the driver's console).
    The one restart lookup of the singletons (``restarted``) and the agents (``max_restarts``).

    Returns:
        The count; 0 outside an actor; None when the lookup fails. It never raises: an agent
        asks on its way out (replacing a process held by zombie handlers), where an error would
        escape its exit. A failed lookup is not tried again through the public API: that reads
        the same GCS table and would fail the same way; each caller says what "unknown" means.
    """
    try:
        import ray
        from ray._private.state import actors

        actor_id = ray.get_runtime_context().get_actor_id()
        if actor_id is None:
            return 0
        info = actors(actor_id=actor_id)
        return int(info.get("NumRestarts", 0)) if info else 0
    except Exception:  # noqa: BLE001 - see the docstring
        log.warning("could not read this actor's restart count from Ray", exc_info=True)
        return None


async def fire_and_forget(ref: Any) -> None:
    """Await a Ray call whose answer nobody needs (telling an agent to stop an attempt, handing
    it messages, releasing a lost attempt's locks); its failure is dropped: a dead agent is
    reported by its ``watch`` call, and each of these is repeated or made moot by later state."""
    try:
        await ref
    except Exception:  # noqa: BLE001 - see the docstring
        pass
