"""The agent registry at the edge: what a driver asks (updates, searches) and what it gets back.

Rules:
- Every argument is checked here, before anything is sent or changed (``InvalidAgentSpecError``
  for an update, ``InvalidArgumentError`` for a query, naming the argument): capabilities and
  tags are lists of names (never a bare string), capacity an int from 1 to ``MAX_CAPACITY``
  (not a bool), ``limit`` an int from 1 to ``MAX_SEARCH_LIMIT``.
- What comes back is plain frozen data: ``AgentInfo`` (one agent), ``AgentMatch`` (a search
  hit), ``AgentStats`` (counts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from omoi_ray.core import storable
from omoi_ray.core.model import Agent
from omoi_ray.core.ranking import Query
from omoi_ray.errors import InvalidAgentSpecError, InvalidArgumentError
from omoi_ray.specs.tasks import agent_names, check_int, check_name

#: the most matches one search returns
MAX_SEARCH_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """One agent as the scheduler sees it.

    ``id`` (its name), ``status`` (``alive``, ``lost``, ``stopped``: derived from ``health``),
    ``capabilities`` and ``tags`` (sorted names), ``capacity``, ``busy`` and ``free`` (slots),
    ``info`` (node, pid, host: shown, never interpreted), ``zombies`` (busy slots held by zombie
    handlers), ``type``, ``phase``, ``health`` (``healthy``, ``stale``, ``lost``, ``dead``,
    ``stopped``), ``last_heartbeat_at`` (seconds since the epoch, None before its first call),
    ``tasks_done`` (attempts it completed), ``incarnation`` (hex id of its process), ``handles``
    (the task types it has handlers for, sorted; None when it has a default handler and takes
    every type: it is handed only tasks of types it handles).
    """

    id: str
    status: str
    capabilities: list[str]
    capacity: int
    busy: int
    info: dict[str, Any]
    zombies: int = 0
    type: str = "agent"
    phase: str | None = None
    tags: list[str] = field(default_factory=list)
    free: int = 0
    health: str = "healthy"
    last_heartbeat_at: float | None = None
    tasks_done: int = 0
    incarnation: str = ""
    handles: list[str] | None = None

    @classmethod
    def of(cls, agent: Agent) -> AgentInfo:
        """The ``AgentInfo`` of a core ``Agent`` (a copy: nothing is shared)."""
        return cls(
            id=agent.id,
            status=agent.status.value,
            capabilities=sorted(agent.capabilities),
            capacity=agent.capacity,
            busy=len(agent.busy),
            info=dict(agent.info),
            zombies=len(agent.zombies),
            type=agent.type,
            phase=agent.phase,
            tags=sorted(agent.tags),
            free=agent.free_slots,
            health=agent.health.value,
            last_heartbeat_at=agent.last_heartbeat_at or None,
            tasks_done=agent.tasks_done,
            incarnation=agent.incarnation,
            handles=None if agent.handles is None else sorted(agent.handles),
        )


@dataclass(frozen=True, slots=True)
class AgentMatch:
    """One search hit: the ``agent``, its ``score`` (``core.ranking``) and the asked-for
    capabilities it has (``matched``, sorted)."""

    agent: AgentInfo
    score: float
    matched: list[str]


@dataclass(frozen=True, slots=True)
class AgentStats:
    """The registry at a glance: ``agents`` (how many are known), counts ``by_health``,
    ``by_status``, ``by_type`` and ``by_phase`` (agents without a phase under ``""``), and over
    live agents (healthy or stale) the totals ``capacity``, ``busy`` and ``free`` (slots);
    ``tasks_done`` over every known agent."""

    agents: int
    by_health: dict[str, int]
    by_status: dict[str, int]
    by_type: dict[str, int]
    by_phase: dict[str, int]
    capacity: int
    busy: int
    free: int
    tasks_done: int

    @classmethod
    def of(cls, agents: Iterable[Agent]) -> AgentStats:
        """Count ``agents`` (core ``Agent``s, any health)."""
        by_health: dict[str, int] = {}
        by_status: dict[str, int] = {}
        by_type: dict[str, int] = {}
        by_phase: dict[str, int] = {}
        n = capacity = busy = free = done = 0
        for a in agents:
            n += 1
            for counts, key in ((by_health, a.health.value), (by_status, a.status.value), (by_type, a.type),
                                (by_phase, a.phase or "")):
                counts[key] = counts.get(key, 0) + 1
            done += a.tasks_done
            if a.status.value == "alive":
                capacity += a.capacity
                busy += len(a.busy)
                free += a.free_slots
        return cls(n, by_health, by_status, by_type, by_phase, capacity, busy, free, done)


def parse_agent_update(
    name: str, capabilities: Any = None, tags: Any = None, capacity: Any = None
) -> tuple[list[str] | None, list[str] | None, int | None]:
    """Check a live update of agent ``name``: each argument None (unchanged) or valid.

    Returns:
        ``(capabilities, tags, capacity)``, names normalised (lower-cased, sorted, deduplicated).

    Raises:
        InvalidAgentSpecError: a bad argument (named), e.g. a bare string for a list, an empty
            or whitespace name, capacity 0, negative, a bool or a float.
    """
    try:
        caps = None if capabilities is None else agent_names(capabilities, "capabilities")
        tag_list = None if tags is None else agent_names(tags, "tags")
        cap = None if capacity is None else check_int(capacity, "capacity", 1, storable.MAX_CAPACITY)
    except ValueError as exc:
        raise InvalidAgentSpecError(f"agent '{name}': {exc}") from None
    return caps, tag_list, cap


def parse_query(
    capabilities: Any = None,
    phase: Any = None,
    type: Any = None,  # noqa: A002 - the argument's public name
    tags: Any = None,
    include_unhealthy: Any = False,
    limit: Any = 5,
    task_type: Any = None,
) -> Query:
    """Check a search's arguments (see the module rules) and build its ``core.ranking.Query``.

    Raises:
        InvalidArgumentError: a bad argument, named.
    """
    try:
        caps = agent_names(capabilities, "capabilities")
        tag_list = agent_names(tags, "tags")
        if phase is not None:
            check_name(phase, "phase")
        if type is not None:
            check_name(type, "type")
        if task_type is not None:
            check_name(task_type, "task_type")
        if not isinstance(include_unhealthy, bool):
            raise ValueError(f"include_unhealthy must be True or False, not {include_unhealthy!r}")
        check_int(limit, "limit", 1, MAX_SEARCH_LIMIT)
    except ValueError as exc:
        raise InvalidArgumentError(f"agent search: {exc}") from None
    return Query(frozenset(caps), phase, type, frozenset(tag_list), include_unhealthy, limit, task_type)


__all__ = ["AgentInfo", "AgentMatch", "AgentStats", "MAX_SEARCH_LIMIT", "parse_agent_update", "parse_query"]
