"""The scheduler actor's registry calls: agent search, listing and stats (``core.ranking``,
``core.health``), answered from memory (live agents) and the agents table (those that left).

Part of ``SchedulerActor`` (``omoi_ray.actors.scheduler``), which composes one class per concept;
these methods use its graph, store and commit like the rest of it.
"""

from __future__ import annotations

import logging
from typing import Any

from omoi_ray.core.model import Agent
from omoi_ray.errors import (
    AgentNotFoundError,
    InvalidArgumentError,
)
from omoi_ray.specs.agents import AgentInfo, AgentMatch, AgentStats, parse_query
from omoi_ray.specs.tasks import check_name

log = logging.getLogger("omoi_ray.scheduler")



class RegistryCalls:
    """The registry part of the scheduler actor (search, list, get, stats)."""

    async def search_agents(
        self,
        capabilities: Any = None,
        phase: Any = None,
        type: Any = None,  # noqa: A002 - the argument's public name
        tags: Any = None,
        include_unhealthy: Any = False,
        limit: Any = 5,
        task_type: Any = None,
    ) -> list[AgentMatch]:
        """Rank the known agents (``core.ranking``: the order dispatch uses too); called by the
        driver (``rt.agents.search``). Reads memory only: reading never changes health.

        Args:
            capabilities: wanted capability names (a list; empty: none asked).
            phase, type: keep agents with exactly this phase / type (None: any).
            tags: keep agents holding every one of these tags.
            include_unhealthy: also match ``stale`` agents (never lost, dead or stopped ones).
            limit: the most matches (1 to 1000).
            task_type: keep agents that handle tasks of this type (None: any).

        Returns:
            ``AgentMatch``es, best first.

        Raises:
            InvalidArgumentError: a bad argument (named).
        """
        query = parse_query(capabilities, phase, type, tags, include_unhealthy, limit, task_type)
        agents = self.graph.agents
        return [
            AgentMatch(AgentInfo.of(agents[m.agent_id]), m.score, list(m.matched))
            for m in self.graph.search_agents(query)
        ]

    async def agent_infos(self, name: str | None = None) -> list[AgentInfo]:
        """Every agent the scheduler knows, by id, or the one named; called by the driver
        (``rt.agents.list`` / ``rt.agents.get``). Agents that left before this scheduler started
        are read from their rows.

        Args:
            name: an agent name, or None for all.

        Returns:
            ``AgentInfo``s sorted by id (one for ``name``).

        Raises:
            InvalidArgumentError: ``name`` cannot be an agent name.
            AgentNotFoundError: no agent of that name was ever registered (names it).
        """
        if name is not None:
            try:  # checked again whoever calls: the name reaches the database
                check_name(name, "agent name")
            except ValueError as exc:
                raise InvalidArgumentError(str(exc)) from None
            agent = self.graph.agents.get(name)
            if agent is None:
                stored = await self._db(self.store.stored_agents, [name])
                if not stored:
                    raise AgentNotFoundError(f"no agent named {name!r} is registered")
                agent = stored[0]
            return [AgentInfo.of(agent)]
        return [AgentInfo.of(a) for a in await self._known_agents()]

    async def agent_stats(self) -> AgentStats:
        """Counts by health, status, type and phase, slot totals and tasks done over every agent
        ``agent_infos`` lists (``AgentStats``)."""
        return AgentStats.of(await self._known_agents())

    async def _known_agents(self) -> list[Agent]:
        """The agents in memory, plus those only stored (they left before this process started), by id."""
        known = {a.id: a for a in await self._db(self.store.stored_agents, None)}
        known.update(self.graph.agents)
        return [known[k] for k in sorted(known)]



