"""An agent's live inbox: the messages the scheduler hands the agent as they commit.

Rules:
- One inbox per agent process, shared by its running handlers (``ctx.inbox``): each message is
  taken by the first ``get`` that asks (a queue, not a broadcast between handlers).
- The scheduler delivers a message to the agent right after the message commits (one call per
  agent per commit); nothing polls the database.
- Messages that arrive while no handler reads wait in the inbox, at most ``MAX_INBOX`` of them:
  past that the oldest is dropped (``dropped`` counts them). A dropped message, or one that was
  in the inbox when the agent's process ended, is still unread in the database:
  ``rt.messages.unread(agent)`` lists it. Taking a message from the inbox does not mark it read
  (``ctx.mark_read`` does).
- ``get`` works from any thread: delivery runs on the agent's control loop, sync handlers on pool
  threads, async handlers on event loops of their own. Called inside a running event loop (an
  async handler), ``get`` returns an awaitable; elsewhere it blocks.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Iterable
from typing import Any

#: most messages an inbox holds before it drops the oldest
MAX_INBOX = 10_000


class Inbox:
    """A thread-safe queue of delivered messages (``MessageInfo``), oldest first.

    Args:
        maxlen: most messages held (the oldest is dropped past it).

    Attributes:
        dropped: how many messages were dropped because the inbox was full.
        delivered: how many messages were put in.
    """

    def __init__(self, maxlen: int = MAX_INBOX) -> None:
        self._items: deque[Any] = deque()
        self._maxlen = maxlen
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        #: async readers waiting: (their loop, a future to wake)
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.dropped = 0
        self.delivered = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def put_many(self, messages: Iterable[Any]) -> None:
        """Add messages (oldest first) and wake readers; drops the oldest past ``maxlen``."""
        with self._lock:
            for message in messages:
                if len(self._items) >= self._maxlen:
                    self._items.popleft()
                    self.dropped += 1
                self._items.append(message)
                self.delivered += 1
            waiters, self._waiters = self._waiters, []
            self._ready.notify_all()
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_wake, future)
            except RuntimeError:  # that reader's loop is closed: nobody waits there
                pass

    def get_nowait(self) -> Any:
        """The oldest message, or None if the inbox is empty."""
        with self._lock:
            return self._items.popleft() if self._items else None

    def get(self, timeout: float | None = None) -> Any:
        """The oldest message, waiting up to ``timeout`` seconds (None: as long as it takes).

        Returns:
            In a sync handler (no running event loop): the message (a ``MessageInfo``), or None
            if none came in time. In an async handler: an awaitable of the same.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._get_blocking(timeout)
        return self._get_async(timeout)

    def _get_blocking(self, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while not self._items:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._ready.wait(left)
            return self._items.popleft()

    def _get_async(self, timeout: float | None) -> Awaitable[Any]:
        async def get() -> Any:
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while True:
                with self._lock:
                    if self._items:
                        return self._items.popleft()
                    woken: asyncio.Future[None] = loop.create_future()
                    self._waiters.append((loop, woken))
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    self._forget(loop, woken)
                    return None
                try:
                    await asyncio.wait({woken}, timeout=left)
                finally:
                    self._forget(loop, woken)

        return get()

    def _forget(self, loop: asyncio.AbstractEventLoop, woken: asyncio.Future[None]) -> None:
        with self._lock:
            try:
                self._waiters.remove((loop, woken))
            except ValueError:
                pass


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
