"""Handlers of the hand-off end-to-end tests (tests/test_handoff.py), driven by the task payload.

An attempt that came from a hand-off returns what it was handed (``ctx.handoff``); a first
attempt opens its ``started`` gate, optionally offers itself (``offer_to``, after the ``offer_gate``
opens), then waits to be told to stop and returns a late result anyway (to be rejected).
"""

from __future__ import annotations

import ray

from tests.handlers import gate


def held(task, ctx):
    p = task.payload or {}
    if ctx.handoff is not None:
        return {"by": ctx.agent_id, "offer": ctx.handoff.offer_id, "from": ctx.handoff.from_agent,
                "reason": ctx.handoff.reason, "context": ctx.handoff.context, "attempt": ctx.attempt,
                **({"tokens": {g.resource: g.token for g in ctx.locks}} if ctx.locks else {})}
    ray.get(gate().open.remote(f"{p['started']}:{ctx.attempt}"))
    if p.get("offer_to"):
        ray.get(gate().wait.remote(p["offer_gate"], 60))
        offer = ctx.handoffs.offer(to=p["offer_to"], reason="please take it", context={"step": 3}, deadline=60)
        ray.get(gate().open.remote(f"{p['started']}:offered:{offer.id}"))
    if p.get("finish_gate"):
        ray.get(gate().wait.remote(p["finish_gate"], 60))
        return {"by": ctx.agent_id, "attempt": ctx.attempt}
    ctx.wait_cancelled(60)
    return {"late": True, "by": ctx.agent_id}


def broker(task, ctx):
    """Runs on a target agent: reads the offer message of task ``payload['task']`` from the
    agent's live inbox and accepts (or declines) it for its own agent."""
    p = task.payload
    ray.get(gate().open.remote(p["ready"]))
    while True:
        message = ctx.inbox.get(timeout=60)
        if message is None:
            return {"saw": None}
        if message.kind == "handoff.offer" and message.body["task_id"] == p["task"]:
            offer_id = message.body["offer_id"]
            if p.get("decline"):
                info = ctx.handoffs.decline(offer_id, reason="not for me")
            else:
                info = ctx.handoffs.accept(offer_id)
            return {"offer": offer_id, "status": info.status, "thread": message.thread_id,
                    "context": message.body["context"]}
