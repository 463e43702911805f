"""Locks: uncontended speed, 16-way contention against Redis and PostgreSQL locks, handoff.

Everything in one run:
- uncontended: acquire + release pairs per second from one client; a bare actor round trip;
- contended: 16 threads take one exclusive resource in turn, holding it ~1 ms each, for a fixed
  time: critical sections per second, wait p50/p99, turns per client (max/min = fairness);
  the same workload with redis-py's ``Lock`` (default settings) and with ``pg_advisory_lock``
  on 16 connections;
- handoff: from a holder's release call to the next waiter's grant, p50.
omoi-ray's grants are durable (committed with their fencing token) before they are returned.
Prints one JSON object last. --quick shortens every phase.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from benchmarks._common import Echo, finish, percentile, runtime, start_ray  # noqa: E402
from omoi_ray.client.locks import LockClient  # noqa: E402

CLIENTS = 16
HOLD = 0.001





def contend(make_lock, seconds: float) -> dict:
    """16 threads: take, hold ~1 ms, give back, until time is up. ``make_lock(i)`` returns a
    pair of callables (acquire, release) for client i."""
    waits: list[float] = []
    turns = [0] * CLIENTS
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def run(i: int) -> None:
        acquire, release = make_lock(i)
        start.wait()
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            token = acquire()
            waited = time.perf_counter() - t0
            time.sleep(HOLD)
            release(token)
            with lock:
                waits.append(waited)
                turns[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    return {
        "per_s": sum(turns) / elapsed,
        "p50_ms": percentile(waits, 0.5) * 1000,
        "p99_ms": percentile(waits, 0.99) * 1000,
        "spread": max(turns) / max(1, min(turns)),
        "turns": turns,
    }


def omoi_contended(rt, seconds: float) -> dict:
    resource = f"bench:{uuid.uuid4().hex[:8]}"

    def make(i: int):
        client = LockClient(rt.lock_manager, f"client-{i}")
        return (lambda: client.acquire(resource, wait=60), lambda lease: lease.release())

    return contend(make, seconds)


def redis_contended(url: str, seconds: float) -> dict:
    import redis

    name = f"omoi-bench-{uuid.uuid4().hex[:8]}"
    conns = [redis.Redis.from_url(url) for _ in range(CLIENTS)]

    def make(i: int):
        lock = conns[i].lock(name)  # redis-py defaults: blocking, polls every 0.1 s
        return (lambda: lock.acquire(), lambda _: lock.release())

    try:
        return contend(make, seconds)
    finally:
        for c in conns:
            c.close()


def pg_contended(url: str, seconds: float) -> dict:
    import psycopg

    key = int(uuid.uuid4().int % (2**62))
    conns = [psycopg.connect(url, autocommit=True) for _ in range(CLIENTS)]

    def make(i: int):
        conn = conns[i]
        return (
            lambda: conn.execute("SELECT pg_advisory_lock(%s)", (key,)),
            lambda _: conn.execute("SELECT pg_advisory_unlock(%s)", (key,)),
        )

    try:
        return contend(make, seconds)
    finally:
        for c in conns:
            c.close()


def handoff(rt, rounds: int) -> list[float]:
    """A holds, B waits; A releases: how long until B has the grant."""
    resource = f"bench:{uuid.uuid4().hex[:8]}"
    a, b = LockClient(rt.lock_manager, "handoff-a"), LockClient(rt.lock_manager, "handoff-b")
    out = []
    for _ in range(rounds):
        held = a.acquire(resource, wait=60)
        got = threading.Event()
        result = {}

        def wait_for_it() -> None:
            result["lease"] = b.acquire(resource, wait=60)
            result["at"] = time.perf_counter()
            got.set()

        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        while b.holder not in [h for h, _ in a.holders(resource)["waiting"]]:
            time.sleep(0.001)  # until B is queued (setup, not measured)
        released = time.perf_counter()
        held.release()
        got.wait(30)
        waiter.join()
        out.append((result["at"] - released) * 1000)
        result["lease"].release()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seconds, pairs, rounds = (3.0, 200, 30) if args.quick else (10.0, 1000, 100)
    pg_url = os.environ.get("OMOI_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    redis_url = os.environ.get("OMOI_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    start_ray()
    rt, backend = runtime()

    echo = Echo.remote()
    ray.get(echo.ping.remote())
    rtts = []
    for _ in range(pairs):
        t0 = time.perf_counter()
        ray.get(echo.ping.remote())
        rtts.append((time.perf_counter() - t0) * 1000)
    rtt = statistics.median(rtts)

    client = LockClient(rt.lock_manager, "solo")
    resource = f"bench:{uuid.uuid4().hex[:8]}"
    client.acquire(resource).release()  # warm
    t0 = time.perf_counter()
    for _ in range(pairs):
        client.acquire(resource).release()
    uncontended = pairs / (time.perf_counter() - t0)

    ours = omoi_contended(rt, seconds)
    pg = pg_contended(pg_url, seconds)
    rd = redis_contended(redis_url, seconds)
    hand = handoff(rt, rounds)
    hand_p50 = statistics.median(hand)
    finish(rt, {
        "backend": backend,
        "uncontended_pairs_per_s": round(uncontended, 1),
        "rtt_ms": round(rtt, 3),
        "contended_per_s": round(ours["per_s"], 1),
        "pg_advisory_contended_per_s": round(pg["per_s"], 1),
        "redis_lock_contended_per_s": round(rd["per_s"], 1),
        "contended_vs_pg": round(ours["per_s"] / pg["per_s"], 2),
        "p50_wait_ms": round(ours["p50_ms"], 2),
        "p99_wait_ms": round(ours["p99_ms"], 2),
        "redis_p99_wait_ms": round(rd["p99_ms"], 2),
        "pg_p99_wait_ms": round(pg["p99_ms"], 2),
        "p99_wait_vs_redis": round(ours["p99_ms"] / rd["p99_ms"], 3),
        "fairness_spread": round(ours["spread"], 2),
        "redis_fairness_spread": round(rd["spread"], 2),
        "pg_fairness_spread": round(pg["spread"], 2),
        "turns_per_client": ours["turns"],
        "handoff_p50_ms": round(hand_p50, 3),
        "handoff_over_rtt": round(hand_p50 / rtt, 2),
    })


if __name__ == "__main__":
    main()
