"""The agent registry: which agents exist, their incarnations, leases, health and capacity.

``AgentRegistry`` keeps one entry per agent id (its current incarnation) and decides what
registration, renewal, silence, loss, stopping and replacement mean. What happens to the attempts
an agent held when it goes is the claims' business (``Claims.abandon``); what each change does to
its health is the table in ``core.health`` (the one source of truth: ``status`` derives from it).

Rules:
- An agent is known by its id; each process that registers under that id is a new incarnation.
  A new incarnation of a live agent replaces it: the old one is ``lost`` with its attempts.
  Registering again with the same incarnation renews its lease (a heartbeat) and records new
  capabilities, tags or capacity, with one ``agent.capabilities.changed`` event, only when
  something really changed (capabilities and tags compared as sets).
- An agent handles the task types it has handlers for, or every type when it has a default
  handler (``Agent.handles`` None); it is handed only tasks of types it handles (``core.ready``).
  What it handles is part of its registration and fixed per incarnation.
- Only a live agent (``healthy`` or ``stale``, current incarnation) is asked about; only a
  ``healthy`` one is given work. Calls naming another incarnation change nothing.
- Any call from the agent is a heartbeat: it renews the lease and makes a ``stale`` agent
  ``healthy``. A ``stale`` timer makes an agent silent for ``stale_after`` seconds ``stale``;
  its lease timer makes it ``lost`` when the lease runs out; Ray reporting it dead makes it
  ``dead`` at once. Lost and dead agents' attempts are requeued (charged).
- An agent that leaves on purpose (``stopped``), or whose process is replaced to free the slots
  of zombie handlers, has its attempts requeued as ``interrupted`` (not charged to the task).
- An agent that reports a zombie (a handler that ignored its stop past the grace period) gets
  no more work: it is draining, and will be replaced (``replaced``).
- Every registration, health change and retirement records the agent (a snapshot at
  ``take_changes``) and its events (``agent.registered``, ``agent.health.changed``,
  ``agent.lost``, ``agent.stopped``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from omoi_ray.core.changes import ChangeRecorder
from omoi_ray.core.claims import Claims
from omoi_ray.core.health import AgentHealth, AgentStatus, HealthCause, next_health
from omoi_ray.core.model import Agent, AttemptOutcome, Event
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.core.timers import Timers


class AgentRegistry:
    """The agents the scheduler knows, by id.

    Attributes:
        agents: agent id -> its latest incarnation (any health).
        lease_ttl: seconds a lease lasts from the agent's last call.
        stale_after: seconds of silence after which a healthy agent is ``stale`` (less than
            ``lease_ttl``; default two missed heartbeats, ``2/3 * lease_ttl``).
    """

    def __init__(
        self,
        log: ChangeRecorder[TaskChanges],
        timers: Timers,
        claims: Claims,
        lease_ttl: float,
        stale_after: float | None = None,
    ) -> None:
        self.log = log
        self.timers = timers
        self.claims = claims
        self.lease_ttl = lease_ttl
        self.stale_after = lease_ttl * 2 / 3 if stale_after is None else stale_after
        self.agents: dict[str, Agent] = {}

    def restore(self, agents: Iterable[Agent], now: float) -> None:
        """Hold agents stored as alive again, each with a full lease from ``now`` (a restarted
        scheduler gives each a full lease to show up again, and counts its silence from ``now``)."""
        for agent in agents:
            agent.lease_expires_at = now + self.lease_ttl
            agent.last_heartbeat_at = now
            if agent.free_slots > 0 and agent.idle_since is None:
                agent.idle_since = now
            self.agents[agent.id] = agent
            self.timers.add(agent.lease_expires_at, "lease", (agent.id, agent.incarnation))
            self.timers.add(now + self.stale_after, "stale", (agent.id, agent.incarnation))

    def register(
        self,
        agent_id: str,
        incarnation: str,
        capabilities: frozenset[str],
        capacity: int,
        now: float,
        info: dict[str, Any] | None = None,
        *,
        type: str = "agent",  # noqa: A002 - the field's name everywhere
        phase: str | None = None,
        tags: frozenset[str] = frozenset(),
        handles: frozenset[str] | None = None,
    ) -> Agent:
        """Register (or refresh) an agent.

        Args:
            agent_id: the agent's name.
            incarnation: the id of the registering process.
            capabilities: what it can do.
            capacity: how many attempts it runs at once.
            now: the caller's clock reading (seconds).
            info: shown, never interpreted (node, pid).
            type: what kind of agent it is.
            phase: the phase of work it serves, or None.
            tags: labels searches filter on.
            handles: the task types it has handlers for, or None (a default handler) for every
                type. Fixed per incarnation: a registration of the same incarnation keeps it.

        Returns:
            The live agent. The same incarnation again is a heartbeat plus an update (an
            ``agent.capabilities.changed`` event only if capabilities, tags, capacity, type or
            phase really changed). A new incarnation of a known agent replaces the old one, whose
            attempts are lost with it.
        """
        current = self.agents.get(agent_id)
        profile = (capabilities, tags, capacity, type, phase)
        if current is not None and current.incarnation == incarnation and current.status is AgentStatus.ALIVE:
            self.renew(current, now)
            if _profile(current) != profile:
                self._profile_changed(current, profile, now)
                current.capabilities, current.tags, current.capacity, current.type, current.phase = profile
                if current.free_slots > 0 and current.idle_since is None:
                    current.idle_since = now
                elif current.free_slots == 0:
                    current.idle_since = None
                self.log.agents.add(current)
            return current
        tasks_done = 0
        if current is not None:
            tasks_done = current.tasks_done
            if current.status is AgentStatus.ALIVE:
                self._retire(current, HealthCause.REPLACED, now, "replaced by a new incarnation")
            if _profile(current) != profile:
                self._profile_changed(current, profile, now)
        agent = Agent(
            id=agent_id,
            incarnation=incarnation,
            capabilities=capabilities,
            capacity=capacity,
            registered_at=now,
            lease_expires_at=now + self.lease_ttl,
            type=type,
            phase=phase,
            tags=tags,
            handles=handles,
            last_heartbeat_at=now,
            tasks_done=tasks_done,
            idle_since=now,
            info=dict(info or {}),
        )
        self.agents[agent_id] = agent
        self.log.agents.add(agent)
        self.timers.add(agent.lease_expires_at, "lease", (agent_id, incarnation))
        self.timers.add(now + self.stale_after, "stale", (agent_id, incarnation))
        self._emit("agent.registered", agent, now, {
            "incarnation": incarnation,
            "type": type,
            "phase": phase,
            "capabilities": sorted(capabilities),
            "tags": sorted(tags),
            "capacity": capacity,
            "handles": None if handles is None else sorted(handles),
            **agent.info,
        })
        return agent

    def _profile_changed(self, agent: Agent, profile: tuple[Any, ...], now: float) -> None:
        capabilities, tags, capacity, type_, phase = profile
        self._emit("agent.capabilities.changed", agent, now, {
            "capabilities": sorted(capabilities),
            "tags": sorted(tags),
            "capacity": capacity,
            "type": type_,
            "phase": phase,
            "previous_capabilities": sorted(agent.capabilities),
            "previous_tags": sorted(agent.tags),
            "previous_capacity": agent.capacity,
            "previous_type": agent.type,
            "previous_phase": agent.phase,
        })

    def live(self, agent_id: str, incarnation: str) -> Agent | None:
        """The agent if ``incarnation`` is its current one and it is alive (healthy or stale), else None."""
        agent = self.agents.get(agent_id)
        if agent is None or agent.incarnation != incarnation or agent.status is not AgentStatus.ALIVE:
            return None
        return agent

    def renew(self, agent: Agent, now: float) -> None:
        """A call from ``agent`` (a heartbeat): extend its lease to ``now + lease_ttl``, note the
        call, and make it healthy again if it was stale (re-arming its stale timer)."""
        agent.lease_expires_at = now + self.lease_ttl
        agent.last_heartbeat_at = now
        if self._move(agent, HealthCause.HEARTBEAT, now, "it called again"):
            self.log.agents.add(agent)
            self.timers.add(now + self.stale_after, "stale", (agent.id, agent.incarnation))

    def lost(
        self, agent_id: str, incarnation: str, now: float, reason: str, cause: HealthCause = HealthCause.RAY_DIED
    ) -> bool:
        """The agent is gone: Ray reported it dead (``ray_died``: ``dead``), it was replaced by
        a new process (``replaced``: ``lost``) or its lease ran out (``lease_expired``:
        ``lost``). Its attempts are requeued. Returns whether it was live."""
        agent = self.live(agent_id, incarnation)
        if agent is None:
            return False
        self._retire(agent, cause, now, reason)
        return True

    def stopped(self, agent_id: str, incarnation: str, now: float) -> bool:
        """The agent left on purpose (``stop``, ``shutdown``); anything it still held is requeued
        as ``interrupted``, not charged: an operator's stop is not the task's fault. Returns
        whether it was live."""
        agent = self.live(agent_id, incarnation)
        if agent is None:
            return False
        self._retire(agent, HealthCause.STOPPED, now, "agent stopped", AttemptOutcome.INTERRUPTED)
        return True

    def replaced(self, agent_id: str, incarnation: str, now: float, reason: str, *, restarting: bool) -> bool:
        """The agent is about to end its process to free the slots zombie handlers hold: its
        attempts still under way are requeued as ``interrupted`` (not charged). It is ``lost``
        while Ray restarts it (a new incarnation registers), ``stopped`` if it will not restart.
        Returns whether it was live."""
        agent = self.live(agent_id, incarnation)
        if agent is None:
            return False
        cause = HealthCause.REPLACED if restarting else HealthCause.STOPPED
        self._retire(agent, cause, now, reason, AttemptOutcome.INTERRUPTED)
        return True

    def lease_due(self, key: tuple[str, str], now: float) -> None:
        """A lease timer fired for ``(agent id, incarnation)``: the agent is lost if its lease
        ran out, else the timer is set again for the renewed lease."""
        agent = self.live(*key)
        if agent is not None:
            if agent.lease_expires_at <= now:
                self._retire(agent, HealthCause.LEASE_EXPIRED, now, "lease expired")
            else:
                self.timers.add(agent.lease_expires_at, "lease", key)

    def stale_due(self, key: tuple[str, str], now: float) -> None:
        """A stale timer fired for ``(agent id, incarnation)``: a healthy agent silent for
        ``stale_after`` seconds becomes ``stale`` (re-armed by its next call); one that called
        since has the timer set again for its last call."""
        agent = self.live(*key)
        if agent is None or agent.health is not AgentHealth.HEALTHY:
            return
        due = agent.last_heartbeat_at + self.stale_after
        if due <= now:
            if self._move(agent, HealthCause.SILENCE, now, f"silent for {now - agent.last_heartbeat_at:.1f}s"):
                self.log.agents.add(agent)
        else:
            self.timers.add(due, "stale", key)

    def alive_capabilities(self) -> list[frozenset[str]]:
        """The capabilities of each alive agent (healthy or stale)."""
        return [a.capabilities for a in self.agents.values() if a.status is AgentStatus.ALIVE]

    def alive_profiles(self) -> set[tuple[frozenset[str], frozenset[str] | None]]:
        """The distinct (capabilities, task types handled or None for every type) of the alive agents."""
        return {(a.capabilities, a.handles) for a in self.agents.values() if a.status is AgentStatus.ALIVE}

    def _move(self, agent: Agent, cause: HealthCause, now: float, reason: str) -> bool:
        """Apply the health table; record ``agent.health.changed`` if the state changed."""
        new = next_health(agent.health, cause)
        if new is None:
            return False
        old, agent.health = agent.health, new
        self._emit("agent.health.changed", agent, now,
                   {"from": old.value, "to": new.value, "reason": reason, "incarnation": agent.incarnation})
        return True

    def _retire(
        self,
        agent: Agent,
        cause: HealthCause,
        now: float,
        reason: str,
        outcome: AttemptOutcome = AttemptOutcome.LOST,
    ) -> None:
        self._move(agent, cause, now, reason)
        self.claims.abandon(agent, outcome, reason, now)
        agent.idle_since = None
        self.log.agents.add(agent)
        self._emit("agent.stopped" if agent.status is AgentStatus.STOPPED else "agent.lost", agent, now,
                   {"incarnation": agent.incarnation, "reason": reason, "health": agent.health.value})

    def _emit(self, event_type: str, agent: Agent, now: float, payload: dict[str, Any]) -> None:
        """Record an event about ``agent`` (entity: the agent)."""
        self.log.events.add(Event(
            type=event_type, entity_type="agent", entity_id=agent.id, at=now, agent_id=agent.id, payload=payload,
        ))


def _profile(agent: Agent) -> tuple[Any, ...]:
    return (agent.capabilities, agent.tags, agent.capacity, agent.type, agent.phase)
