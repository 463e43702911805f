"""The scheduler actor's join calls: a join's merge inputs, and the record of its merge.

Part of ``SchedulerActor`` (``omoi_ray.actors.scheduler``), which composes one class per concept;
these methods use its graph, store and commit like the rest of it.

Rules:
- The merge itself runs in the handler's process (``omoi_ray.handler.merge``), where a
  ``custom`` strategy's function is imported: user code never runs in the scheduler.
- ``merge_inputs`` reads the join's strategy and its upstream results (memory, else rows) in
  ``depends_on`` order; a sync upstream (kind ``"sync"``) contributes its members
  (``core.merge.sources_of``).
- ``record_merge`` writes ``coordination.merge.completed`` and replies once it is committed.
"""

from __future__ import annotations

import time
from typing import Any

from omoi_ray.core.merge import sources_of
from omoi_ray.errors import InvalidArgumentError, TaskNotFoundError
from omoi_ray.specs.tasks import check_task_id


class JoinCalls:
    """The join part of the scheduler actor (``merge_inputs``, ``record_merge``)."""

    async def merge_inputs(self, task_id: str) -> dict[str, Any]:
        """A join's merge strategy and sources; called by its handler (``ctx.merged()``).

        Args:
            task_id: the join task (live: its attempt is running).

        Returns:
            ``{"merge": normalised strategy or None, "sources": [(source id, result), ...]}``.

        Raises:
            InvalidArgumentError: ``task_id`` is not a task id.
            TaskNotFoundError: the task is not live (it ended, or never existed).
        """
        check_task_id(task_id)
        await self.commit.sync()
        task = self.graph.tasks.get(task_id)
        if task is None:
            raise TaskNotFoundError(f"task '{task_id}' is not running: no merge inputs", task_ids=[task_id])
        merge = task.merge
        infos = await self.get(list(task.depends_on))  # live or stored, in order
        return {"merge": merge, "sources": sources_of([(i.id, i.kind, i.result) for i in infos])}

    async def record_merge(self, task_id: str, attempt: int, summary: dict[str, Any]) -> bool:
        """Record ``coordination.merge.completed`` for a join's attempt, once committed.

        Args:
            task_id, attempt: the join task and its attempt.
            summary: ``{"strategy", "sources", "result_keys"}`` (``core.merge.summary``).

        Returns:
            True if recorded; False for an attempt that is no longer active.

        Raises:
            InvalidArgumentError: a bad argument.
        """
        check_task_id(task_id)
        if isinstance(attempt, bool) or not isinstance(attempt, int) or not isinstance(summary, dict):
            raise InvalidArgumentError(f"task '{task_id}': record_merge takes an attempt number and a summary dict")
        fields = {"strategy": summary.get("strategy"), "sources": summary.get("sources"),
                  "result_keys": summary.get("result_keys")}
        if not (isinstance(fields["strategy"], str) and all(isinstance(fields[k], list) for k in ("sources", "result_keys"))):
            raise InvalidArgumentError(f"task '{task_id}': a merge summary has strategy, sources and result_keys")
        recorded = self.graph.record_merge(task_id, attempt, fields, time.time())
        if recorded:
            self._after_change()
            await self.commit.sync()
        return recorded
