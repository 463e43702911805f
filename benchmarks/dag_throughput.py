"""Throughput of a layered DAG of no-op tasks: omoi-ray vs the same DAG as plain Ray tasks.

Full: 100 wide x 100 deep; --quick: 50 x 40. Each task depends on 2 tasks of the layer before.
omoi-ray: 4 agents x capacity 8, every transition committed (PostgreSQL when OMOI_DATABASE_URL
is set, else SQLite). Timed from the submit call to the last completion.
Prints one JSON object as its last line: tasks, omoi_tasks_per_s, ray_tasks_per_s, ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from benchmarks._common import Stopwatch, finish, runtime, start_ray  # noqa: E402


def layered_dag(width: int, depth: int) -> list[dict]:
    tasks = []
    for layer in range(depth):
        for i in range(width):
            deps = [] if layer == 0 else [f"L{layer - 1}-{i}", f"L{layer - 1}-{(i + 1) % width}"]
            tasks.append({"id": f"L{layer}-{i}", "type": "noop", "depends_on": deps, "max_retries": 0})
    return tasks


@ray.remote
def ray_noop(*deps: object) -> None:
    return None


def plain_ray(width: int, depth: int) -> float:
    with Stopwatch() as sw:
        layer = [ray_noop.remote() for _ in range(width)]
        for _ in range(depth - 1):
            layer = [ray_noop.remote(layer[i], layer[(i + 1) % width]) for i in range(width)]
        ray.get(layer)
    return sw.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    width, depth = (50, 40) if args.quick else (100, 100)
    n = width * depth
    start_ray()
    ray.get([ray_noop.remote() for _ in range(50)])  # warm the worker pool
    ray_s = plain_ray(width, depth)

    rt, backend = runtime()
    for i in range(4):
        rt.spawn_agent(f"bench-{i}", capacity=8, handler="benchmarks._common:noop")
    dag = layered_dag(width, depth)
    with Stopwatch() as sw:
        ids = rt.submit(dag)
        statuses = rt.wait(ids)
    assert all(s == "completed" for s in statuses.values()), "every task must complete"
    result = {
        "tasks": n,
        "backend": backend,
        "omoi_tasks_per_s": round(n / sw.seconds, 1),
        "ray_tasks_per_s": round(n / ray_s, 1),
        "ratio": round((n / sw.seconds) / (n / ray_s), 2),
    }
    finish(rt, result)


if __name__ == "__main__":
    main()
