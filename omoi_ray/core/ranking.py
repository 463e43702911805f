"""Ranking agents: one scoring rule for ``rt.agents.search`` and for the scheduler's dispatch.

Score of an agent for wanted capabilities ``W`` (the default, documented formula)::

    score = coverage + 0.2 * (has a free slot now) + 0.2 * (healthy) + 0.05 * min(capacity, 5)
    coverage = |W & capabilities| / |W|      (1.0 when no capability is asked for)

Rules:
- When capabilities are asked for, agents with zero overlap are excluded.
- Filters: ``phase`` and ``type`` (equal), ``tags`` (every given tag present), ``task_type``
  (the agent handles tasks of that type: ``Agent.handles`` None or naming it), health
  (``healthy`` only; ``include_unhealthy`` adds ``stale``; ``lost``, ``dead`` and ``stopped``
  agents never match).
- Order: score descending, then longest waiting (``Agent.idle_since`` ascending; an agent with
  no free slot has waited "not at all" and comes after those with one), then agent id.
- Dispatch uses the same key (``rank_key``) with coverage 1: among parked agents able to run a
  ready task (every capability it requires, and a handler for its type: ``Agent.can_run``),
  the one a search would rank first gets it.
- Scores are rounded to 9 decimals, so equal formulas compare equal whatever the float path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from omoi_ray.core.health import AgentHealth
from omoi_ray.core.model import Agent
from omoi_ray.core.ready import handles_type

FREE_SLOT_BONUS = 0.2
HEALTHY_BONUS = 0.2
CAPACITY_WEIGHT = 0.05
CAPACITY_CAP = 5


@dataclass(frozen=True, slots=True)
class Query:
    """What a search asks for (validated at the edge, ``omoi_ray.specs.agents``).

    ``capabilities`` empty means "none asked" (coverage 1.0 for every agent); ``tags`` must all
    be present; ``task_type`` keeps agents handling tasks of that type; ``limit`` bounds the
    number of matches.
    """

    capabilities: frozenset[str] = frozenset()
    phase: str | None = None
    type: str | None = None
    tags: frozenset[str] = frozenset()
    include_unhealthy: bool = False
    limit: int = 5
    task_type: str | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """One ranked agent: its id, score, and the asked-for capabilities it has (sorted)."""

    agent_id: str
    score: float
    matched: tuple[str, ...]


def score(agent: Agent, coverage: float) -> float:
    """The formula above for ``agent`` with the given ``coverage`` (0.0 to 1.0)."""
    value = (
        coverage
        + (FREE_SLOT_BONUS if agent.free_slots > 0 else 0.0)
        + (HEALTHY_BONUS if agent.health is AgentHealth.HEALTHY else 0.0)
        + CAPACITY_WEIGHT * min(agent.capacity, CAPACITY_CAP)
    )
    return round(value, 9)


def rank_key(agent: Agent, agent_score: float) -> tuple[float, float, str]:
    """The sort key: score descending, then longest waiting, then id.

    Returns:
        ``(-score, idle_since or +inf when it has no free slot, agent id)``.
    """
    waiting = agent.idle_since if agent.free_slots > 0 and agent.idle_since is not None else math.inf
    return (-agent_score, waiting, agent.id)


def dispatch_key(agent: Agent) -> tuple[float, float, str]:
    """``rank_key`` of an agent able to run the task at hand (coverage 1; able: ``Agent.can_run``)."""
    return rank_key(agent, score(agent, 1.0))


def eligible(agent: Agent, query: Query) -> bool:
    """Whether ``agent`` passes the query's filters (health, phase, type, tags, task type)."""
    if agent.health is not AgentHealth.HEALTHY and not (
        query.include_unhealthy and agent.health is AgentHealth.STALE
    ):
        return False
    if query.phase is not None and agent.phase != query.phase:
        return False
    if query.type is not None and agent.type != query.type:
        return False
    if query.task_type is not None and not handles_type(agent.handles, query.task_type):
        return False
    return query.tags <= agent.tags


def search(agents: Iterable[Agent], query: Query) -> list[Match]:
    """Rank ``agents`` for ``query``.

    Args:
        agents: candidates (any health; filtered here).
        query: what is asked for.

    Returns:
        At most ``query.limit`` ``Match``es, best first (see the module rules).
    """
    wanted = query.capabilities
    ranked: list[tuple[tuple[float, float, str], Match]] = []
    for agent in agents:
        if not eligible(agent, query):
            continue
        if wanted:
            matched = wanted & agent.capabilities
            if not matched:
                continue
            coverage = len(matched) / len(wanted)
        else:
            matched, coverage = frozenset(), 1.0
        s = score(agent, coverage)
        ranked.append((rank_key(agent, s), Match(agent.id, s, tuple(sorted(matched)))))
    ranked.sort(key=lambda pair: pair[0])
    return [match for _, match in ranked[: query.limit]]
