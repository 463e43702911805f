"""The floor under ``messages.py``'s delivery latency: the same hops on bare Ray, with no omoi-ray.

A message's path in ``messages.py`` is: driver -> scheduler (an async actor: it parks calls) ->
the receiver's agent (an async actor) -> the handler's thread, blocked in ``inbox.get``. Here a
driver calls an async actor ``Relay``, which hands the value to an async actor ``Sink`` with a
fire-and-forget call and replies; ``Sink`` puts it in a queue that a thread of its own is
blocked on. No validation, no commit, no events: what is left is Ray's part of the path.
``floor_p50_ms`` runs from the start of the driver's call to that thread waking (same machine
clock), one value at a time on an idle system; ``rtt_ms`` is the bare round trip that
``messages.py`` divides by (same run). ``--work-ms`` adds a busy wait in ``Relay`` before it hands
the value on, standing in for the commit. Full: 300 values; --quick: 60.

Prints one JSON object as its last line: floor_p50_ms, floor_p99_ms, rtt_ms, floor_p50_over_rtt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from benchmarks._common import Echo, median_rtt_ms, percentile, start_ray  # noqa: E402


@ray.remote(num_cpus=0)
class Sink:
    """An async actor whose own thread takes values from a queue and notes when each arrived."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self.seen: list[float] = []
        self.lock = threading.Lock()
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            self.queue.get()
            with self.lock:
                self.seen.append(time.time())
                waiters, self.waiters = self.waiters, []
            for loop, future in waiters:
                loop.call_soon_threadsafe(lambda f=future: f.done() or f.set_result(None))

    async def deliver(self, value: Any) -> int:
        self.queue.put(value)
        return 1

    async def after(self, count: int) -> int:
        """Return once more than ``count`` values arrived (the driver's "reply")."""
        loop = asyncio.get_running_loop()
        while True:
            with self.lock:
                if len(self.seen) > count:
                    return len(self.seen)
                future = loop.create_future()
                self.waiters.append((loop, future))
            await future

    async def times(self) -> list[float]:
        return self.seen


@ray.remote(num_cpus=0)
class Relay:
    """An async actor that hands each value to ``Sink`` (fire and forget) and replies."""

    def __init__(self, sink: Any, work_s: float) -> None:
        self.sink = sink
        self.work_s = work_s

    async def send(self, value: Any) -> Any:
        if self.work_s:
            until = time.perf_counter() + self.work_s
            while time.perf_counter() < until:
                pass
        asyncio.get_running_loop().create_task(self._forget(self.sink.deliver.remote(value)))
        return value

    @staticmethod
    async def _forget(ref: Any) -> None:
        await ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work-ms", type=float, default=0.0)
    args = parser.parse_args()
    n, warm = (60, 10) if args.quick else (300, 10)
    start_ray()
    sink = Sink.remote()
    relay = Relay.remote(sink, args.work_ms / 1000)
    rtt = median_rtt_ms(Echo.remote(), n)
    starts = []
    for k in range(n + warm):
        t0 = time.time()
        ray.get(relay.send.remote(k))
        starts.append(t0)
        ray.get(sink.after.remote(k))  # the value arrived: the system is idle again
    seen = ray.get(sink.times.remote())
    delays = [(r - s) * 1000 for s, r in zip(starts[warm:], seen[warm:], strict=True)]
    ray.shutdown()
    p50 = statistics.median(delays)
    print(json.dumps({
        "values": n,
        "work_ms": args.work_ms,
        "floor_p50_ms": round(p50, 2),
        "floor_p99_ms": round(percentile(delays, 0.99), 2),
        "rtt_ms": round(rtt, 2),
        "floor_p50_over_rtt": round(p50 / rtt, 2),
    }))


if __name__ == "__main__":
    main()
