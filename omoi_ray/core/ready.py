"""Ready tasks, indexed so that claiming a batch costs O(batch * log n), not a scan.

Rules:
- Tasks are grouped by the set of capabilities they require; each group is a heap ordered by
  (priority, highest first; then submission sequence, lowest first).
- An agent may take a task when the task's required set is a subset of the agent's
  capabilities. The groups an agent may draw from are computed once per distinct capability
  set and cached until a new group appears.
- ``pop_for`` merges the heads of the eligible groups, so it returns exactly the highest-priority,
  earliest-submitted tasks the agent is able to do.
- Removal is lazy: ``discard`` forgets membership; stale heap entries are skipped when reached
  and the heaps are rebuilt when stale entries outnumber live ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

Key = tuple[int, int]  # (-priority, seq)


class ReadyIndex:
    """The ready tasks, grouped by required capability set, each group a priority heap (see Rules)."""

    def __init__(self) -> None:
        """An empty index."""
        self._heaps: dict[frozenset[str], list[tuple[int, int, str]]] = {}
        self._members: dict[str, tuple[frozenset[str], Key]] = {}
        self._sizes: dict[frozenset[str], int] = {}
        self._eligible: dict[frozenset[str], tuple[frozenset[str], ...]] = {}
        self._stale = 0

    def __len__(self) -> int:
        """The number of ready tasks held."""
        return len(self._members)

    def __contains__(self, task_id: str) -> bool:
        """True if ``task_id`` is held (pushed, not yet popped or discarded)."""
        return task_id in self._members

    def push(self, task_id: str, requires: frozenset[str], priority: int, seq: int) -> None:
        """Add a ready task; a task already present is left as it is.

        Args:
            task_id: the task's id.
            requires: the capability names the task needs (an agent must have them all).
            priority: higher is taken first.
            seq: submission sequence number; lower is taken first among equal priorities.
        """
        if task_id in self._members:
            return
        heap = self._heaps.get(requires)
        if heap is None:
            heap = self._heaps[requires] = []
            self._sizes[requires] = 0
            self._eligible.clear()  # a new group may be eligible for cached capability sets
        key = (-priority, seq)
        heapq.heappush(heap, (key[0], key[1], task_id))
        self._members[task_id] = (requires, key)
        self._sizes[requires] += 1

    def discard(self, task_id: str) -> bool:
        """Forget a task (cancelled, failed upstream...). Returns True if it was present."""
        member = self._members.pop(task_id, None)
        if member is None:
            return False
        self._sizes[member[0]] -= 1
        self._stale += 1
        if self._stale > 1024 and self._stale > len(self._members):
            self._compact()
        return True

    def pop_for(self, capabilities: frozenset[str], limit: int) -> list[str]:
        """Remove and return up to ``limit`` task ids this capability set may run, best first.

        Args:
            capabilities: the agent's capability names.
            limit: most task ids to take (<= 0 takes none).

        Returns:
            list[str] of task ids, highest priority then earliest submitted first.
        """
        if limit <= 0 or not self._members:
            return []
        heads: list[tuple[int, int, str, frozenset[str]]] = []
        for group in self._eligible_groups(capabilities):
            if self._sizes[group] and self._clean_head(group):
                top = self._heaps[group][0]
                heads.append((top[0], top[1], top[2], group))
        heapq.heapify(heads)
        taken: list[str] = []
        while heads and len(taken) < limit:
            _, _, task_id, group = heapq.heappop(heads)
            heap = self._heaps[group]
            heapq.heappop(heap)
            del self._members[task_id]
            self._sizes[group] -= 1
            taken.append(task_id)
            if self._sizes[group] and self._clean_head(group):
                top = heap[0]
                heapq.heappush(heads, (top[0], top[1], top[2], group))
        return taken

    def counts_by_requirement(self) -> dict[frozenset[str], int]:
        """Return the number of ready tasks per required capability set (empty groups left out)."""
        return {group: size for group, size in self._sizes.items() if size}

    def unclaimable(self, capability_sets: Iterable[frozenset[str]]) -> dict[frozenset[str], int]:
        """Groups of ready tasks that no agent with one of ``capability_sets`` is able to run."""
        sets = list(capability_sets)
        return {
            group: size
            for group, size in self._sizes.items()
            if size and not any(group <= caps for caps in sets)
        }

    # -- internals ---------------------------------------------------------------------------

    def _eligible_groups(self, capabilities: frozenset[str]) -> tuple[frozenset[str], ...]:
        groups = self._eligible.get(capabilities)
        if groups is None:
            groups = tuple(g for g in self._heaps if g <= capabilities)
            self._eligible[capabilities] = groups
        return groups

    def _clean_head(self, group: frozenset[str]) -> bool:
        """Drop stale entries from the top of a group's heap; True if a live head remains."""
        heap = self._heaps[group]
        while heap:
            neg_priority, seq, task_id = heap[0]
            member = self._members.get(task_id)
            if member is not None and member[0] == group and member[1] == (neg_priority, seq):
                return True
            heapq.heappop(heap)
            self._stale = max(0, self._stale - 1)
        return False

    def _compact(self) -> None:
        for group in self._heaps:
            self._heaps[group] = []
        for task_id, (group, key) in self._members.items():
            self._heaps[group].append((key[0], key[1], task_id))
        for heap in self._heaps.values():
            heapq.heapify(heap)
        self._stale = 0
