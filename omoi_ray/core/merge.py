"""Merge strategies: how a join turns the results of its sources into one value.

A *source* is one upstream result with its id: ``(source_id, result)``. A join's sources are its
``depends_on`` in declared order; a sync upstream (``kind == "sync"``, whose result is
``{member_id: member_result}``) contributes each member as one source, in member order
(``sources_of``). A source whose result is None (a handler that returned nothing) is left out.

Rules:
- Each strategy is one pure function ``fn(sources, **params)``; ``STRATEGIES`` is the table of
  them (name, function, parameters with their checks and defaults). Adding a strategy is one
  function and one row.
- ``combine``, ``union`` and ``intersection`` read mappings; a source that is not one is a
  ``MergeError`` naming it. ``majority`` reads one key of each source.
- ``custom`` is a row without a function: its ``function`` is an import path resolved where the
  merge runs (the handler's process), never here (``omoi_ray.handler.merge``).
- Values are compared as canonical JSON text (``True`` is not ``1``; ``1`` is not ``1.0``).
- A merge spec is checked by ``check_merge`` (a ``ValueError`` naming the field, for the edge to
  turn into its typed error) and normalised to a dict: ``{"strategy": name, **params}`` with
  every default filled in.
- Events (entity type ``coordination``, entity id the join task's id): ``coordination.join.created``
  when a task with a merge is submitted, in the submission's transaction (``join_created``);
  ``coordination.merge.completed`` each time a handler's ``ctx.merged()`` computed the merge
  (``merge_completed``; payload ``summary``).
- Pure: no ray, sqlalchemy, redis or pydantic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omoi_ray.core.model import Event, Task
from omoi_ray.errors import MergeError, MergeQuorumError, MergeTieError

Source = tuple[str, Any]

#: a key a strategy reads (``majority``'s ``key``): 1-128 printable characters, no control chars
_KEY = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
#: what ``majority`` does with a tie for the most votes
TIE_POLICIES = ("fail", "first", "none")
#: most sources a quorum may name (a bound, not a limit on sources)
MAX_QUORUM = 100_000


def canonical(value: Any) -> str:
    """``value`` as canonical JSON text (sorted keys, no spaces): equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _mappings(sources: Sequence[Source], strategy: str) -> list[Source]:
    out = []
    for source_id, result in sources:
        if result is None:
            continue
        if not isinstance(result, Mapping):
            raise MergeError(
                f"merge '{strategy}': source '{source_id}' returned {type(result).__name__}, not a mapping"
            )
        out.append((source_id, result))
    return out


def combine(sources: Sequence[Source]) -> dict[str, Any]:
    """Merge the sources' mappings in source order; on a key in several, the later source wins.

    Args:
        sources: ``[(source_id, result), ...]`` in declared order; results are mappings or None.

    Returns:
        One dict (``{}`` without sources). Order-sensitive: swapping two sources that disagree on
        a key changes the result.

    Raises:
        MergeError: a result is neither a mapping nor None (the message names the source).
    """
    out: dict[str, Any] = {}
    for _, result in _mappings(sources, "combine"):
        out.update(result)
    return out


def union(sources: Sequence[Source]) -> dict[str, list[Any]]:
    """Gather, per key, every distinct value the sources give it.

    A list value contributes its items (``{"files": ["a"]}`` and ``{"files": ["b"]}`` give
    ``{"files": ["a", "b"]}``); any other value contributes itself. Each key's list is
    de-duplicated and sorted by canonical JSON, and keys are sorted, so the result does not
    depend on the sources' order (unlike ``combine``, where the later source wins).

    Args:
        sources: ``[(source_id, result), ...]``; results are mappings or None.

    Returns:
        ``{key: [distinct values]}``.

    Raises:
        MergeError: a result is neither a mapping nor None.
    """
    gathered: dict[str, dict[str, Any]] = {}
    for _, result in _mappings(sources, "union"):
        for key, value in result.items():
            bucket = gathered.setdefault(key, {})
            for item in value if isinstance(value, list) else [value]:
                bucket.setdefault(canonical(item), item)
    return {key: [bucket[c] for c in sorted(bucket)] for key, bucket in sorted(gathered.items())}


def intersection(sources: Sequence[Source]) -> dict[str, Any]:
    """What every source agrees on: the keys present in every result with the same value in
    every result (a key whose values differ between sources is left out).

    Args:
        sources: ``[(source_id, result), ...]``; results are mappings or None (None is left out,
            so it does not empty the intersection).

    Returns:
        ``{key: agreed value}``, keys sorted (``{}`` without sources). Order-insensitive.

    Raises:
        MergeError: a result is neither a mapping nor None.
    """
    results = [r for _, r in _mappings(sources, "intersection")]
    if not results:
        return {}
    first, rest = results[0], results[1:]
    out = {}
    for key in sorted(first):
        text = canonical(first[key])
        if all(key in r and canonical(r[key]) == text for r in rest):
            out[key] = first[key]
    return out


def majority(sources: Sequence[Source], *, key: str, quorum: int | None = None, tie: str = "fail") -> dict[str, Any]:
    """The most common value of ``key`` among the sources, with the vote counts.

    Each source votes with its ``result[key]``; a source without the key (or whose result is not
    a mapping, or None) abstains and is listed in ``abstained``.

    Args:
        sources: ``[(source_id, result), ...]`` in declared order.
        key: the result key that holds each source's answer.
        quorum: votes the winner needs; None means a strict majority of the sources
            (``len(sources) // 2 + 1``).
        tie: when several values share the most votes: ``"fail"`` raises ``MergeTieError``;
            ``"first"`` picks the tied value voted first (in source order); ``"none"`` returns
            ``winner`` None with ``tie`` True.

    Returns:
        ``{"winner": value or None, "votes": winner's votes, "counts": [{"value": v, "votes": n},
        ...] (most votes first, then first voted), "quorum": q, "tie": bool, "abstained": [ids]}``.

    Raises:
        MergeTieError: a tie under ``tie="fail"``.
        MergeQuorumError: the winner (or the tied values) has fewer than ``quorum`` votes.
    """
    need = len(sources) // 2 + 1 if quorum is None else quorum
    counts: dict[str, list[Any]] = {}  # canonical text -> [value, votes], in first-vote order
    abstained = []
    for source_id, result in sources:
        if not isinstance(result, Mapping) or key not in result:
            abstained.append(source_id)
            continue
        entry = counts.setdefault(canonical(result[key]), [result[key], 0])
        entry[1] += 1
    ranked = sorted(counts.values(), key=lambda e: -e[1])  # stable: first voted first among equals
    table = [{"value": v, "votes": n} for v, n in ranked]
    top = ranked[0][1] if ranked else 0
    tied = sum(1 for _, n in ranked if n == top) > 1
    if top < need:
        raise MergeQuorumError(
            f"merge 'majority' on key '{key}': the most common value has {top} vote(s), "
            f"under the quorum of {need}",
            counts=table,
        )
    winner = ranked[0][0]
    if tied:
        if tie == "fail":
            shown = ", ".join(canonical(v) for v, n in ranked if n == top)
            raise MergeTieError(
                f"merge 'majority' on key '{key}': a tie at {top} vote(s) between {shown} (tie: fail)",
                counts=table,
            )
        if tie == "none":
            winner = None
    return {"winner": winner, "votes": top, "counts": table, "quorum": need, "tie": tied, "abstained": abstained}


# --------------------------------------------------------------------------- the table


def _key(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise ValueError(f"{field} must be a key of 1-128 characters without control characters, not {value!r}")
    return value


def _quorum(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_QUORUM:
        raise ValueError(f"{field} must be an integer from 1 to {MAX_QUORUM} (or null), not {value!r}")
    return value


def _tie(value: Any, field: str) -> str:
    if value not in TIE_POLICIES or not isinstance(value, str):
        raise ValueError(f"{field} must be one of {', '.join(TIE_POLICIES)}, not {value!r}")
    return value


def _function(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _IMPORT_PATH.fullmatch(value):
        raise ValueError(f"{field} must be an import path 'pkg.module:function', not {value!r}")
    return value


_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """A strategy's parameter: its check (``(value, field) -> value``, raising ``ValueError``)
    and its default (``REQUIRED`` when it has none)."""

    check: Callable[[Any, str], Any]
    default: Any = _REQUIRED


@dataclass(frozen=True)
class Strategy:
    """One row of ``STRATEGIES``: the function (None for ``custom``: resolved where the merge
    runs) and its parameters by name."""

    name: str
    fn: Callable[..., Any] | None
    params: Mapping[str, Param]


REQUIRED = _REQUIRED
#: Every merge strategy by name.
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("combine", combine, {}),
        Strategy("union", union, {}),
        Strategy("intersection", intersection, {}),
        Strategy(
            "majority", majority,
            {"key": Param(_key), "quorum": Param(_quorum, None), "tie": Param(_tie, "fail")},
        ),
        Strategy("custom", None, {"function": Param(_function)}),
    )
}


def check_merge(value: Any, field: str = "merge") -> dict[str, Any] | None:
    """Check and normalise a merge spec.

    Args:
        value: None (no merge), a strategy name (``"combine"``), or a mapping
            ``{"strategy": name, **params}``.
        field: the field's name, for messages.

    Returns:
        None, or ``{"strategy": name, **params}`` with every parameter present (defaults filled).

    Raises:
        ValueError: an unknown strategy, an unknown or missing parameter, or a bad value (the
            message names ``field`` and the parameter).
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = {"strategy": value}
    if not isinstance(value, Mapping):
        raise ValueError(f"{field} must be a strategy name or a mapping with 'strategy', not {type(value).__name__}")  # noqa: TRY004 - pydantic names the field for ValueError only
    name = value.get("strategy")
    strategy = STRATEGIES.get(name) if isinstance(name, str) else None
    if strategy is None:
        raise ValueError(f"{field}.strategy must be one of {', '.join(STRATEGIES)}, not {name!r}")
    unknown = sorted(str(k) for k in value if k != "strategy" and k not in strategy.params)
    if unknown:
        raise ValueError(f"{field}: strategy '{name}' takes no parameter {', '.join(map(repr, unknown))}")
    out: dict[str, Any] = {"strategy": name}
    for pname, param in strategy.params.items():
        if pname not in value:
            if param.default is REQUIRED:
                raise ValueError(f"{field}.{pname} is required by strategy '{name}'")
            out[pname] = param.default
        else:
            out[pname] = param.check(value[pname], f"{field}.{pname}")
    return out


def merge(spec: Mapping[str, Any], sources: Sequence[Source], custom: Callable[..., Any] | None = None) -> Any:
    """Merge ``sources`` by the normalised ``spec`` (``check_merge``'s result).

    Args:
        spec: ``{"strategy": name, **params}``.
        sources: ``[(source_id, result), ...]`` in join order (``sources_of``).
        custom: for ``custom``, the resolved function, called as ``custom(sources)``.

    Returns:
        The strategy's result.

    Raises:
        MergeError: as the strategy (a ``custom`` spec without ``custom`` given is one too).
    """
    strategy = STRATEGIES[spec["strategy"]]
    params = {k: v for k, v in spec.items() if k != "strategy"}
    if strategy.fn is None:
        if custom is None:
            raise MergeError(f"merge 'custom': function {params.get('function')!r} was not resolved")
        return custom(list(sources))
    return strategy.fn(list(sources), **params)


def sources_of(upstream: Sequence[tuple[str, str, Any]]) -> list[Source]:
    """A join's sources from its upstream tasks.

    Args:
        upstream: ``[(task_id, kind, result), ...]`` in ``depends_on`` order; ``kind`` is
            ``"sync"`` for a sync point (its result ``{member_id: member_result}``), anything
            else for a task.

    Returns:
        ``[(source_id, result), ...]``: a task as itself, a sync as its members in their order.
    """
    out: list[Source] = []
    for task_id, kind, result in upstream:
        if kind == "sync" and isinstance(result, Mapping):
            out.extend((member, value) for member, value in result.items())
        else:
            out.append((task_id, result))
    return out


def summary(spec: Mapping[str, Any], sources: Sequence[Source], result: Any) -> dict[str, Any]:
    """The payload of ``coordination.merge.completed``: the strategy, the source ids in order,
    and the result's keys (sorted; ``[]`` when it is not a mapping)."""
    keys = sorted(str(k) for k in result) if isinstance(result, Mapping) else []
    return {"strategy": spec["strategy"], "sources": [s for s, _ in sources], "result_keys": keys}


JOIN_CREATED = "coordination.join.created"
MERGE_COMPLETED = "coordination.merge.completed"


def join_created(task: Task, now: float, request_id: str | None = None) -> Event:
    """The ``coordination.join.created`` event of a submitted task with a merge: its strategy
    and its sources (``depends_on``, in order)."""
    assert task.merge is not None
    return Event(
        type=JOIN_CREATED, entity_type="coordination", entity_id=task.id, at=now,
        payload={"strategy": task.merge["strategy"], "sources": list(task.depends_on)},
        task_id=task.id, ticket_id=task.ticket_id, request_id=request_id,
    )


def merge_completed(task: Task, attempt: int, summary: dict[str, Any], now: float) -> Event:
    """The ``coordination.merge.completed`` event: ``summary`` (strategy, source ids, result
    keys) and the attempt that merged."""
    return Event(
        type=MERGE_COMPLETED, entity_type="coordination", entity_id=task.id, at=now,
        payload={**summary, "attempt": attempt}, task_id=task.id, agent_id=task.agent_id, ticket_id=task.ticket_id,
    )
