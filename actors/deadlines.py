"""A timer for an actor's earliest deadline: it sleeps until then, or until poked. No polling.

Rules:
- The owner's ``next_due()`` is the only source of the deadline; the loop asks it again after
  every wake-up, so it never acts on a stale deadline.
- ``fire(now)`` runs on the actor's event loop with the wall clock (``time.time()``, seconds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class DeadlineLoop:
    """Call ``fire(now)`` whenever the earliest deadline (``next_due()``) has passed.

    Call ``poke()`` after any change that may have brought a deadline forward; it wakes the loop
    only when the new deadline is earlier than the one it sleeps towards.
    """

    def __init__(self, next_due: Callable[[], float | None], fire: Callable[[float], None]) -> None:
        """Start the loop as a task on the running event loop.

        Args:
            next_due: returns the earliest deadline (Unix seconds), or None when there is none.
            fire: called with the current time (Unix seconds) once that deadline has passed.
        """
        self._next_due = next_due
        self._fire = fire
        self._wake = asyncio.Event()
        self._due: float | None = None
        self._task = asyncio.get_event_loop().create_task(self._run())

    def poke(self) -> None:
        """Wake the loop if ``next_due()`` is now earlier than the deadline it sleeps towards."""
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
