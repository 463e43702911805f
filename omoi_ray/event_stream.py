"""The Redis side of events: key names, the entry format, and appending a batch to the stream.

Rules:
- One stream ``<prefix>:events`` holds every event; its entry id *is* the event's position (see
  ``omoi_ray.events``). Each entry has two fields: ``e`` (the event as JSON) and ``p`` (the
  position of the entry mirrored just before it). A reader whose last position is below ``p``
  knows it missed events (stream trimmed, Redis restarted empty) and reads them from the
  database.
- Each event is also published on ``<prefix>:events:<type>`` for fire-and-forget listeners
  (``PSUBSCRIBE <prefix>:events:task.*``). Pub/sub delivers only to those connected at the time.
- ``XADD`` ids must increase, so an entry can be added once: adding it again (a relay that
  restarted mid-batch) is refused by Redis and counted as already there.
- The stream is capped with ``MAXLEN ~``; the database remains the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from omoi_ray.events import EventRecord, Position


class StreamKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.stream = f"{prefix}:events"

    def channel(self, event_type: str) -> str:
        return f"{self.prefix}:events:{event_type}"

    def channel_pattern(self, type_pattern: str = "*") -> str:
        return f"{self.prefix}:events:{type_pattern}"


def stream_top(client: redis.Redis, keys: StreamKeys) -> Position | None:
    """The last id ever added to the stream (even if trimmed since), or None if there is no stream."""
    try:
        info = client.xinfo_stream(keys.stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    last = info.get("last-generated-id") or info.get(b"last-generated-id")
    if isinstance(last, bytes):
        last = last.decode()
    pos = Position.parse(last)
    return None if pos == Position(0, 0) else pos


def append(
    client: redis.Redis,
    keys: StreamKeys,
    records: Sequence[EventRecord],
    previous: Position,
    maxlen: int,
    *,
    channels: bool = True,
) -> int:
    """Add ``records`` (in position order, all after ``previous``) to the stream in one round trip,
    and publish each on its type's channel. Returns how many entries were new.

    Raises ``redis.ConnectionError``/``TimeoutError`` when Redis is unreachable, and
    ``redis.ResponseError`` for any refusal other than "already there".
    """
    pipe = client.pipeline(transaction=False)
    prev = str(previous)
    for r in records:
        wire = r.wire()
        pipe.xadd(keys.stream, {"e": wire, "p": prev}, id=r.position, maxlen=maxlen, approximate=True)
        if channels:
            pipe.publish(keys.channel(r.type), wire)
        prev = r.position
    results: list[Any] = pipe.execute(raise_on_error=False)
    added = 0
    step = 2 if channels else 1
    for i in range(0, len(results), step):
        res = results[i]
        if isinstance(res, redis.ResponseError):
            if "equal or smaller" in str(res):
                continue  # added before: a relay restarted in the middle of a batch
            raise res
        if isinstance(res, Exception):
            raise res
        added += 1
    return added


def decode_entry(fields: dict[Any, Any]) -> tuple[EventRecord, Position]:
    """A stream entry's event and the position mirrored before it."""
    e = fields.get("e", fields.get(b"e"))
    p = fields.get("p", fields.get(b"p"))
    if isinstance(p, bytes):
        p = p.decode()
    return EventRecord.from_wire(e), Position.parse(p)
