"""The Redis side of events: key names, the entry format, and appending a batch to the stream.

Rules:
- One stream ``<prefix>:events`` holds every event; its entry id *is* the event's position (see
  ``omoi_ray.specs.events``). Each entry has two fields: ``e`` (the event as JSON) and ``p`` (the
  position of the entry mirrored just before it). A reader whose last position is below ``p``
  knows it missed events (stream trimmed, Redis restarted empty) and reads them from the
  database.
- ``<prefix>:events-owner`` holds the identity of the database the stream mirrors; a stream
  owned by another database (a new SQLite file, another PostgreSQL) is never appended to nor
  read as this one's.
- Each event is also published on ``<prefix>:events:<type>`` for fire-and-forget listeners
  (``PSUBSCRIBE <prefix>:events:task.*``). Pub/sub delivers only to those connected at the time.
- A batch is appended by one Lua script, atomically checked: the stream's last id must be the
  position the relay mirrored last (else Redis lost entries, or another writer added some: the
  relay finds its place again) and the owner must match. Entries are added in order and the
  script stops at the first refusal, so the stream never has a hole nor a repeat.
- The stream is capped with ``MAXLEN ~``; the database remains the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from omoi_ray.specs.events import START, EventRecord, Position


class StreamKeys:
    """The Redis key names under one prefix: ``stream`` (``<prefix>:events``) and ``owner``
    (``<prefix>:events-owner``), plus the per-type pub/sub channels."""

    def __init__(self, prefix: str) -> None:
        """Name the keys under ``prefix`` (e.g. ``"omoi:<namespace>"``)."""
        self.prefix = prefix
        self.stream = f"{prefix}:events"
        self.owner = f"{prefix}:events-owner"

    def channel(self, event_type: str) -> str:
        """Return the pub/sub channel of one event type, ``<prefix>:events:<type>``."""
        return f"{self.prefix}:events:{event_type}"

    def channel_pattern(self, type_pattern: str = "*") -> str:
        """Return a ``PSUBSCRIBE`` pattern for event types matching ``type_pattern`` (``task.*``)."""
        return f"{self.prefix}:events:{type_pattern}"


class StreamOutOfStep(Exception):
    """The stream is not where the relay left it (lost, moved on, or owned by another database)."""


_APPEND = """
local stream, owner_key = KEYS[1], KEYS[2]
local expected, fresh, maxlen, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', stream) == 1 then
  if redis.call('GET', owner_key) ~= owner then return {-1, 'owner'} end
  local info = redis.call('XINFO', 'STREAM', stream)
  local top = '0-0'
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then top = info[i + 1] end
  end
  if top ~= expected then return {-1, 'moved to ' .. top} end
else
  if fresh ~= '1' then return {-1, 'missing'} end
  redis.call('SET', owner_key, owner)
end
local prev, n = expected, 0
for i = 5, #ARGV, 3 do
  local ok = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, ARGV[i], 'e', ARGV[i + 1], 'p', prev)
  if type(ok) == 'table' and ok.err then return {n, ok.err} end
  if ARGV[i + 2] ~= '' then redis.call('PUBLISH', ARGV[i + 2], ARGV[i + 1]) end
  prev = ARGV[i]
  n = n + 1
end
return {n, ''}
"""


def client_for(url: str) -> redis.Redis:
    """A client that fails fast: redis-py's silent retries would hide a Redis restart from the
    relay (which must then find its place again) and stall readers."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0))


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
    return None if pos == START else pos


def owner_of(client: redis.Redis, keys: StreamKeys) -> str | None:
    """Return the identity of the database the stream mirrors, or None when no owner is set."""
    value = client.get(keys.owner)
    return value.decode() if isinstance(value, bytes) else value


class Appender:
    """Appends batches for one relay (the script is loaded once, called by its hash)."""

    def __init__(self, client: redis.Redis, keys: StreamKeys, owner: str, maxlen: int, channels: bool = True) -> None:
        """Load the append script.

        Args:
            client: a Redis client (``client_for``).
            keys: the key names.
            owner: this database's identity (``EventLog.identity``).
            maxlen: approximate cap of the stream, in entries (``MAXLEN ~``).
            channels: also publish each event on its type's channel.
        """
        self.client = client
        self.keys = keys
        self.owner = owner
        self.maxlen = maxlen
        self.channels = channels
        self._script = client.register_script(_APPEND)

    def append(self, records: Sequence[EventRecord], previous: Position, *, fresh: bool) -> int:
        """Add ``records`` (in position order, all after ``previous``) and publish each.

        Args:
            records: the events to mirror, in position order.
            previous: the position mirrored last (the stream's last id must equal it).
            fresh: the stream may be created (with this owner) if it does not exist.

        Returns:
            how many entries were added (all of them unless it raises).

        Raises:
            StreamOutOfStep: the stream is not at ``previous``, missing, or owned by another
                database (nothing added).
            redis.ResponseError: Redis refused an entry; the ones before it were added and
                their count is on the exception as ``added``.
            redis.ConnectionError: Redis is unreachable (and other redis-py connection errors).
        """
        args: list[Any] = [str(previous), "1" if fresh else "0", self.maxlen, self.owner]
        for r in records:
            args += [r.position, r.wire(), self.keys.channel(r.type) if self.channels else ""]
        added, error = self._script(keys=[self.keys.stream, self.keys.owner], args=args)
        added = int(added)
        if isinstance(error, bytes):
            error = error.decode()
        if added < 0:
            raise StreamOutOfStep(f"stream {self.keys.stream}: {error}")
        if error:
            exc = redis.ResponseError(f"Redis refused event {records[added].position}: {error}")
            exc.added = added  # type: ignore[attr-defined]
            raise exc
        return added


def decode_entry(fields: dict[Any, Any]) -> tuple[EventRecord, Position]:
    """A stream entry's event and the position mirrored before it."""
    e = fields.get("e", fields.get(b"e"))
    p = fields.get("p", fields.get(b"p"))
    if isinstance(p, bytes):
        p = p.decode()
    return EventRecord.from_wire(e), Position.parse(p)
