"""Scale: does claiming get slower as the queue grows, and what does a waiting task cost in memory?

A driver plays an agent (registered with a stand-in actor) and times ``exchange`` calls that each
report the previous batch finished and claim the next 32, with 1,000 and then 100,000 tasks
waiting (--quick: 20,000). Memory is the marginal cost of waiting tasks: the scheduler's own resident
heap (RssAnon) is read after the first fifth of the large queue and after the rest, so the
one-off high-water mark of the first big submission is not counted as per-task cost. Prints one JSON object as its last line:
claim_ms_small, claim_ms_large, claim_ratio, rss_mb_per_100k.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from benchmarks._common import finish, runtime, start_ray  # noqa: E402
from omoi_ray.core.claims import Report  # noqa: E402
from omoi_ray.core.model import AttemptOutcome  # noqa: E402

BATCH = 32
CALLS = 40


@ray.remote(num_cpus=0)
class StandIn:
    """What the scheduler needs of an agent actor: something to watch."""

    async def watch(self, incarnation: str) -> str:
        await asyncio.Event().wait()
        return "stopped"

    async def cancel_attempts(self, items: list) -> int:
        return 0


def rss_mb(pid: int, field: str = "RssAnon") -> float:
    """Resident memory of the process's own heap (RssAnon): shared pages such as Ray's object
    store, which holds large call arguments, are not the scheduler's."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def claim_times(scheduler, incarnation: str) -> list[float]:
    held: list = []
    times = []
    for _ in range(CALLS):
        reports = [Report("finished", a.task_id, a.attempt, AttemptOutcome.COMPLETED, None, None) for a in held]
        t0 = time.perf_counter()
        reply = ray.get(scheduler.exchange.remote("stand-in", incarnation, uuid.uuid4().hex, reports, None, 0.0))
        times.append((time.perf_counter() - t0) * 1000)
        assert len(reply.tasks) == BATCH, "the queue must never run dry while measuring"
        held = reply.tasks
    reports = [Report("finished", a.task_id, a.attempt, AttemptOutcome.COMPLETED, None, None) for a in held]
    ray.get(scheduler.exchange.remote("stand-in", incarnation, uuid.uuid4().hex, reports, None, None))
    return times


def fill(rt, prefix: str, n: int, chunk: int = 20_000) -> None:
    for start in range(0, n, chunk):
        rt.submit([{"id": f"{prefix}-{i}", "type": "t"} for i in range(start, min(n, start + chunk))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    small, large = 1_000, (20_000 if args.quick else 100_000)
    start_ray()
    rt, backend = runtime()
    scheduler = rt.scheduler
    pid = rt.describe()["pid"]
    incarnation = uuid.uuid4().hex
    ray.get(scheduler.register.remote("stand-in", incarnation, [], BATCH, {}, StandIn.remote()))

    fill(rt, "small", small + CALLS * BATCH)
    claim_small = statistics.median(claim_times(scheduler, incarnation))
    assert rt.status().ready == small, "the small queue is back to its size"

    first = large // 5
    fill(rt, "large-first", first)
    rss_before, shared_before = rss_mb(pid), rss_mb(pid, "RssShmem")
    rest = large - first + CALLS * BATCH
    fill(rt, "large", rest, chunk=first)
    rss_after, shared_after = rss_mb(pid), rss_mb(pid, "RssShmem")
    claim_large = statistics.median(claim_times(scheduler, incarnation))
    finish(rt, {
        "backend": backend,
        "waiting_small": small,
        "waiting_large": large,
        "claim_ms_small": round(claim_small, 3),
        "claim_ms_large": round(claim_large, 3),
        "claim_ratio": round(claim_large / claim_small, 2),
        "rss_mb_per_100k": round((rss_after - rss_before) / rest * 100_000, 1),
        "shared_mb_per_100k": round((shared_after - shared_before) / rest * 100_000, 1),
    })


if __name__ == "__main__":
    main()
