"""``follow``: an async iterator over committed events, from Redis when configured, else the database.

Rules:
- ``since``: ``None`` starts after the newest event (only new ones), ``"0-0"`` from the oldest
  event still retained, any other position strictly after it. Resume by passing the
  ``position`` of the last event you handled.
- Each position is yielded at most once and in increasing order, so events of one entity come
  in commit order. Nothing committed is skipped: when the stream shows a gap (its ``p`` field
  is past the last position yielded: trimmed or Redis restarted empty), the missing events are
  read from the database first.
- Redis unreachable, or its stream not this database's (no relay with Redis runs, or the prefix
  belongs to another runtime): ``follow`` reads the database meanwhile and looks at Redis again
  every couple of seconds. Database outages are waited out.
- ``types``: shell-style patterns (``task.*``); matching happens here, so skipped events still
  advance the position.
- Arguments are checked when ``follow`` is called, before anything is read: a bad one raises
  ``InvalidEventQueryError`` naming it (``poll`` from ``MIN_POLL_S`` to ``MAX_POLL_S`` seconds,
  ``batch`` from 1 to ``MAX_FOLLOW_BATCH``, positions up to ``MAX_POSITION``).
- Needs no Ray: it reads Redis and the database directly, so any process can follow.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from omoi_ray.core import storable
from omoi_ray.core.events import matches
from omoi_ray.errors import InvalidEventQueryError
from omoi_ray.settings import Settings
from omoi_ray.specs.events import EventRecord, Position
from omoi_ray.store.stream import StreamKeys, decode_entry

_PATTERN = re.compile(r"[A-Za-z0-9_.*?\[\]-]{1,128}")  # matched whole
# Brackets only as whole, non-empty sets ("[abc]"): a lone "[" would silently match nothing.
_SETS = re.compile(r"(?:[^\[\]]|\[[^\[\]]+\])*")
BLOCK_MS = 1000
REDIS_RETRY = 2.0  # seconds between attempts to get back to Redis after an outage


def check_types(types: Iterable[str] | str | None) -> tuple[str, ...]:
    """Validate type patterns (``task.*``): one pattern, or a list, tuple or set of them; a typed
    error naming the bad one. A ``[`` must open a complete set such as ``[ab]``."""
    if types is None:
        return ()
    if isinstance(types, str):
        types = [types]
    elif not isinstance(types, (list, tuple, set, frozenset)):
        raise InvalidEventQueryError(f"types must be a pattern or a list of patterns, not {types!r}")
    out = []
    for p in types:
        if not isinstance(p, str) or not _PATTERN.fullmatch(p):
            raise InvalidEventQueryError(
                f"event type pattern {p!r} is not valid: use letters, digits, '.', '_', '-' and "
                "wildcards '*', e.g. 'task.*'"
            )
        if not _SETS.fullmatch(p):
            raise InvalidEventQueryError(
                f"event type pattern {p!r} has a '[' or ']' outside a set of characters like 'task.[sc]*'"
            )
        out.append(p)
    return tuple(out)


def follow(
    settings: Settings | None = None,
    *,
    since: str | Position | None = None,
    types: Iterable[str] | str | None = None,
    batch: int = 500,
    poll: float = 0.2,
    use_redis: bool = True,
) -> AsyncIterator[EventRecord]:
    """Yield committed events after ``since`` forever (until the caller stops iterating).

    ``since``: None (new events only), ``"0-0"`` (from the oldest retained) or a position;
    ``types``: a pattern or a list of them; ``batch``: events per read (1 to
    ``MAX_FOLLOW_BATCH``); ``poll``: seconds between database reads once caught up
    (``MIN_POLL_S`` to ``MAX_POLL_S``); ``use_redis``: a bool. Raises ``InvalidEventQueryError``
    naming a bad argument at once, when called (not at the first iteration).
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= storable.MAX_FOLLOW_BATCH:
        raise InvalidEventQueryError(f"batch must be an integer from 1 to {storable.MAX_FOLLOW_BATCH}, not {batch!r}")
    try:
        poll = storable.check_seconds(poll, "poll", maximum=storable.MAX_POLL_S)
    except ValueError as exc:
        raise InvalidEventQueryError(str(exc)) from None
    if poll < storable.MIN_POLL_S:
        raise InvalidEventQueryError(f"poll must be at least {storable.MIN_POLL_S:g} seconds, not {poll!r}")
    if not isinstance(use_redis, bool):
        raise InvalidEventQueryError(f"use_redis must be True or False, not {use_redis!r}")
    if settings is not None and not isinstance(settings, Settings):
        raise InvalidEventQueryError(f"settings must be a Settings object, not {type(settings).__name__}")
    start = None if since is None else Position.parse(since)
    patterns = check_types(types)
    return _follow(settings or Settings(), start, patterns, batch, poll, use_redis)


async def _follow(
    settings: Settings, since: Position | None, patterns: tuple[str, ...], batch: int, poll: float, use_redis: bool
) -> AsyncIterator[EventRecord]:
    from omoi_ray.store.events import EventLog
    from omoi_ray.store.store import make_engine

    engine = make_engine(settings.resolved_database_url())
    log = EventLog(engine)
    try:
        position = await asyncio.to_thread(log.latest) if since is None else since
        feed = _Feed(log, position, patterns, batch)
        url = settings.resolved_redis_url() if use_redis else None
        if url is None:
            async for event in feed.from_database(poll):
                yield event
        else:
            async for event in feed.from_redis(url, StreamKeys(settings.redis_prefix), poll):
                yield event
    finally:
        engine.dispose()


class _Feed:
    def __init__(self, log: Any, position: Position, patterns: tuple[str, ...], batch: int) -> None:
        self.log = log
        self.position = position
        self.patterns = patterns
        self.batch = batch

    def _take(self, events: list[EventRecord]) -> list[EventRecord]:
        """Advance past ``events`` (all after the position); those matching the filter."""
        out = []
        for e in events:
            pos = e.pos
            if pos <= self.position:
                continue
            self.position = pos
            if matches(e.type, self.patterns):
                out.append(e)
        return out

    async def _db_page(self, before: Position | None = None) -> list[EventRecord]:
        """The next page from the database; waits out database outages (backing off to 5 s)."""
        import sqlalchemy as sa

        delay = 0.1
        while True:
            try:
                return await asyncio.to_thread(self.log.read_after, self.position, self.batch, before=before)
            except sa.exc.DBAPIError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def from_database(self, poll: float, until: float | None = None) -> AsyncIterator[EventRecord]:
        """Read the database; stops at ``until`` (a monotonic time) when given and caught up."""
        while True:
            rows = await self._db_page()
            for e in self._take(rows):
                yield e
            if len(rows) < self.batch:
                if until is not None and time.monotonic() >= until:
                    return
                await asyncio.sleep(poll)

    async def _fill(self, before: Position) -> AsyncIterator[EventRecord]:
        """Everything between the position and ``before`` (exclusive), from the database."""
        while True:
            rows = await self._db_page(before)
            for e in self._take(rows):
                yield e
            if len(rows) < self.batch:
                return

    async def from_redis(self, url: str, keys: StreamKeys, poll: float) -> AsyncIterator[EventRecord]:
        import redis.asyncio as aioredis
        from redis import exceptions as rexc
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        identity = await asyncio.to_thread(lambda: self.log.identity("redis", create=False))
        client = aioredis.Redis.from_url(url, socket_timeout=BLOCK_MS / 1000 + 5, socket_connect_timeout=5,
                                         retry=Retry(NoBackoff(), 0))
        checked = False  # whether the stream was seen to mirror this database since (re)connecting
        try:
            while True:
                try:
                    if not checked:
                        owner = await client.get(keys.owner)
                        checked = (owner.decode() if isinstance(owner, bytes) else owner) == identity
                        if not checked:
                            raise _NotOurs
                    reply = await client.xread({keys.stream: str(self.position)}, count=self.batch, block=BLOCK_MS)
                except (rexc.ConnectionError, rexc.TimeoutError, _NotOurs):
                    # Redis is down, or its stream is not (yet) this database's: serve from the
                    # database for a while, then look at Redis again
                    checked = False
                    async for e in self.from_database(poll, until=time.monotonic() + REDIS_RETRY):
                        yield e
                    continue
                for _stream, entries in reply or ():
                    for entry_id, fields in entries:
                        event, previous = decode_entry(fields)
                        if previous > self.position:  # entries missing from the stream
                            async for e in self._fill(event.pos):
                                yield e
                        for e in self._take([event]):
                            yield e
        finally:
            await client.aclose()


class _NotOurs(Exception):
    """The stream under the prefix is missing or mirrors another database."""


__all__ = ["follow", "check_types"]
