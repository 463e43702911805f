"""Handlers of the messaging tests: they read their agent's live inbox (``ctx.inbox``).

The payload says how many messages to read (``n``) of which thread (``thread``: messages of
other threads, queued earlier in the shared inbox, are skipped) and how long each read may wait
(``wait``, seconds); the result is the bodies read, in order (``None`` for a read that timed out).
"""

from __future__ import annotations

from typing import Any


async def read_inbox_async(task: Any, ctx: Any) -> list[Any]:
    """Read ``n`` messages with ``await ctx.inbox.get(...)``, mark them read, reply to the last
    one's sender."""
    bodies, last, ids = [], None, []
    for _ in range(task.payload["n"]):
        message = await ctx.inbox.get(timeout=task.payload.get("wait", 60))
        while message is not None and message.thread_id != task.payload["thread"]:
            message = await ctx.inbox.get(timeout=task.payload.get("wait", 60))
        bodies.append(None if message is None else message.body)
        last = message or last
        ids += [] if message is None else [message.id]
    await ctx.mark_read_async(ids)
    if last is not None and task.payload.get("reply"):
        await ctx.send_async(last.sender, {"read": len(bodies)}, thread=last.thread_id)
    return bodies


def read_inbox_sync(task: Any, ctx: Any) -> list[Any]:
    """Read ``n`` messages with a blocking ``ctx.inbox.get(...)``, mark them read, reply to the
    last one's sender (``send_many``)."""
    bodies, last, ids = [], None, []
    for _ in range(task.payload["n"]):
        message = ctx.inbox.get(timeout=task.payload.get("wait", 60))
        while message is not None and message.thread_id != task.payload["thread"]:
            message = ctx.inbox.get(timeout=task.payload.get("wait", 60))
        bodies.append(None if message is None else message.body)
        last = message or last
        ids += [] if message is None else [message.id]
    ctx.mark_read(ids)
    if last is not None and task.payload.get("reply"):
        ctx.send_many([{"thread": last.thread_id, "to": last.sender, "body": {"read": len(bodies)}}])
    return bodies

