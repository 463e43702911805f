"""Dispatch latency: from a driver's submit call to the handler starting on an idle agent.

Many single-task submissions, one at a time, against idle (parked) agents; in the same run, a
bare round trip to a trivial actor for scale (and to a trivial async actor: the scheduler and agents
must be async to park calls). Full: 300 submissions; --quick: 60.
Prints one JSON object as its last line: p50_ms, p99_ms, rtt_ms, p50_over_rtt (and the async
figures).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from benchmarks._common import Echo, finish, median_rtt_ms, percentile, runtime, start_ray  # noqa: E402


def started_at(task, ctx) -> float:
    return time.time()



@ray.remote(num_cpus=0)
class AsyncEcho:
    """The kind of actor the scheduler and agents must be (they park calls), for scale."""

    async def ping(self) -> int:
        return 1






def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 60 if args.quick else 300
    start_ray()
    rt, backend = runtime()
    for i in range(2):
        rt.spawn_agent(f"idle-{i}", capacity=4, handler="benchmarks.dispatch_latency:started_at")
    rt.run([{"type": "t"} for _ in range(8)])  # warm both agents' paths once

    rtt = median_rtt_ms(Echo.remote(), n)
    rtt_async = median_rtt_ms(AsyncEcho.remote(), n)

    latencies = []
    for _ in range(n):
        tid = uuid.uuid4().hex
        t0 = time.time()
        rt.submit([{"id": tid, "type": "t"}])
        rt.wait([tid])
        latencies.append((rt.result(tid) - t0) * 1000)

    p50 = statistics.median(latencies)
    finish(rt, {
        "submissions": n,
        "backend": backend,
        "p50_ms": round(p50, 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "rtt_ms": round(rtt, 2),
        "rtt_async_ms": round(rtt_async, 2),
        "p50_over_rtt": round(p50 / rtt, 2),
        "p50_over_async_rtt": round(p50 / rtt_async, 2),
    })


if __name__ == "__main__":
    main()
