"""Handlers used by the end-to-end tests; their behaviour is driven by the task payload.

Blocking is event-driven: handlers wait on a named ``Gate`` actor, never on a sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import ray

from omoi_ray.errors import PermanentError

GATE_NAME = "omoi-test-gate"
GATE_NAMESPACE = "omoi-tests-gates"


@ray.remote(num_cpus=0)
class Gate:
    """Named events across processes: ``open(key)`` releases every ``wait(key)``."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}

    def _event(self, key: str) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())

    async def open(self, key: str) -> None:
        self._event(key).set()

    async def wait(self, key: str, timeout: float = 60.0) -> bool:
        try:
            await asyncio.wait_for(self._event(key).wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def is_open(self, key: str) -> bool:
        return self._event(key).is_set()


def gate():
    return Gate.options(name=GATE_NAME, namespace=GATE_NAMESPACE, get_if_exists=True, lifetime="detached").remote()


def _record(payload: dict, ctx, what: str) -> None:
    path = payload.get("log")
    if path:
        line = json.dumps({"task": ctx.task_id, "agent": ctx.agent_id, "attempt": ctx.attempt, "what": what, "t": time.time()})
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def behave(task, ctx):
    p = task.payload or {}
    op = p.get("op", "echo")
    _record(p, ctx, "start")
    try:
        if p.get("started_gate"):
            ray.get(gate().open.remote(f"{p['started_gate']}:{task.attempt}"))
        if op == "echo":
            return {"id": task.id, "agent": ctx.agent_id, "attempt": task.attempt, "workspace": str(ctx.workspace)}
        if op == "work":
            time.sleep(p.get("seconds", 0.02))  # stands for real work; not a wait for an event
            return {"agent": ctx.agent_id}
        if op == "fail":
            if task.attempt <= p.get("times", 1):
                raise RuntimeError(f"failure on attempt {task.attempt}")
            return {"attempt": task.attempt}
        if op == "permanent":
            raise PermanentError("this input can never work")
        if op == "bad_result":
            return {"set": {1, 2}}
        if op == "wait_gate":
            ray.get(gate().wait.remote(p["gate"], p.get("max", 60)))
            return {"released": True, "agent": ctx.agent_id}
        if op == "wait_cancel":
            saw = ctx.wait_cancelled(p.get("max", 60))
            if saw and p.get("cancel_gate"):
                ray.get(gate().open.remote(p["cancel_gate"]))
            if p.get("then_return"):
                return {"late": True}
            ctx.raise_if_cancelled()
            return {"cancelled": False}
        if op == "hold_locks":  # declared locks are held; report their tokens, maybe wait first
            if p.get("gate"):
                ray.get(gate().wait.remote(p["gate"], p.get("max", 60)))
            return {"tokens": {g.resource: g.token for g in ctx.locks}, "holder": ctx.holder}
        if op == "take_lock":  # a lock taken on the fly
            lease = ctx.lock(p["resource"], p.get("mode", "exclusive"), wait=p.get("wait", 30))
            return {"tokens": lease.tokens, "holder": ctx.holder}
        if op == "call_scheduler":  # after the gate: the handler-context calls of the newer scheduler parts
            ray.get(gate().wait.remote(p["gate"], p.get("max", 60)))
            sent = ctx.send(None, {"from": ctx.agent_id}, thread=p["thread"])
            offer = ctx.handoffs.offer(to=[p["peer"]], reason="asked across a restart", deadline=600)
            return {"merged": ctx.merged(), "upstream": ctx.upstream_results(), "message": sent.id,
                    "offer": ctx.handoffs.get(offer.id).status}
        if op == "die_on_agent" and ctx.agent_id == p["agent"]:
            ray.get(gate().wait.remote(p["gate"], p.get("max", 60)))
            return {"survived": True}
        if op == "die_on_agent":
            return {"agent": ctx.agent_id}
        raise ValueError(f"unknown op {op!r}")
    finally:
        _record(p, ctx, "end")


async def behave_async(task, ctx):
    p = task.payload or {}
    if p.get("started_gate"):
        await gate().open.remote(f"{p['started_gate']}:{task.attempt}")
    if p.get("op") == "sleep_forever":
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if p.get("cancel_gate"):
                await gate().open.remote(p["cancel_gate"])
            raise
    return {"async": True, "agent": ctx.agent_id}


def one_arg_handler(task):
    return {"only_task": task.id}


# ------------------------------------------------------------------ misbehaving handlers


class CustomBaseError(BaseException):
    """A BaseException subclass that is not an Exception."""


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this error raises")


def _raise(kind: str) -> None:
    if kind == "base_exception":
        raise CustomBaseError("a BaseException subclass")
    if kind == "unprintable":
        raise UnprintableError()
    if kind == "system_exit":
        raise SystemExit(3)
    if kind == "keyboard_interrupt":
        raise KeyboardInterrupt("ctrl-c inside a handler")
    if kind == "generator_exit":
        raise GeneratorExit("closed")
    if kind == "cancelled":
        raise asyncio.CancelledError("the handler cancelled itself")
    if kind == "nul_text":
        raise RuntimeError("bad\x00text\x1b[31m")
    if kind == "surrogate_text":  # a lone surrogate: no stream can encode it, not even the log's
        raise RuntimeError("half \udcff pair")
    raise ValueError(f"unknown kind {kind!r}")


def misbehave(task, ctx):
    """Sync handler: ``raise`` (payload ``kind``) or ``block`` (attempts up to ``until_attempt``
    sleep ``seconds``, ignoring their timeout and cancellation); otherwise returns."""
    p = task.payload or {}
    if p.get("started_gate"):
        ray.get(gate().open.remote(f"{p['started_gate']}:{task.attempt}"))
    if p.get("op") == "raise":
        _raise(p["kind"])
    if p.get("op") == "block" and task.attempt <= p.get("until_attempt", 1):
        time.sleep(p["seconds"])  # the misbehaviour under test: a handler deaf to its timeout
    if p.get("op") == "wait_gate" and task.attempt <= p.get("until_attempt", 1):
        ray.get(gate().wait.remote(p["gate"], p.get("max", 120)))
    return {"agent": ctx.agent_id, "attempt": task.attempt, "pid": os.getpid()}


async def misbehave_async(task, ctx):
    """Async handler: ``raise`` (payload ``kind``) or ``block`` (attempts up to ``until_attempt``
    make a blocking ``time.sleep`` inside ``async def``, as a synchronous client would do: deaf to
    their timeout and cancellation); returns the tokens of its declared locks."""
    p = task.payload or {}
    if p.get("started_gate"):
        await gate().open.remote(f"{p['started_gate']}:{task.attempt}")
    if p.get("op") == "raise":
        _raise(p["kind"])
    if p.get("op") == "block" and task.attempt <= p.get("until_attempt", 1):
        time.sleep(p["seconds"])  # noqa: ASYNC251 - the misbehaviour under test: blocks its event loop
    if p.get("op") == "lock_async":  # Ray calls from the handler's own event loop
        grants = await ctx.lock_async(p["resource"], wait=30)
        return {"tokens": {g.resource: g.token for g in grants}, "upstream": await ctx.upstream_results_async()}
    await asyncio.sleep(0)
    return {"agent": ctx.agent_id, "attempt": task.attempt, "pid": os.getpid(),
            "tokens": {g.resource: g.token for g in ctx.locks}}
