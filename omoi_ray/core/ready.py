"""Ready tasks, indexed so that claiming a batch costs O(batch * log n), not a scan.

Rules:
- Tasks are grouped by (their type, the set of capabilities they require); each group is a heap
  ordered by (priority, highest first; then submission sequence, lowest first).
- An agent may take a task when the task's required set is a subset of the agent's
  capabilities and the agent handles the task's type: ``handles`` None (a default handler)
  handles every type, else exactly the types named. The groups an agent may draw from are
  computed once per distinct (capabilities, handles) and cached until a group appears or goes.
- A group is dropped as soon as it holds no task, so the groups visited are those holding
  tasks now, not every (capabilities, type) ever seen.
- ``pop_for`` merges the heads of the eligible groups, so it returns exactly the highest-priority,
  earliest-submitted tasks the agent is able to do.
- Removal is lazy: ``discard`` forgets membership; stale heap entries are skipped when reached
  and the heaps are rebuilt when stale entries outnumber live ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

Key = tuple[int, int]  # (-priority, seq)
#: a group of ready tasks: (task type, required capabilities), the order ``unhandled`` reports
#: at the edge too
Group = tuple[str, frozenset[str]]
#: what an agent offers: (capabilities, task types handled or None for every type)
Profile = tuple[frozenset[str], frozenset[str] | None]


def handles_type(handles: frozenset[str] | None, task_type: str) -> bool:
    """Whether an agent handling ``handles`` runs tasks of ``task_type``: the one home of this
    rule (claiming here, ``Agent.can_run``, ``ranking.eligible``).

    Args:
        handles: the task types the agent handles, or None (a default handler: every type).
        task_type: the task's type.

    Returns:
        True if ``handles`` is None or names ``task_type``.
    """
    return handles is None or task_type in handles


class ReadyIndex:
    """The ready tasks, grouped by (type, required capability set), each group a priority heap
    (see Rules)."""

    def __init__(self) -> None:
        """An empty index."""
        self._heaps: dict[Group, list[tuple[int, int, str]]] = {}
        self._members: dict[str, tuple[Group, Key]] = {}
        self._sizes: dict[Group, int] = {}
        self._eligible: dict[Profile, tuple[Group, ...]] = {}
        self._stale = 0

    def __len__(self) -> int:
        """The number of ready tasks held."""
        return len(self._members)

    def __contains__(self, task_id: str) -> bool:
        """True if ``task_id`` is held (pushed, not yet popped or discarded)."""
        return task_id in self._members

    def push(self, task_id: str, requires: frozenset[str], priority: int, seq: int, *, task_type: str) -> None:
        """Add a ready task; a task already present is left as it is.

        Args:
            task_id: the task's id.
            requires: the capability names the task needs (an agent must have them all).
            priority: higher is taken first.
            seq: submission sequence number; lower is taken first among equal priorities.
            task_type: the task's type (an agent must handle it).
        """
        if task_id in self._members:
            return
        group = (task_type, requires)
        heap = self._heaps.get(group)
        if heap is None:
            heap = self._heaps[group] = []
            self._sizes[group] = 0
            self._eligible.clear()  # a new group may be eligible for cached profiles
        key = (-priority, seq)
        heapq.heappush(heap, (key[0], key[1], task_id))
        self._members[task_id] = (group, key)
        self._sizes[group] += 1

    def discard(self, task_id: str) -> bool:
        """Forget a task (cancelled, failed upstream...). Returns True if it was present."""
        member = self._members.pop(task_id, None)
        if member is None:
            return False
        self._sizes[member[0]] -= 1
        self._stale += 1
        self._drop_if_empty(member[0])
        if self._stale > 1024 and self._stale > len(self._members):
            self._compact()
        return True

    def pop_for(self, capabilities: frozenset[str], limit: int, *, handles: frozenset[str] | None) -> list[str]:
        """Remove and return up to ``limit`` task ids an agent with this profile may run, best first.

        Args:
            capabilities: the agent's capability names.
            limit: most task ids to take (<= 0 takes none).
            handles: the task types the agent handles, or None for every type.

        Returns:
            list[str] of task ids, highest priority then earliest submitted first.
        """
        if limit <= 0 or not self._members:
            return []
        heads: list[tuple[int, int, str, Group]] = []
        for group in self._eligible_groups(capabilities, handles):
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
            else:
                self._drop_if_empty(group)
        return taken

    def counts_by_requirement(self) -> dict[frozenset[str], int]:
        """Return the number of ready tasks per required capability set, whatever their type
        (empty groups left out)."""
        counts: dict[frozenset[str], int] = {}
        for (_, requires), size in self._sizes.items():
            if size:
                counts[requires] = counts.get(requires, 0) + size
        return counts

    def _group_sizes(self, only: Iterable[str] | None) -> dict[Group, int]:
        """Ready tasks per group: all of them, or only those of ``only`` that are held."""
        if only is None:
            return self._sizes
        sizes: dict[Group, int] = {}
        for task_id in set(only):
            member = self._members.get(task_id)
            if member is not None:
                sizes[member[0]] = sizes.get(member[0], 0) + 1
        return sizes

    def unclaimable(
        self, capability_sets: Iterable[frozenset[str]], only: Iterable[str] | None = None
    ) -> dict[frozenset[str], int]:
        """Ready tasks that no agent with one of ``capability_sets`` has the capabilities for
        (whatever their type).

        Args:
            capability_sets: the capability sets of the agents alive.
            only: count only these task ids (those not held here are ignored); None counts
                every ready task.

        Returns:
            dict[frozenset[str], int]: required capability set -> how many such tasks (sets
            with none left out).
        """
        sets = set(capability_sets)
        counts: dict[frozenset[str], int] = {}
        for (_, requires), size in self._group_sizes(only).items():
            if size and not any(requires <= caps for caps in sets):
                counts[requires] = counts.get(requires, 0) + size
        return counts

    def unhandled(self, profiles: Iterable[Profile], only: Iterable[str] | None = None) -> dict[Group, int]:
        """Ready tasks that some agent of ``profiles`` has the capabilities for but none of those
        handles the type of (tasks no agent has the capabilities for are ``unclaimable``).

        Args:
            profiles: ``(capabilities, handles)`` of the agents alive (``handles`` None: every
                type).
            only: count only these task ids (those not held here are ignored); None counts
                every ready task.

        Returns:
            dict[Group, int]: ``(task type, required capability set)`` -> how many such tasks
            (groups with none left out).
        """
        offered = set(profiles)
        counts: dict[Group, int] = {}
        for (task_type, requires), size in self._group_sizes(only).items():
            if not size:
                continue
            able = [handles for caps, handles in offered if requires <= caps]
            if able and not any(handles_type(h, task_type) for h in able):
                counts[(task_type, requires)] = size
        return counts

    # -- internals ---------------------------------------------------------------------------

    def _eligible_groups(self, capabilities: frozenset[str], handles: frozenset[str] | None) -> tuple[Group, ...]:
        profile = (capabilities, handles)
        groups = self._eligible.get(profile)
        if groups is None:
            groups = tuple(g for g in self._heaps if g[1] <= capabilities and handles_type(handles, g[0]))
            self._eligible[profile] = groups
        return groups

    def _drop_if_empty(self, group: Group) -> None:
        """Forget ``group`` once it holds no task, so the groups ``pop_for`` visits are those
        holding tasks now, not every group ever seen; its leftover heap entries were all stale."""
        if self._sizes[group]:
            return
        self._stale = max(0, self._stale - len(self._heaps.pop(group)))
        del self._sizes[group]
        self._eligible.clear()  # cached profiles may list the group

    def _clean_head(self, group: Group) -> bool:
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
