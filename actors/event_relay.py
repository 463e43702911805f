"""The event relay actor: mirrors committed events from the database to Redis, and prunes old ones.

Why its own actor: Redis outages, slow networks and pruning never stall the scheduler or the lock
manager, and it can be restarted (or killed by a test) alone. Singleton like the others (fixed
name, namespace, ``get_if_exists``, ``num_cpus=0``, ``max_restarts=-1``).

Rules:
- One loop thread does all the work: read the next committed events in position order (see
  ``omoi_ray.store.events``), append them to the stream in one pipeline, advance the cursor.
- Where to resume comes from Redis itself: the stream's last id is the last position mirrored,
  and every batch checks it (see ``omoi_ray.store.stream``). A stream owned by another database
  is renamed aside, never appended to. If the stream is gone (Redis restarted empty, key deleted), the relay resumes from its cursor
  saved in the database (at most ~1 s old), rewound by ``events_replay`` events so that readers
  who had not caught up find recent history again; a relay that never mirrored starts from the
  oldest event the database retains. Every committed event therefore reaches the
  stream at least once, and never twice while the stream lives.
- Redis unreachable: back off (0.1 s doubling to 5 s), keep the backlog in the database, resync
  on reconnect. Database errors: back off, keep the cursor.
- ``describe`` tells the present from the past: ``healthy`` is False only while the relay's
  latest round (a mirrored batch, or a prune without Redis) failed; ``last_error`` keeps the
  latest failure's text after recovery, dated by ``last_error_at`` (Unix seconds).
- With no Redis configured it only prunes.
- It starts only on a migrated database that its runtime may own (claimed like the other
  singletons: the start-up of ``omoi_ray.actors.durable.Singleton``); its writes check its owner epoch,
  and a replaced relay exits.
- Pruning (every ``PRUNE_EVERY`` s): events older than ``events_retention``; with Redis, never
  past the saved cursor.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from omoi_ray.actors.durable import Singleton, exit_replaced, holds_start_error

from omoi_ray.errors import OwnershipLostError, WaitTimeoutError
from omoi_ray.settings import Settings
from omoi_ray.specs.events import START, Position
from omoi_ray.store.events import EventLog
from omoi_ray.store.stream import Appender, StreamKeys, StreamOutOfStep, client_for, owner_of, stream_top

log = logging.getLogger("omoi_ray.specs.events")

CURSOR_NAME = "redis"
SAVE_EVERY = 1.0  # seconds between cursor saves
PRUNE_EVERY = 60.0
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0


@holds_start_error
class EventRelayActor(Singleton):
    """The relay singleton (``omoi.events``): a loop thread mirroring events to Redis and pruning.

    Public methods are its Ray calls; a start error (see ``__init__``) is raised by each of them.
    """

    WRITER = "events"

    def __init__(self, settings: Settings) -> None:
        """Check the schema, claim the database as writer ``events``, and start the loop thread.

        Args:
            settings: the runtime's settings (database, Redis URL and prefix, retention, lease).

        Raises:
            DatabaseNotMigratedError: the database is not at the code's head revision.
            DatabaseOwnedError: another runtime owns the database with a live lease.
            (Both are kept by ``holds_start_error`` and raised by every later call.)
        """
        # Never relay (or prune) a database without the schema; claimed before reading anything.
        super().__init__(settings)
        self.engine = self.store.engine
        self.log = EventLog(self.engine)
        self.log.fence = self.store.fence
        self.keys = StreamKeys(settings.redis_prefix)
        self.redis_url = settings.resolved_redis_url()
        self.redis: Any = None if self.redis_url is None else client_for(self.redis_url)
        self.appender: Appender | None = None
        self.cursor: Position | None = None  # None: ask Redis (or the saved cursor) where to resume
        self.fresh = False  # the stream is to be created anew (it was not found at resync)
        self.saved: Position | None = None
        self.redis_up = False
        self.last_error = ""
        self.last_error_at: float | None = None
        self.healthy = True
        self.mirrored = 0
        self.resyncs = 0
        self.pruned = 0
        self.lag_seconds = 0.0  # creation-to-XADD age of the newest event mirrored in the last batch
        self.caught_up_at = 0.0
        self._progress = threading.Condition()
        self._stop = threading.Event()
        self._prune_lock = threading.Lock()
        self._metrics = _Metrics()
        self._thread = threading.Thread(target=self._run, name="omoi-event-relay", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        """``EventRelay(<masked Redis URL or "database only">, prefix=...)``, as Ray shows the actor."""
        target = self.settings.safe_redis_url() or "database only"
        return f"EventRelay({target}, prefix={self.settings.redis_prefix!r})"

    # ------------------------------------------------------------------ calls

    def describe(self) -> dict[str, Any]:
        """Where mirroring stands: Redis state, cursor, counters and lag.

        Returns:
            dict with ``redis`` (masked URL or None), ``redis_up``, ``stream``, ``prefix``,
            ``cursor`` and ``saved_cursor`` (positions as text, or None), ``mirrored``,
            ``resyncs``, ``pruned`` (counts), ``lag_seconds``, ``healthy``, ``last_error``,
            ``last_error_at`` (Unix seconds or None) and ``pid``.
        """
        return {
            **self._basics(),
            "redis": self.settings.safe_redis_url(),
            "redis_up": self.redis_up,
            "stream": self.keys.stream if self.redis is not None else None,
            "prefix": self.settings.redis_prefix if self.redis is not None else None,
            "cursor": None if self.cursor is None else str(self.cursor),
            "saved_cursor": None if self.saved is None else str(self.saved),
            "mirrored": self.mirrored,
            "resyncs": self.resyncs,
            "pruned": self.pruned,
            "lag_seconds": round(self.lag_seconds, 4),
            "healthy": self.healthy,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }

    def flush(self, timeout: float = 30.0) -> str:
        """Wait until every event committed before this call is on the stream; returns the cursor.
        (A long writing transaction elsewhere on the PostgreSQL cluster delays it: see event_log.)

        Args:
            timeout: seconds to wait at most.

        Returns:
            the position mirrored up to, as text (without Redis: the newest readable event's).

        Raises:
            WaitTimeoutError: Redis (or the relay) does not get there in ``timeout`` seconds.
        """
        if self.redis is None:
            return str(self.log.latest())
        target = self.log.latest(readable=False)
        deadline = time.monotonic() + timeout
        with self._progress:
            while self.cursor is None or self.cursor < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(
                        f"event relay did not mirror up to {target} within {timeout:g} s "
                        f"(at {self.cursor}; last error: {self.last_error or 'none'})"
                    )
                self._progress.wait(min(left, 0.5))
        return str(self.cursor)

    def prune_now(self) -> int:
        """Prune events past retention now; returns how many rows were deleted."""
        return self._prune()

    def stop(self) -> None:
        """End the loop and save the cursor (a graceful stop loses no replay window)."""
        self._stop.set()
        self._thread.join(timeout=60)
        if not self._thread.is_alive() and self.cursor is not None and self.cursor != self.saved:
            self._guarded(lambda: self.log.save_cursor(CURSOR_NAME, self.cursor))

    # ------------------------------------------------------------------ loop

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        next_prune = time.monotonic() + PRUNE_EVERY
        last_save = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_prune:
                next_prune = now + PRUNE_EVERY
                pruned = self._guarded(self._prune)
                if self.redis is None:
                    self.healthy = pruned  # without Redis, pruning is all the relay does
            if self.redis is None:
                self._stop.wait(PRUNE_EVERY)
                continue
            try:
                more = self._mirror_batch()
                if time.monotonic() - last_save >= SAVE_EVERY and self.cursor is not None \
                        and self.cursor != self.saved:
                    self.log.save_cursor(CURSOR_NAME, self.cursor)
                    self.saved, last_save = self.cursor, time.monotonic()
                backoff = BACKOFF_FIRST
                if not self.healthy:
                    log.info("event relay recovered (last error: %s)", self.last_error)
                    self.healthy = True
                if not more:
                    self._stop.wait(self.settings.events_poll)
            except Exception as exc:  # noqa: BLE001 - one loop survives every outage
                self._exit_if_replaced(exc)
                self._on_error(exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _mirror_batch(self) -> bool:
        """Mirror one batch; True if more may be waiting."""
        if self.cursor is None:
            self._resync()
        assert self.cursor is not None
        records = self.log.read_after(self.cursor, self.settings.events_batch)
        if not records:
            self.lag_seconds = 0.0
            self._metrics.lag(0.0)
            if not self.redis_up:
                self.redis.ping()  # report Redis as up only when it answers
                self.redis_up = True
            return False
        assert self.appender is not None
        try:
            added = self.appender.append(records, self.cursor, fresh=self.fresh)
        except redis.ResponseError as exc:
            self._advance(records[: getattr(exc, "added", 0)])  # those before the refusal are in
            raise
        self._advance(records)
        self.redis_up = True
        return added == self.settings.events_batch

    def _advance(self, records: list[Any]) -> None:
        if not records:
            return
        self.fresh = False
        with self._progress:
            self.cursor = records[-1].pos
            self._progress.notify_all()
        self.mirrored += len(records)
        self.lag_seconds = max(0.0, time.time() - records[-1].at.timestamp())
        self._metrics.mirrored(len(records), self.lag_seconds)

    def _resync(self) -> None:
        """Find where to resume: after the stream's last entry if the stream is this database's,
        else (no stream, or a foreign one set aside) from the saved cursor, rewound."""
        self.resyncs += 1
        self.log.check_positions()
        identity = self.log.identity(CURSOR_NAME)
        assert identity is not None
        self.appender = Appender(self.redis, self.keys, identity, self.settings.events_stream_maxlen)
        top = stream_top(self.redis, self.keys)
        if top is not None:
            owner = owner_of(self.redis, self.keys)
            latest = self.log.latest(readable=False)
            if owner != identity or top > latest:
                # another database's stream (or this database went back in time): keep it for a
                # person to look at, and start a stream of our own
                aside = f"{self.keys.stream}:foreign:{int(time.time())}"
                self.redis.rename(self.keys.stream, aside)
                log.warning("stream %s (owner %s, last id %s) does not mirror this database (latest %s): "
                            "renamed to %s", self.keys.stream, owner, top, latest, aside)
                top = None
        if top is not None:
            self.cursor, self.fresh = top, False
            return
        saved = self.log.load_cursor(CURSOR_NAME)
        # never mirrored before: everything the database still holds
        start = START if saved is None else self.log.rewind(saved, self.settings.events_replay)
        self.cursor, self.fresh = start, True
        log.info("stream %s not found: mirroring again from %s", self.keys.stream, self.cursor)

    def _on_error(self, exc: Exception) -> None:
        self._failed(exc)
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            if self.redis_up:
                log.warning("Redis unreachable, keeping the backlog in the database: %s", exc)
            self.redis_up = False
            self.cursor = None  # Redis may come back empty: ask it again
        elif isinstance(exc, StreamOutOfStep):
            log.warning("event relay: %s; finding its place again", exc)
            self.cursor = None
        else:
            log.warning("event relay: %s", self.last_error)

    def _prune(self) -> int:
        retention = self.settings.events_retention
        if retention <= 0:
            return 0
        with self._prune_lock:
            upto = None
            if self.redis is not None:
                upto = self.log.load_cursor(CURSOR_NAME)
                if upto is None:
                    return 0  # nothing mirrored yet: nothing may go
            n = self.log.prune(time.time() - retention, upto=upto)
            self.pruned += n
            return n

    def _guarded(self, fn: Any) -> bool:
        """Run ``fn``; on failure record it (see ``_failed``) and return False."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            self._exit_if_replaced(exc)
            self._failed(exc)
            log.warning("event relay: %s", self.last_error)
            return False
        return True

    def _failed(self, exc: Exception) -> None:
        # first line only: driver errors (psycopg) append the SQL and a documentation link
        text = str(exc).strip().splitlines()
        self.last_error = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
        self.last_error_at = time.time()
        self.healthy = False

    def _exit_if_replaced(self, exc: Exception) -> None:
        """A relay whose owner epoch was replaced writes nothing more (``omoi_ray.actors.durable``): its
        process exits (in-process use: its loop stops)."""
        if isinstance(exc, OwnershipLostError):
            exit_replaced(exc)
            self._stop.set()


class _Metrics:
    """Ray metrics for the dashboard: events mirrored and relay lag (no-ops outside Ray)."""

    def __init__(self) -> None:
        try:
            from ray.util import metrics

            self._count = metrics.Counter("omoi_events_mirrored", description="events mirrored to Redis")
            self._lag = metrics.Gauge("omoi_event_relay_lag_seconds",
                                      description="age of the newest event when it reached Redis")
        except Exception:  # noqa: BLE001 - metrics are optional
            self._count = self._lag = None

    def mirrored(self, n: int, lag: float) -> None:
        if self._count is not None and n:
            self._count.inc(n)
        self.lag(lag)

    def lag(self, value: float) -> None:
        if self._lag is not None:
            self._lag.set(value)
