"""Patterns: what applying a pattern file costs over submitting the same DAG by hand, and the
scheduling overhead of one review-loop round.

1. ``parallel_implementation`` with N branches (N implement tasks, a sync, an integrate join)
   applied with ``rt.apply_pattern`` versus the equivalent hand-written ``TaskSpec``/``SyncSpec``
   list submitted with ``rt.submit``, alternating, same run (submission only: nothing runs, no
   agent claims these types). Full: 1,000 branches, 5 pairs; --quick: 200 branches, 3 pairs.
2. ``review_feedback_loop`` with ``max_rounds`` R and a review that never approves, on one agent
   with no-op handlers: each round is two tasks in sequence (revise, review) plus the loop node's
   decision. ``round_ms`` = wall time of rounds 2..R divided by R-1; compared with a bare actor
   round trip in the same run. Full: R = 200; --quick: R = 30.
Prints one JSON object as its last line: apply_ms, submit_ms, apply_over_submit, round_ms,
rtt_ms, round_over_rtt (targets: apply_over_submit <= 1.5, round_over_rtt <= 20).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import omoi_ray as omoi  # noqa: E402
from benchmarks._common import Echo, finish, median_rtt_ms, runtime, start_ray  # noqa: E402


def review(task, ctx) -> dict:
    """Never approves, so the loop runs every round."""
    return {"verdict": "changes_requested"}


def revise(task, ctx) -> dict:
    return {"revised": True}


def hand_written(prefix: str, modules: list[str]) -> list:
    """What ``parallel_implementation`` expands to, written by hand (the same tasks and edges)."""
    impl = [omoi.TaskSpec(id=f"{prefix}.implement.{i}", type="bench-implement",
                          payload={"feature": "f", "module": m, "index": i}) for i, m in enumerate(modules)]
    sync = omoi.SyncSpec(id=f"{prefix}.implemented", members=[t.id for t in impl], timeout=7200)
    join = omoi.TaskSpec(id=f"{prefix}.integrate", type="bench-integrate", priority="HIGH",
                         payload={"feature": "f"}, depends_on=[sync.id], merge="combine")
    return [*impl, sync, join]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    branches, pairs, rounds = (200, 3, 30) if args.quick else (1000, 5, 200)
    start_ray()
    rt, backend = runtime()
    modules = [f"m{i}" for i in range(branches)]
    waiting = rt.submit(hand_written(f"warm-{uuid.uuid4().hex[:6]}", modules[:10]))  # warm both paths once
    waiting += rt.apply_pattern("parallel_implementation", params={"feature": "f", "modules": modules[:10]}).all_ids

    apply_ms, submit_ms = [], []
    for _ in range(pairs):
        t0 = time.perf_counter()
        handle = rt.apply_pattern("parallel_implementation", params={"feature": "f", "modules": modules},
                                  prefix=f"a{uuid.uuid4().hex[:8]}")
        apply_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        waiting += rt.submit(hand_written(f"s{uuid.uuid4().hex[:8]}", modules))
        submit_ms.append((time.perf_counter() - t0) * 1000)
        waiting += handle.all_ids
    rt.cancel(*waiting)  # nothing of part 1 may reach the loop's agent (its types overlap)

    rt.spawn_agent("bench-reviewer", capacity=1, handlers={
        "implement": "benchmarks.patterns:revise", "revise": "benchmarks.patterns:revise",
        "review": "benchmarks.patterns:review"})
    prefix = f"loop{uuid.uuid4().hex[:6]}"
    handle = rt.apply_pattern("review_feedback_loop", params={"max_rounds": rounds}, prefix=prefix)
    rt.wait([f"{prefix}.review"], timeout=120)  # round 1 done: the loop's own rounds start now
    t0 = time.perf_counter()
    rt.wait(handle.ids["rounds"], timeout=600)
    loop_s = time.perf_counter() - t0
    outcome = rt.result(handle.ids["rounds"][0])
    assert outcome["outcome"] == "rounds_exhausted" and outcome["rounds"] == rounds, outcome
    round_ms = loop_s * 1000 / (rounds - 1)
    rtt = median_rtt_ms(Echo.remote(), 200)

    apply_med, submit_med = statistics.median(apply_ms), statistics.median(submit_ms)
    finish(rt, {
        "backend": backend,
        "branches": branches,
        "apply_ms": round(apply_med, 1),
        "submit_ms": round(submit_med, 1),
        "apply_over_submit": round(apply_med / submit_med, 2),
        "rounds": rounds,
        "round_ms": round(round_ms, 2),
        "rtt_ms": round(rtt, 2),
        "round_over_rtt": round(round_ms / rtt, 1),
    })


if __name__ == "__main__":
    main()
