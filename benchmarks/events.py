"""Event mirroring: committed events to the Redis stream, end to end.

- mirrored: writer threads commit batches of events through the runtime's write path
  (``BatchWriter``, the scheduler's) as fast as they can for a few seconds; the relay actor
  mirrors them. ``mirrored_per_s`` = events committed / (first commit to the relay's flush
  covering the last one).
- lag: one writer commits 10 events every 10 ms (1,000 events/s) while a reader blocks on the
  stream with ``XREAD``; lag = time the reader got an event - time its commit returned (an upper
  bound of commit-to-XADD). p50/p99 in ms.
- raw: one client pipelines ``XADD`` of the same entries (1,000 per round trip), for scale.

Database: OMOI_DATABASE_URL, else OMOI_BENCH_PG_URL (default the local PostgreSQL), in a fresh
schema dropped afterwards. Redis: OMOI_BENCH_REDIS_URL (default local), under a fresh prefix.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402
import redis  # noqa: E402
from omoi_ray.actors.event_relay import EventRelayActor  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from benchmarks._common import drop_pg_schema, fresh_pg_schema, start_ray  # noqa: E402
from omoi_ray.core.model import Event, EventBatch  # noqa: E402
from omoi_ray.settings import Settings  # noqa: E402
from omoi_ray.specs.events import EventRecord  # noqa: E402
from omoi_ray.store import migrate  # noqa: E402
from omoi_ray.store.store import Store  # noqa: E402
from omoi_ray.store.stream import StreamKeys  # noqa: E402

BATCH = 100  # events per writer transaction


def events(n: int, entity: str, now: float) -> EventBatch:
    return EventBatch([Event("task.completed", "task", entity, now, {"seq": i, "result": "ok"}) for i in range(n)])


def flood(store: Store, seconds: float, writers: int) -> tuple[int, float]:
    """Writers commit as fast as they can; returns (events committed, time of the first commit)."""
    counts = [0] * writers
    stop = threading.Event()
    start = time.time()

    def write(i: int) -> None:
        while not stop.is_set():
            store.writer.apply(events(BATCH, f"w{i}", time.time()))
            counts[i] += BATCH

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts), start


def steady_lag(store: Store, client: redis.Redis, key: str, seconds: float, rate: int = 1000) -> list[float]:
    committed: dict[str, float] = {}
    received: dict[str, float] = {}
    last = client.xinfo_stream(key)["last-generated-id"] if client.exists(key) else "0-0"
    stop = threading.Event()

    def read() -> None:
        nonlocal last
        while not stop.is_set() or len(received) < len(committed):
            reply = client.xread({key: last}, count=1000, block=200)
            now = time.time()
            for _k, entries in reply or ():
                for entry_id, fields in entries:
                    received[EventRecord.from_wire(fields[b"e"]).id] = now
                    last = entry_id
            if stop.is_set() and not reply:
                break

    reader = threading.Thread(target=read)
    reader.start()
    per_tick, tick = 10, 10 / rate
    begin = time.perf_counter()
    n = 0
    while time.perf_counter() - begin < seconds:
        batch = events(per_tick, "steady", time.time())
        store.writer.apply(batch)
        done = time.time()
        for e in batch.events:
            committed[e.id] = done
        n += 1
        pause = begin + n * tick - time.perf_counter()
        if pause > 0:
            time.sleep(pause)  # pacing the writer at the target rate
    stop.set()
    reader.join(timeout=30)
    return [(received[i] - committed[i]) * 1000 for i in committed if i in received]


def raw_xadd(client: redis.Redis, key: str, total: int) -> float:
    wire = EventRecord(position="1-1", id="x" * 32, type="task.completed", entity_type="task", entity_id="w0",
                       payload={"seq": 1, "result": "ok"}, at="2026-11-26T00:00:00+00:00").wire()
    start = time.perf_counter()
    for chunk in range(0, total, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(chunk, min(total, chunk + 1000)):
            pipe.xadd(key, {"e": wire, "p": "0-0"}, maxlen=100_000, approximate=True)
        pipe.execute()
    return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    flood_s, lag_s, writers = (3.0, 3.0, 2) if args.quick else (10.0, 10.0, 2)
    base = os.environ.get("OMOI_DATABASE_URL") or os.environ.get(
        "OMOI_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    db = fresh_pg_schema(base) if base.startswith(("postgres://", "postgresql")) else base
    redis_url = os.environ.get("OMOI_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"omoi-bench-{uuid.uuid4().hex[:8]}"
    migrate.upgrade(db)
    store = Store(db)
    client = redis.Redis.from_url(redis_url)
    settings = Settings(database_url=SecretStr(db), redis_url=SecretStr(redis_url), redis_prefix=prefix,
                        events_poll=0.01, events_retention=0)
    start_ray()
    relay = ray.remote(EventRelayActor).options(num_cpus=0, max_concurrency=16).remote(settings)
    try:
        ray.get(relay.describe.remote())
        total, first = flood(store, flood_s, writers)
        ray.get(relay.flush.remote(120))
        mirrored_per_s = total / (time.time() - first)
        lags = sorted(steady_lag(store, client, StreamKeys(prefix).stream, lag_s))
        raw = raw_xadd(client, f"{prefix}:raw", 50_000 if not args.quick else 20_000)
        state = ray.get(relay.describe.remote())
    finally:
        ray.kill(relay)
        ray.shutdown()
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        store.dispose()
        drop_pg_schema(db)
    result = {
        "backend": store.engine.dialect.name,
        "events": total,
        "mirrored_per_s": round(mirrored_per_s),
        "raw_xadd_per_s": round(raw),
        "lag_p50_ms": round(statistics.median(lags), 1),
        "lag_p99_ms": round(lags[int(len(lags) * 0.99) - 1], 1),
        "lag_samples": len(lags),
        "relay_resyncs": state["resyncs"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
