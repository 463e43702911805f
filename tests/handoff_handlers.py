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
                "reason": ctx.handoff.reason, "context": ctx.handoff.context, "attempt": ctx.attempt}
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
