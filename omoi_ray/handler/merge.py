"""A join's merge, computed where its handler runs: the one place a ``custom`` strategy's
function is imported (never in the core, never in the scheduler).

Rules:
- ``custom`` imports ``function`` (``pkg.module:name``) in the agent's process and calls it as
  ``fn(sources)`` with ``sources`` a list of ``(source_id, result)`` in join order; what it
  returns is the merge. An import path that does not resolve is a ``MergeError``; whatever the
  function raises reaches the handler unchanged.
- Built-in strategies are ``omoi_ray.core.merge``'s pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omoi_ray.core import merge as core_merge
from omoi_ray.errors import HandlerNotFoundError, MergeError


def compute(task_id: str, spec: Mapping[str, Any] | None, sources: Sequence[tuple[str, Any]]) -> Any:
    """Merge a join's ``sources`` by its ``spec``.

    Args:
        task_id: the join task, for messages.
        spec: the task's normalised merge strategy (``core.merge.check_merge``), None without one.
        sources: ``[(source_id, result), ...]`` in join order.

    Returns:
        The merge (the strategy's result).

    Raises:
        MergeError: the task declares no merge, the custom function cannot be imported, or the
            strategy refuses the sources (its subclasses ``MergeQuorumError``, ``MergeTieError``).
    """
    if spec is None:
        raise MergeError(f"task '{task_id}' declares no merge: give it merge=... (a strategy) to call ctx.merged()")
    custom = None
    if spec["strategy"] == "custom":
        from omoi_ray.handler.context import resolve_handler

        try:
            custom = resolve_handler(spec["function"])
        except HandlerNotFoundError as exc:
            raise MergeError(f"task '{task_id}': merge function {exc.message.removeprefix('handler ')}") from None
    return core_merge.merge(spec, sources, custom=custom)
