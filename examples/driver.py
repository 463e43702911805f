"""A driver script: connect, spawn agents, submit a DAG, wait with a progress bar, inspect.

Run it locally (starts Ray and uses the embedded SQLite store under ~/.omoi-ray):

    python examples/driver.py

or against a cluster and PostgreSQL (every node must reach the database):

    OMOI_DATABASE_URL=postgresql://user@db-host/omoi ray job submit --working-dir . -- python examples/driver.py

Run it twice: the second run connects to the same runtime if Ray is still up, and the tasks it
submits again are recognised (same ids, same definitions) instead of being run twice.
"""

from __future__ import annotations

import asyncio
import hashlib

import omoi_ray as omoi


def fetch(task: omoi.TaskView, ctx: omoi.TaskContext) -> dict:
    """A sync handler: 'download' a document (here: make one) into the attempt's workspace."""
    text = f"document {task.payload['n']}\n" * (100 + task.payload["n"])
    path = ctx.workspace / "doc.txt"
    path.write_text(text)
    return {"path": str(path), "bytes": len(text)}


async def digest(task: omoi.TaskView, ctx: omoi.TaskContext) -> dict:
    """An async handler: hash every fetched document (fan-in over its dependencies)."""
    docs = await ctx.upstream_results_async()
    h = hashlib.sha256()
    for tid in sorted(docs):
        h.update(open(docs[tid]["path"], "rb").read())
        await asyncio.sleep(0)  # stays responsive to cancellation
    return {"documents": len(docs), "sha256": h.hexdigest(), "bytes": sum(d["bytes"] for d in docs.values())}


def flaky(task: omoi.TaskView, ctx: omoi.TaskContext) -> str:
    if task.attempt == 1:
        raise ConnectionError("upstream service hiccup")  # retried with backoff
    if (task.payload or {}).get("hopeless"):
        raise omoi.PermanentError("bad input: retrying cannot help")
    return "ok on attempt %d" % task.attempt


def main() -> None:
    rt = omoi.connect(migrate=True)  # local Ray, or RAY_ADDRESS; migrate=True creates the schema
    print(rt)
    rt.spawn_agent("fetcher", capabilities=["net"], capacity=4, handlers={"fetch": fetch, "flaky": flaky},
                   exist_ok=True)
    rt.spawn_agent("hasher", capabilities=["cpu"], capacity=1, handlers={"digest": digest}, exist_ok=True)

    docs = [omoi.TaskSpec(id=f"example.fetch.{n}", type="fetch", requires=["net"], payload={"n": n})
            for n in range(12)]
    tasks = [
        *docs,
        omoi.TaskSpec(id="example.digest", type="digest", requires=["cpu"], priority="HIGH",
                      depends_on=[d.id for d in docs], timeout=60),
        omoi.TaskSpec(id="example.flaky", type="flaky", requires=["net"], backoff_base=0.2),
        omoi.TaskSpec(id="example.hopeless", type="flaky", requires=["net"], payload={"hopeless": True},
                      backoff_base=0.2),
        omoi.TaskSpec(id="example.after-hopeless", type="fetch", requires=["net"], payload={"n": 0},
                      depends_on=["example.hopeless"]),
    ]
    ids = rt.submit(tasks)
    rt.wait(ids, progress=True, timeout=300)

    for tid in ("example.digest", "example.flaky", "example.hopeless", "example.after-hopeless"):
        info = rt.get(tid)
        print(f"{tid}: {info.status} (attempt {info.attempt})", info.result or info.error or info.reason)
    for attempt in rt.attempts("example.flaky"):
        print(f"  attempt {attempt.attempt} on {attempt.agent_id}: {attempt.outcome} {attempt.error or ''}")
    status = rt.status()
    print("tasks by status:", status.tasks)
    print("agents:", [(a.id, a.status, f"{a.busy}/{a.capacity}") for a in status.agents])
    rt.shutdown()  # stop agents and scheduler; the state stays in the database


if __name__ == "__main__":
    main()
