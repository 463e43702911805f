"""Deadlines by due time: retry backoffs, attempt timeouts, agent leases, hand-off offers.

Rules:
- An entry is a promise to look again at ``(kind, key, token)`` once its time has come; it is
  not a decision. The owner re-checks current state when the entry fires, so entries made stale
  by later changes are harmless and never need to be removed.
- Ties fire in insertion order.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable


class Timers:
    """Entries ``(at, kind, key)`` by due time; the owner dispatches each due entry by ``kind``."""

    def __init__(self) -> None:
        """No entries."""
        self._heap: list[tuple[float, int, str, Hashable]] = []
        self._counter = itertools.count()

    def __len__(self) -> int:
        """The number of entries, stale ones included."""
        return len(self._heap)

    def add(self, at: float, kind: str, key: Hashable) -> None:
        """Remember to look at ``key`` again at time ``at``.

        Args:
            at: due time, seconds on the caller's clock.
            kind: what the entry is for (``"lease"``, ``"wait"``, ``"retry"``, ``"timeout"``,
                ``"handoff"``), chosen by the owner.
            key: what to look at (a grant id, a ``(task id, attempt)`` pair...).
        """
        heapq.heappush(self._heap, (at, next(self._counter), kind, key))

    def next_due(self) -> float | None:
        """Return the earliest due time (seconds), or None when no entry is left."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[str, Hashable]]:
        """Remove and return the entries due at or before ``now`` (seconds).

        Returns:
            list of ``(kind, key)``, earliest due first, ties in insertion order.
        """
        due: list[tuple[str, Hashable]] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, kind, key = heapq.heappop(self._heap)
            due.append((kind, key))
        return due
