"""Handlers of the coordination end-to-end tests: no-ops deciding by their payload.

- ``answer``: returns ``payload["result"]`` (or ``{"fill": "x" * payload["fill"]}``); raises ``PermanentError`` if ``payload["fail"]``;
  waits on ``payload["gate"]`` first if given (``tests.handlers.gate``, event-driven).
- ``review``: returns ``{"verdict": payload["verdicts"][round - 1]}``, the round read from the
  task id (``"<loop>.r<n>.<body id>"``; round 1 for the loop's first check).
- ``split``: splits off ``payload["children"]`` (``ctx.split``, or by returning ``omoi.Split``
  when ``payload["return_split"]``), after waiting on ``payload["gate"]`` if given.
"""

from __future__ import annotations

import re

import ray

import omoi_ray as omoi
from omoi_ray.errors import PermanentError
from tests.handlers import gate


def _wait(payload: dict) -> None:
    if payload.get("gate"):
        assert ray.get(gate().wait.remote(payload["gate"], 120))


def answer(task, ctx):
    payload = task.payload or {}
    _wait(payload)
    if payload.get("fail"):
        raise PermanentError(f"{task.id} says no")
    if payload.get("fill"):
        return {"fill": "x" * payload["fill"]}
    return payload.get("result")


def review(task, ctx):
    match = re.fullmatch(r".+\.r(\d+)\.[^.]+", task.id)
    round_ = int(match.group(1)) if match else 1
    return {"verdict": task.payload["verdicts"][round_ - 1], "round": round_}


def split(task, ctx):
    payload = task.payload or {}
    children = payload["children"]
    if payload.get("return_split"):
        _wait(payload)
        return omoi.Split(children, result={"parts": len(children)})
    ctx.split(children)
    _wait(payload)
    return {"parts": len(children)}


