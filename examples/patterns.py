"""Handlers for the three shipped patterns (``patterns/*.yaml``): deterministic, no network.

One agent with ``HANDLERS`` runs any of them::

    rt.spawn_agent("pattern-worker", capacity=4,
                   handlers={t: f"omoi_ray.examples.patterns:{t}" for t in HANDLERS})
    handle = rt.apply_pattern("majority_vote", params={"question": "Ship it?"})

- ``parallel_implementation``: ``implement`` returns the module's files; ``integrate`` merges
  them (``ctx.merged()``: combine) into one build.
- ``review_feedback_loop``: ``implement`` and ``revise`` return a draft; ``review`` approves from
  round ``APPROVE_AT`` on (the round is read from the task id: a loop's round ``r`` names its
  tasks ``<loop>.r<r>.<step>``; the first review is round 1), so the loop takes two rounds.
- ``majority_vote``: evaluator ``i`` answers ``ANSWERS[i % 3]`` (two "yes", one "no");
  ``decide`` returns the majority answer and the vote counts (``ctx.merged()``: majority).
"""

from __future__ import annotations

import re
from typing import Any

#: the review round from which ``review`` approves
APPROVE_AT = 2
#: what evaluator ``i`` answers (``i % 3``)
ANSWERS = ("yes", "no", "yes")
_ROUND = re.compile(r"\.r(\d+)\.[^.]+\Z")


def implement(task: Any) -> dict[str, Any]:
    """``parallel_implementation``/``review_feedback_loop``: a module's (or change's) files."""
    payload = task.payload or {}
    name = payload.get("module") or payload.get("change", "change")
    return {"files": [f"{name}.py", f"test_{name}.py"], str(name): "implemented"}


def integrate(task: Any, ctx: Any) -> dict[str, Any]:
    """``parallel_implementation``: the implementations merged into one build."""
    merged = ctx.merged()
    return {"feature": (task.payload or {}).get("feature"), "modules": sorted(k for k in merged if k != "files"),
            "build": "passed"}


def review(task: Any) -> dict[str, Any]:
    """``review_feedback_loop``: ``approved`` from round ``APPROVE_AT`` on, else changes requested."""
    found = _ROUND.search(task.id)
    round_ = int(found.group(1)) if found else 1
    verdict = "approved" if round_ >= APPROVE_AT else "changes_requested"
    return {"verdict": verdict, "round": round_, "notes": [] if verdict == "approved" else ["add tests"]}


def revise(task: Any) -> dict[str, Any]:
    """``review_feedback_loop``: the draft, revised."""
    return {"revised": (task.payload or {}).get("change"), "added": ["tests"]}


def evaluate(task: Any) -> dict[str, Any]:
    """``majority_vote``: evaluator ``i``'s answer (``ANSWERS[i % 3]``)."""
    index = int((task.payload or {}).get("evaluator", 0))
    return {"answer": ANSWERS[index % len(ANSWERS)], "evaluator": index}


def decide(task: Any, ctx: Any) -> dict[str, Any]:
    """``majority_vote``: the majority answer and the vote counts."""
    vote = ctx.merged()
    return {"question": (task.payload or {}).get("question"), "decision": vote["winner"], "counts": vote["counts"]}


#: task type -> handler, for every task type the shipped patterns use
HANDLERS = {f.__name__: f for f in (implement, integrate, review, revise, evaluate, decide)}
