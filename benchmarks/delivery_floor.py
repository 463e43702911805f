"""The floor under ``messages.py``'s delivery latency: the same hops on bare Ray, with no omoi-ray.

A message's path in ``messages.py`` is: driver -> scheduler (an async actor: it parks calls) ->
the receiver's agent (an async actor) -> the handler's thread, blocked in ``inbox.get``. Here a
driver calls an async actor ``Relay``, which hands the value to an async actor ``Sink`` with a
fire-and-forget call and replies; ``Sink`` puts it in a queue that a thread of its own is
blocked on. No validation, no commit, no events: what is left is Ray's part of the path.

The pull variant (``pull_*``) replaces the fire-and-forget call by a parked one: ``Sink`` keeps one
``Relay.park(cursor)`` call outstanding, which ``Relay.send`` resolves (a *return*, no task
submitted on ``Relay``'s side); ``Sink`` hands the value to its thread and parks again. The direct
variant (``direct_*``) parks that call from the thread itself (``ray.get``), skipping ``Sink``'s
event loop; its figure ends when that ``ray.get`` returns. The variants use separate actor pairs
and take turns value by value in the same run; ``--variants`` runs a subset (each extra actor pair
adds load: alone, the push measures ~2.8 RTT on an idle box, ~4.3 next to the other two).
``floor_p50_ms`` runs from the start of the driver's call to that thread waking (same machine
clock), one value at a time on an idle system; ``rtt_ms`` is the bare round trip that
``messages.py`` divides by (same run). ``--work-ms`` adds a busy wait in ``Relay`` before it hands
the value on, standing in for the commit. Full: 300 values; --quick: 60.

Prints one JSON object as its last line: floor_p50_ms, floor_p99_ms, rtt_ms, floor_p50_over_rtt and
the same for the pull and direct variants (pull_*, direct_*); ``*_wake_p50_ms`` is the last step
alone, from the sink putting the value in the queue to its reading thread waking.
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
        self.handed: list[float] = []  # when the event loop put each value in the queue
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
        self.handed.append(time.time())
        self.queue.put(value)
        return 1

    async def follow(self, relay: Any) -> int:
        """Start keeping one ``relay.park`` call outstanding (the pull variant)."""
        asyncio.get_running_loop().create_task(self._pull(relay))
        return 1

    async def follow_in_thread(self, relay: Any) -> int:
        """Start a thread that keeps one ``relay.park`` call outstanding itself, with ``ray.get``
        (the direct variant: no hop through this actor's event loop)."""
        threading.Thread(target=self._pull_in_thread, args=(relay,), daemon=True).start()
        return 1

    def _pull_in_thread(self, relay: Any) -> None:
        cursor = 0
        while True:
            cursor, value = ray.get(relay.park.remote(cursor))
            self.handed.append(time.time())  # the value reached a thread: the direct variant's end
            self.queue.put(value)

    async def _pull(self, relay: Any) -> None:
        cursor = 0
        while True:
            cursor, value = await relay.park.remote(cursor)
            self.handed.append(time.time())
            self.queue.put(value)

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

    async def times(self) -> tuple[list[float], list[float]]:
        return self.handed, self.seen


@ray.remote(num_cpus=0)
class Relay:
    """An async actor that hands each value to ``Sink`` (fire and forget) and replies."""

    def __init__(self, sink: Any, work_s: float) -> None:
        self.sink = sink  # None: the pull variant (the sink parks on ``park``)
        self.work_s = work_s
        self.values: list[Any] = []
        self.parked: asyncio.Future[None] | None = None

    async def send(self, value: Any) -> Any:
        if self.work_s:
            until = time.perf_counter() + self.work_s
            while time.perf_counter() < until:
                pass
        if self.sink is None:
            self.values.append(value)
            if self.parked is not None and not self.parked.done():
                self.parked.set_result(None)
        else:
            asyncio.get_running_loop().create_task(self._forget(self.sink.deliver.remote(value)))
        return value

    async def park(self, cursor: int) -> tuple[int, Any]:
        """Return ``(cursor + 1, value number cursor)`` once that value was sent."""
        while len(self.values) <= cursor:
            self.parked = asyncio.get_running_loop().create_future()
            await self.parked
        return cursor + 1, self.values[cursor]

    @staticmethod
    async def _forget(ref: Any) -> None:
        await ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work-ms", type=float, default=0.0)
    parser.add_argument("--variants", default="push,pull,direct",
                        help="which of push, pull, direct to run (comma-separated; default all)")
    args = parser.parse_args()
    variants = [v for v in ("push", "pull", "direct") if v in args.variants.split(",")]
    if not variants or len(variants) != len(args.variants.split(",")):
        parser.error(f"--variants: {args.variants!r} is not a list of push, pull, direct")
    n, warm = (60, 10) if args.quick else (300, 10)
    start_ray()
    pairs = {}
    for variant in variants:
        sink = Sink.remote()
        pairs[variant] = (Relay.remote(sink if variant == "push" else None, args.work_ms / 1000), sink)
        if variant == "pull":
            ray.get(sink.follow.remote(pairs[variant][0]))
        elif variant == "direct":
            ray.get(sink.follow_in_thread.remote(pairs[variant][0]))
    rtt = median_rtt_ms(Echo.remote(), n)
    starts: dict[str, list[float]] = {variant: [] for variant in pairs}
    for k in range(n + warm):
        for variant in variants[k % len(variants):] + variants[:k % len(variants)]:
            relay, sink = pairs[variant]
            t0 = time.time()
            ray.get(relay.send.remote(k))
            starts[variant].append(t0)
            ray.get(sink.after.remote(k))  # the value arrived: the system is idle again
    result: dict[str, Any] = {"values": n, "work_ms": args.work_ms}
    for variant in variants:
        prefix = "floor" if variant == "push" else variant
        handed, seen = ray.get(pairs[variant][1].times.remote())
        ends = handed if variant == "direct" else seen
        delays = [(r - s) * 1000 for s, r in zip(starts[variant][warm:], ends[warm:], strict=True)]
        wakes = [(r - h) * 1000 for h, r in zip(handed[warm:], seen[warm:], strict=True)]
        p50 = statistics.median(delays)
        result.update({f"{prefix}_p50_ms": round(p50, 2),
                       f"{prefix}_wake_p50_ms": round(statistics.median(wakes), 2),
                       f"{prefix}_p99_ms": round(percentile(delays, 0.99), 2),
                       f"{prefix}_p50_over_rtt": round(p50 / rtt, 2)})
    result["rtt_ms"] = round(rtt, 2)
    ray.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
