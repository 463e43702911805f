"""``rt.events``: what happened, as ``EventRecord``s: one entity's history, a live feed, the relay.

    for e in rt.events("db:orders"):                 # history (rt.events.list); oldest first
        print(e.position, e.type, e.payload)
    async for e in rt.events.follow(since="0-0", types=["task.*"]):
        ...

Rules:
- ``rt.events`` is callable: ``rt.events(entity_id, limit)`` is ``rt.events.list(...)``. History
  and ``follow`` yield the same ``EventRecord``s (the one row -> record mapping of
  ``omoi_ray.store.events``).
- History is read through the scheduler once its pending writes are committed, so a caller sees
  every event of the calls it made before.
- ``follow`` needs no Ray (see ``omoi_ray.client.follow``); the relay's calls ride out its
  restarts under the driver's call policy.
- Each call is defined once and offered blocking and awaitable (``_async``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from omoi_ray.client._args import argument, seconds
from omoi_ray.client.calls import Step, Steps, flavours
from omoi_ray.core import storable
from omoi_ray.errors import InvalidArgumentError
from omoi_ray.specs.events import EventRecord, Position

if TYPE_CHECKING:
    from omoi_ray.client.runtime import Runtime

#: seconds a flush call may take past its own ``timeout`` before the driver stops waiting
FLUSH_MARGIN_S = 30.0


class Events:
    """The events of one runtime (``rt.events``); call it to list them. Every call also has an
    ``_async`` flavour."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def __repr__(self) -> str:
        return f"<events of {self._rt!r}>"

    def __call__(self, entity_id: str | None = None, limit: int = 1000) -> list[EventRecord]:
        """``list``: the oldest ``limit`` retained events, of one entity if ``entity_id`` is given."""
        return self.list(entity_id, limit)

    def _list(self, entity_id: str | None = None, limit: int = 1000) -> Steps[list[EventRecord]]:
        """The oldest retained events, of one entity if ``entity_id`` is given.

        Args:
            entity_id: a task id, agent name, ``"type:id"`` resource, ... (None: every entity).
            limit: at most this many events (1 to ``MAX_EVENTS_LIMIT``).

        Returns:
            ``EventRecord``s in the order they were written (``position``, ``id``, ``type``,
            ``entity_type``, ``entity_id``, ``payload``, ``at``, ...).

        Raises:
            InvalidArgumentError: a bad ``entity_id`` or ``limit`` (named).
        """
        if entity_id is not None:
            argument(storable.check_text, entity_id, "entity_id", max_chars=1024, allow_newlines=False)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= storable.MAX_EVENTS_LIMIT:
            raise InvalidArgumentError(f"limit must be an integer from 1 to {storable.MAX_EVENTS_LIMIT}, not {limit!r}")
        return (yield Step(lambda: self._rt.scheduler.events.remote(entity_id, limit)))

    list, list_async = flavours(_list)

    def follow(
        self,
        since: str | Position | None = None,
        types: Iterable[str] | str | None = None,
        **options: Any,
    ) -> AsyncIterator[EventRecord]:
        """Committed events after ``since``, forever (until the caller stops iterating).

        Args:
            since: None (new events only), ``"0-0"`` (from the oldest retained) or a position.
            types: a pattern (``"task.*"``) or a list of them.
            **options: ``batch``, ``poll``, ``use_redis`` (see ``omoi_ray.client.follow.follow``).

        Returns:
            An async iterator of ``EventRecord``s, each position at most once, in order.

        Raises:
            InvalidEventQueryError: a bad argument, at once (not at the first iteration).
        """
        from omoi_ray.client.follow import follow

        return follow(self._rt.settings, since=since, types=types, **options)

    def _relay_status(self) -> Steps[dict[str, Any]]:
        """The event relay's state.

        Returns:
            ``{"redis" (masked URL or None), "redis_up", "stream", "prefix", "cursor",
            "saved_cursor", "mirrored", "resyncs", "pruned", "lag_seconds", "healthy",
            "last_error", "last_error_at", "pid"}``: ``healthy`` means its latest round
            succeeded; the latest failure is kept as ``last_error`` and ``last_error_at`` (Unix
            seconds, None if it never failed).
        """
        return (yield Step(lambda: self._rt.relay.describe.remote()))

    relay_status, relay_status_async = flavours(_relay_status)

    def _flush(self, timeout: float = 30.0) -> Steps[str]:
        """Wait until every event committed so far is on the Redis stream (no-op without Redis).

        Args:
            timeout: seconds to wait (above 0, at most ``MAX_WAIT_S``).

        Returns:
            The relay's position after the flush.

        Raises:
            InvalidArgumentError: a bad ``timeout``.
        """
        timeout = seconds(timeout, allow_zero=False)
        return (yield Step(lambda: self._rt.relay.flush.remote(timeout), timeout=timeout + FLUSH_MARGIN_S))

    flush, flush_async = flavours(_flush)


__all__ = ["Events"]
