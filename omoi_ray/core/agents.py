"""The agent registry: which agents exist, their incarnations, leases and capacity.

``AgentRegistry`` keeps one entry per agent id (its current incarnation) and decides what
registration, renewal, loss, stopping and replacement mean. What happens to the attempts an
agent held when it goes is the claims' business (``Claims.abandon``).

Rules:
- An agent is known by its id; each process that registers under that id is a new incarnation.
  A new incarnation of a live agent replaces it: the old one is ``lost`` with its attempts.
  Registering again with the same incarnation only renews its lease (and records new
  capabilities or capacity, with a ``agent.capabilities.changed`` event).
- Only a live agent (``alive``, current incarnation) is asked about or given work; calls naming
  another incarnation change nothing.
- An agent's lease covers every claim it holds. Any call from the agent renews it; when it runs
  out, or Ray reports the agent dead, the agent is ``lost`` and its attempts are requeued.
- An agent that leaves on purpose (``stopped``), or whose process is replaced to free the slots
  of zombie handlers, has its attempts requeued as ``interrupted`` (not charged to the task).
- An agent that reports a zombie (a handler that ignored its stop past the grace period) gets
  no more work: it is draining, and will be replaced (``replaced``).
- Every registration and retirement records the agent (a snapshot at ``take_changes``) and its
  event (``agent.registered``, ``agent.lost``, ``agent.stopped``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from omoi_ray.core.changes import ChangeRecorder
from omoi_ray.core.claims import Claims
from omoi_ray.core.model import Agent, AgentStatus, AttemptOutcome, Event
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.core.timers import Timers


class AgentRegistry:
    """The agents the scheduler knows, by id.

    Attributes:
        agents: agent id -> its latest incarnation (alive, lost or stopped).
        lease_ttl: seconds a lease lasts from the agent's last call.
    """

    def __init__(self, log: ChangeRecorder[TaskChanges], timers: Timers, claims: Claims, lease_ttl: float) -> None:
        self.log = log
        self.timers = timers
        self.claims = claims
        self.lease_ttl = lease_ttl
        self.agents: dict[str, Agent] = {}

    def restore(self, agents: Iterable[Agent], now: float) -> None:
        """Hold agents stored as alive again, each with a full lease from ``now`` (a restarted
        scheduler gives each a full lease to show up again)."""
        for agent in agents:
            agent.lease_expires_at = now + self.lease_ttl
            self.agents[agent.id] = agent
            self.timers.add(agent.lease_expires_at, "lease", (agent.id, agent.incarnation))

    def register(
        self,
        agent_id: str,
        incarnation: str,
        capabilities: frozenset[str],
        capacity: int,
        now: float,
        info: dict[str, Any] | None = None,
    ) -> Agent:
        """Register (or refresh) an agent.

        Args:
            agent_id: the agent's name.
            incarnation: the id of the registering process.
            capabilities: what it can do.
            capacity: how many attempts it runs at once.
            now: the caller's clock reading (seconds).
            info: shown, never interpreted (node, pid).

        Returns:
            The live agent. A new incarnation of a known agent replaces the old one, whose
            attempts are lost with it.
        """
        current = self.agents.get(agent_id)
        if current is not None and current.incarnation == incarnation and current.status is AgentStatus.ALIVE:
            current.lease_expires_at = now + self.lease_ttl
            if current.capabilities != capabilities or current.capacity != capacity:
                self._capabilities_changed(current, capabilities, capacity, now)
                current.capabilities, current.capacity = capabilities, capacity
                self.log.agents.add(current)
            return current
        if current is not None and current.status is AgentStatus.ALIVE:
            self._retire(current, AgentStatus.LOST, now, "replaced by a new incarnation")
        if current is not None and (current.capabilities != capabilities or current.capacity != capacity):
            self._capabilities_changed(current, capabilities, capacity, now)
        agent = Agent(
            id=agent_id,
            incarnation=incarnation,
            capabilities=capabilities,
            capacity=capacity,
            registered_at=now,
            lease_expires_at=now + self.lease_ttl,
            info=dict(info or {}),
        )
        self.agents[agent_id] = agent
        self.log.agents.add(agent)
        self.timers.add(agent.lease_expires_at, "lease", (agent_id, incarnation))
        self.log.events.add(
            Event(
                type="agent.registered",
                entity_type="agent",
                entity_id=agent_id,
                at=now,
                agent_id=agent_id,
                payload={
                    "incarnation": incarnation,
                    "capabilities": sorted(capabilities),
                    "capacity": capacity,
                    **agent.info,
                },
            )
        )
        return agent

    def _capabilities_changed(self, agent: Agent, capabilities: frozenset[str], capacity: int, now: float) -> None:
        self.log.events.add(
            Event(
                type="agent.capabilities.changed",
                entity_type="agent",
                entity_id=agent.id,
                at=now,
                agent_id=agent.id,
                payload={
                    "capabilities": sorted(capabilities),
                    "capacity": capacity,
                    "previous_capabilities": sorted(agent.capabilities),
                    "previous_capacity": agent.capacity,
                },
            )
        )

    def live(self, agent_id: str, incarnation: str) -> Agent | None:
        """The agent if ``incarnation`` is its current one and it is alive, else None."""
        agent = self.agents.get(agent_id)
        if agent is None or agent.incarnation != incarnation or agent.status is not AgentStatus.ALIVE:
            return None
        return agent

    def renew(self, agent: Agent, now: float) -> None:
        """Extend ``agent``'s lease to ``now + lease_ttl``."""
        agent.lease_expires_at = now + self.lease_ttl

    def lost(self, agent_id: str, incarnation: str, now: float, reason: str) -> bool:
        """Ray reported the agent dead (or its lease ran out): requeue its attempts. Returns
        whether it was live."""
        agent = self.live(agent_id, incarnation)
        if agent is None:
            return False
        self._retire(agent, AgentStatus.LOST, now, reason)
        return True

    def stopped(self, agent_id: str, incarnation: str, now: float) -> bool:
        """The agent left on purpose (``stop``, ``shutdown``); anything it still held is requeued
        as ``interrupted``, not charged: an operator's stop is not the task's fault. Returns
        whether it was live."""
        agent = self.live(agent_id, incarnation)
        if agent is None:
            return False
        self._retire(agent, AgentStatus.STOPPED, now, "agent stopped", AttemptOutcome.INTERRUPTED)
        return True

    def replaced(self, agent_id: str, incarnation: str, now: float, reason: str, *, restarting: bool) -> bool:
        """The agent is about to end its process to free the slots zombie handlers hold: its
        attempts still under way are requeued as ``interrupted`` (not charged). It is ``lost``
        while Ray restarts it (a new incarnation registers), ``stopped`` if it will not restart.
        Returns whether it was live."""
        agent = self.live(agent_id, incarnation)
        if agent is None:
            return False
        status = AgentStatus.LOST if restarting else AgentStatus.STOPPED
        self._retire(agent, status, now, reason, AttemptOutcome.INTERRUPTED)
        return True

    def lease_due(self, key: tuple[str, str], now: float) -> None:
        """A lease timer fired for ``(agent id, incarnation)``: the agent is lost if its lease
        ran out, else the timer is set again for the renewed lease."""
        agent = self.live(*key)
        if agent is not None:
            if agent.lease_expires_at <= now:
                self._retire(agent, AgentStatus.LOST, now, "lease expired")
            else:
                self.timers.add(agent.lease_expires_at, "lease", key)

    def alive_capabilities(self) -> list[frozenset[str]]:
        """The capabilities of each alive agent."""
        return [a.capabilities for a in self.agents.values() if a.status is AgentStatus.ALIVE]

    def _retire(
        self,
        agent: Agent,
        status: AgentStatus,
        now: float,
        reason: str,
        outcome: AttemptOutcome = AttemptOutcome.LOST,
    ) -> None:
        agent.status = status
        self.claims.abandon(agent, outcome, reason, now)
        self.log.agents.add(agent)
        self.log.events.add(
            Event(
                type="agent.lost" if status is AgentStatus.LOST else "agent.stopped",
                entity_type="agent",
                entity_id=agent.id,
                at=now,
                agent_id=agent.id,
                payload={"incarnation": agent.incarnation, "reason": reason},
            )
        )
