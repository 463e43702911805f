"""Group commit: change sets are written in order, one transaction per batch of them.

Rules:
- ``add`` queues a change set and returns at once; ``sync`` waits until everything added before
  it is committed. An actor replies only after ``sync``, so nothing is visible before it is
  durable, while many callers share one transaction.
- One writer thread, one transaction at a time; change sets queued during a commit form the
  next batch, so batches grow with load and latency stays one commit when idle.
- Each batch carries a commit mark (writer, epoch, batch number). A failed commit is retried
  with backoff, off the event loop; before each retry the mark says whether the failed attempt
  committed after all (the connection can drop during COMMIT), so nothing is written twice.
  When the database stays unreachable past ``give_up_after`` seconds the process exits so that
  Ray restarts the actor, which rebuilds its memory from whatever the database committed.
- A batch that fails on its own values (``is_data_error``: the store refused a value, or its rows
  could not be built), with an owner's ``on_unstorable(changes, error, round)``, is not retried
  and never ends the process in a loop: its change sets are committed one by one, and each one
  that cannot be stored is replaced by the owner's repair (round 0, 1, ...; None gives up and
  the process exits as for an outage). Without ``on_unstorable`` such a batch ends the process.
- A batch refused because this writer was replaced (``OwnershipLostError``: its owner epoch is
  no longer the database's) is never retried: the process exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

from omoi_ray.core.changes import ChangeSet
from omoi_ray.store.writes import Mark, is_data_error, is_permanent_error

log = logging.getLogger("omoi_ray.commit")


class GroupCommit:
    def __init__(
        self,
        store: Any,
        on_committed: Callable[[ChangeSet], None],
        *,
        writer: str,
        give_up_after: float = 120.0,
        on_unstorable: Callable[[Any, BaseException, int], Any | None] | None = None,
    ) -> None:
        self._store = store
        self._writer = writer
        self._epoch = uuid.uuid4().hex
        self._batch = 0
        self._on_committed = on_committed
        self._give_up_after = give_up_after
        self._on_unstorable = on_unstorable
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omoi-db")
        self._pending: list[ChangeSet] = []
        self._added = 0
        self._done = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._flushing = False
        self.commits = 0
        self.events_written = 0
        self.commit_seconds = 0.0
        self.write_seconds = 0.0

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The database thread; run reads on it too, so they see every committed batch."""
        return self._executor

    def add(self, changes: Any) -> None:
        """Queue a change set (a ``TaskChanges`` or ``LockChanges``: anything with ``merge`` and
        ``worth_flushing``)."""
        if not changes.worth_flushing():
            return
        self._pending.append(changes)
        self._added += 1
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())

    async def sync(self) -> None:
        target = self._added
        if self._done >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                parts, self._pending = self._pending, []
                batch = type(parts[0]).merge(parts)
                target = self._added
                if batch:
                    started = time.perf_counter()
                    await asyncio.sleep(0)  # let coroutines that are ready join this batch
                    if self._pending:
                        batch = type(batch).merge([batch, *self._pending])
                        parts, self._pending = [*parts, *self._pending], []
                        target = self._added
                    error = await self._commit(batch)
                    if error is not None:
                        batch = await self._salvage(parts, error)
                    self.commit_seconds += time.perf_counter() - started
                    self.commits += 1
                    self.events_written += len(batch.events)
                self._done = target
                self._on_committed(batch)
                still_waiting = []
                for wanted, future in self._waiters:
                    if wanted <= self._done:
                        if not future.done():
                            future.set_result(None)
                    else:
                        still_waiting.append((wanted, future))
                self._waiters = still_waiting
        finally:
            self._flushing = False

    async def _commit(self, changes: Any) -> BaseException | None:
        """Commit ``changes`` in one transaction, waiting out outages; None once committed, or
        the error saying its own values cannot be stored (only with an ``on_unstorable``)."""
        self._batch += 1
        mark = Mark(self._writer, self._epoch, self._batch)
        # Written in this same step: the objects cannot change while rows are built.
        error = self._write_inline(changes, mark)
        if error is None:
            return None
        if self._on_unstorable is not None and is_data_error(error):
            return error
        log.warning("commit failed (%s: %s); retrying off the event loop", type(error).__name__, _short(error))
        try:
            prepared = self._store.prepare(changes)  # a snapshot, before anything else runs
        except Exception as exc:  # noqa: BLE001 - building the rows failed: their values are the cause
            if self._on_unstorable is not None:
                return exc
            _exit_for_restart(exc)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._write_with_retry, prepared, mark)

    async def _salvage(self, parts: list[Any], error: BaseException) -> Any:
        """The backstop, for a batch that failed on its own values: commit its change sets one by
        one, in order; one that cannot be stored goes to ``on_unstorable``, whose repair (the
        same changes with the tasks concerned failed) is committed in its place. Returns what
        was committed, as one change set. A repair that cannot be stored either ends the
        process as an outage does (``on_unstorable`` decides how many repairs to try)."""
        log.error(
            "a batch could not be stored (%s: %s); committing its %d change sets one by one",
            type(error).__name__, _short(error), len(parts),
        )
        committed = []
        for part in parts:
            changes, rounds = part, 0
            failure = await self._commit(changes) if changes else None
            while failure is not None:
                repair = self._on_unstorable(changes, failure, rounds)  # type: ignore[misc]
                if repair is None:
                    _exit_for_restart(failure)
                changes, rounds = repair, rounds + 1
                failure = await self._commit(changes)
            committed.append(changes)
        return type(parts[0]).merge(committed)

    def _write_inline(self, batch: Any, mark: Mark) -> BaseException | None:
        """Write on the event loop's own thread: no thread hand-offs, and calls that arrive
        meanwhile queue up to form the next batch. Returns the error if it failed: the caller
        then retries on the database thread, so an outage never blocks the loop in a sleep."""
        try:
            t0 = time.perf_counter()
            self._store.apply(batch, mark)
            self.write_seconds += time.perf_counter() - t0
            return None
        except Exception as exc:  # noqa: BLE001 - retried, salvaged or judged fatal by the caller
            return exc

    def _write_with_retry(self, prepared: Any, mark: Mark) -> BaseException | None:
        """Write prepared rows, retrying outages; None once written, or the error saying its
        values cannot be stored (only with an ``on_unstorable``, else the process exits)."""
        started = time.monotonic()
        delay = 0.05
        while True:
            try:
                if self._store.committed(mark):
                    return None  # the attempt that "failed" had committed
                t0 = time.perf_counter()
                self._store.write(prepared, mark)
                self.write_seconds += time.perf_counter() - t0
                return None
            except Exception as exc:  # noqa: BLE001 - every failure is retried, returned or fatal below
                _exit_if_replaced(exc)  # first: a fenced-off writer's refusal is not a data error
                if self._on_unstorable is not None and is_data_error(exc):
                    return exc
                if is_permanent_error(exc) or time.monotonic() - started > self._give_up_after:
                    _exit_for_restart(exc)
                log.warning("commit failed (%s: %s); retrying in %.2fs", type(exc).__name__, _short(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _exit_for_restart(exc: BaseException) -> NoReturn:
    log.critical(
        "cannot commit a batch (%s: %s); exiting so that Ray restarts this actor from the database",
        type(exc).__name__,
        _short(exc),
    )
    logging.shutdown()
    os._exit(70)


def _exit_if_replaced(exc: Exception) -> None:
    """A writer whose owner epoch was replaced commits nothing more (``actors.startup``): its
    process exits (in-process use: the error is raised, never retried)."""
    from omoi_ray.errors import OwnershipLostError

    if isinstance(exc, OwnershipLostError):
        from actors.startup import exit_replaced

        exit_replaced(exc)
        raise exc


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:300]
