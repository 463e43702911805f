"""Messages: throughput to live inboxes, and delivery latency on an idle system.

Throughput: 8 agents each run a handler reading its live inbox (``ctx.inbox.get``); 8 driver
threads each post, on behalf of agent i, batches of messages (``send_many``) to agent i+1 in a
thread of their own. Every message is committed before it is delivered (the scheduler hands
committed batches to the agents). ``messages_per_s`` is messages read by the receivers per
second, from the first post to the last read. Full: 8 x 2500 messages; --quick: 8 x 500.

Latency: one sender, one receiver, idle: from the start of a single ``send`` call (driver) to
the receiver handler's ``inbox.get`` returning (same machine clock); the receiver replies to
each message and the driver waits for the reply (``receive``, a long poll) before sending the
next, so each message meets an idle system. In the same run, a bare round trip to a trivial
actor (``rtt_ms``). Full: 300 messages; --quick: 60.

Prints one JSON object as its last line: messages_per_s, delivery_p50_ms, delivery_p99_ms,
rtt_ms, delivery_p50_over_rtt (targets: >= 2000 and <= 4), and send_call_p50_ms (the ``send``
call itself, reply after commit) for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks._common import Echo, finish, median_rtt_ms, percentile, runtime, start_ray  # noqa: E402

SENDERS = 8
BATCH = 500


def drain(task: Any, ctx: Any) -> dict[str, float]:
    """Read ``n`` messages from the live inbox; return when the first and the last arrived."""
    first = None
    for _ in range(task.payload["n"]):
        message = ctx.inbox.get(timeout=120)
        if message is None:
            raise TimeoutError("a message did not arrive within 120 s")
        first = first or time.time()
    return {"first": first or 0.0, "last": time.time()}


def echo(task: Any, ctx: Any) -> list[float]:
    """Read ``n`` messages; note when each read returned, and reply to each (the driver waits)."""
    seen = []
    for _ in range(task.payload["n"]):
        message = ctx.inbox.get(timeout=120)
        if message is None:
            raise TimeoutError("a message did not arrive within 120 s")
        seen.append(time.time())
        ctx.send(message.sender, message.body, thread=message.thread_id)
    return seen







def running(rt: Any, ids: list[str]) -> None:
    """Return once every task is running (asked of the scheduler, a bounded number of times)."""
    for _ in range(6000):
        if all(info.status == "running" for info in rt.get_many(ids)):
            return
        time.sleep(0.01)
    raise TimeoutError("the receivers did not start")


NAMES = [f"rx-{i}" for i in range(SENDERS)]
HANDLERS = {"drain": "benchmarks.messages:drain", "echo": "benchmarks.messages:echo"}


def throughput(rt: Any, per_sender: int) -> float:
    names = NAMES
    threads = [rt.messages.create_thread("bench", [names[i], names[(i + 1) % SENDERS]]) for i in range(SENDERS)]
    ids = rt.submit([{"type": "drain", "requires": [name], "payload": {"n": per_sender}} for name in names])
    running(rt, ids)

    def post(i: int) -> None:
        to = names[(i + 1) % SENDERS]
        for start in range(0, per_sender, BATCH):
            rt.messages.send_many([
                {"thread": threads[i].id, "sender": names[i], "to": to, "body": {"n": n}}
                for n in range(start, min(per_sender, start + BATCH))
            ])

    t0 = time.time()
    senders = [threading.Thread(target=post, args=(i,)) for i in range(SENDERS)]
    for s in senders:
        s.start()
    for s in senders:
        s.join()
    rt.wait(ids, timeout=300)
    last = max(rt.result(tid)["last"] for tid in ids)
    return SENDERS * per_sender / (last - t0)


def latency(rt: Any, n: int) -> tuple[list[float], list[float]]:
    tx, rx = NAMES[0], NAMES[1]
    th = rt.messages.create_thread("bench", [tx, rx])
    warm = 10
    [tid] = rt.submit([{"type": "echo", "requires": [rx], "payload": {"n": n + warm}}])
    running(rt, [tid])
    cursor = rt.messages.receive(tx, timeout=0).cursor
    starts, calls = [], []
    for k in range(n + warm):
        t0 = time.time()
        rt.messages.send(th.id, tx, k, to=rx)
        calls.append((time.time() - t0) * 1000)
        starts.append(t0)
        got: list[Any] = []
        while not got:  # the reply: the receiver is idle again
            page = rt.messages.receive(tx, cursor=cursor, timeout=60)
            cursor, got = page.cursor, page.items
    rt.wait([tid], timeout=60)
    seen = rt.result(tid)
    return [(r - s) * 1000 for s, r in zip(starts[warm:], seen[warm:], strict=True)], calls[warm:]


def spawn_all(rt: Any) -> None:
    """Start the agents side by side (each start is mostly waiting for a process)."""

    async def spawn() -> None:
        await asyncio.gather(*(
            rt.agents.spawn_async(name, capabilities=[name], capacity=1, handlers=HANDLERS) for name in NAMES
        ))

    asyncio.run(spawn())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    per_sender, n = (500, 60) if args.quick else (2500, 300)
    clock = time.perf_counter()
    start_ray()
    rt, backend = runtime()
    spawn_all(rt)
    print(f"set up in {time.perf_counter() - clock:.1f}s", file=sys.stderr)
    rtt = median_rtt_ms(Echo.remote(), n)
    delays, calls = latency(rt, n)
    print(f"latency done at {time.perf_counter() - clock:.1f}s", file=sys.stderr)
    rate = throughput(rt, per_sender)
    print(f"throughput done at {time.perf_counter() - clock:.1f}s", file=sys.stderr)
    p50 = statistics.median(delays)
    finish(rt, {
        "backend": backend,
        "messages": SENDERS * per_sender,
        "messages_per_s": round(rate, 1),
        "delivery_p50_ms": round(p50, 2),
        "delivery_p99_ms": round(percentile(delays, 0.99), 2),
        "send_call_p50_ms": round(statistics.median(calls), 2),
        "rtt_ms": round(rtt, 2),
        "delivery_p50_over_rtt": round(p50 / rtt, 2),
    })


if __name__ == "__main__":
    main()
