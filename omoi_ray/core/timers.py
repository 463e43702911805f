"""Deadlines by due time: retry backoffs, attempt timeouts, agent leases.

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
        self._heap: list[tuple[float, int, str, Hashable]] = []
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, at: float, kind: str, key: Hashable) -> None:
        """Look again at ``(kind, key)`` once the clock reaches ``at`` (seconds since the epoch)."""
        heapq.heappush(self._heap, (at, next(self._counter), kind, key))

    def next_due(self) -> float | None:
        """The earliest due time, or None if there is no entry."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[str, Hashable]]:
        """Remove and return ``(kind, key)`` of every entry due at ``now``, earliest first."""
        due: list[tuple[str, Hashable]] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, kind, key = heapq.heappop(self._heap)
            due.append((kind, key))
        return due
