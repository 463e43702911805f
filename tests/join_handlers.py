"""Handlers of the join and pattern tests: sources return their payload's ``result``; a join
returns what ``ctx.merged()`` (or ``await ctx.merged_async()``) gives it."""

from __future__ import annotations

from typing import Any


def source(task: Any) -> Any:
    """Return the payload's ``result`` (None when absent)."""
    return (task.payload or {}).get("result")


def join(task: Any, ctx: Any) -> Any:
    """Return ``{"merged": ctx.merged()}``."""
    return {"merged": ctx.merged()}


async def join_async(task: Any, ctx: Any) -> Any:
    """Return ``{"merged": await ctx.merged_async()}``."""
    return {"merged": await ctx.merged_async()}


def count_sources(sources: list[tuple[str, Any]]) -> dict[str, Any]:
    """A custom merge: the source ids in order and how many there are."""
    return {"ids": [s for s, _ in sources], "n": len(sources)}
