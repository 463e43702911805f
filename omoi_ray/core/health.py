"""Agent health: one table of states and what moves an agent between them.

An agent's ``health`` is the one source of truth about where it stands. Its lifecycle ``status``
(``alive``, ``lost``, ``stopped``: the stored value older readers know) is derived from it
(``STATUS_OF``), never set on its own.

States:

- ``healthy``: it called within ``stale_after`` seconds; it is handed work.
- ``stale``: silent for ``stale_after`` seconds (default two missed heartbeats, 2/3 of the
  lease): no new work, but its running attempts keep their leases. Any call makes it healthy.
- ``lost``: its lease ran out, or a new incarnation replaced it (its attempts are requeued).
- ``dead``: Ray reported its process dead (a failed ``watch`` call): at once, whatever its lease.
- ``stopped``: it left on purpose (``stop()``, ``shutdown``), or was replaced for good.

``lost``, ``dead`` and ``stopped`` are final for an incarnation: a new process registers as a
new incarnation, ``healthy``.

Rules:
- Transitions are data (``TRANSITIONS``): ``(state, cause) -> state``. A pair not in the table
  changes nothing (a heartbeat of a healthy agent, silence of a stale one, anything once final).
- Staleness is set by the registry's ``stale`` timer, never by reading health: queries only read.
- Every change is recorded with an ``agent.health.changed`` event ``{from, to, reason}``.
"""

from __future__ import annotations

from enum import Enum


class AgentHealth(str, Enum):
    """An agent incarnation's health (its stored value)."""

    HEALTHY = "healthy"
    STALE = "stale"
    LOST = "lost"
    DEAD = "dead"
    STOPPED = "stopped"


class AgentStatus(str, Enum):
    """An agent's lifecycle as stored since the first schema, derived from its health
    (``STATUS_OF``): only ``alive`` agents are kept in memory across restarts."""

    ALIVE = "alive"
    LOST = "lost"  # died, or its lease ran out
    STOPPED = "stopped"  # left on purpose


class HealthCause(str, Enum):
    """What happened to an agent: the column of the health table."""

    HEARTBEAT = "heartbeat"  # any call of the agent (exchange, heartbeat, re-registration)
    SILENCE = "silence"  # the stale timer fired with no call for ``stale_after`` seconds
    LEASE_EXPIRED = "lease_expired"  # no call for the whole lease
    RAY_DIED = "ray_died"  # Ray reported its process dead
    REPLACED = "replaced"  # a new incarnation took over (or its process is being restarted)
    STOPPED = "stopped"  # it left on purpose (or was replaced and will not restart)


H, C = AgentHealth, HealthCause
LIVE: frozenset[AgentHealth] = frozenset({H.HEALTHY, H.STALE})
FINAL: frozenset[AgentHealth] = frozenset({H.LOST, H.DEAD, H.STOPPED})

#: (state, cause) -> next state; a missing pair changes nothing
TRANSITIONS: dict[tuple[AgentHealth, HealthCause], AgentHealth] = {
    (H.HEALTHY, C.SILENCE): H.STALE,
    (H.STALE, C.HEARTBEAT): H.HEALTHY,
    **{(state, C.LEASE_EXPIRED): H.LOST for state in LIVE},
    **{(state, C.REPLACED): H.LOST for state in LIVE},
    **{(state, C.RAY_DIED): H.DEAD for state in LIVE},
    **{(state, C.STOPPED): H.STOPPED for state in LIVE},
}

#: health -> the lifecycle status it implies
STATUS_OF: dict[AgentHealth, AgentStatus] = {
    H.HEALTHY: AgentStatus.ALIVE,
    H.STALE: AgentStatus.ALIVE,
    H.LOST: AgentStatus.LOST,
    H.DEAD: AgentStatus.LOST,
    H.STOPPED: AgentStatus.STOPPED,
}


def next_health(state: AgentHealth, cause: HealthCause) -> AgentHealth | None:
    """The state ``cause`` moves an agent in ``state`` to, or None when it changes nothing.

    Args:
        state: the agent's current health.
        cause: what happened.

    Returns:
        The new ``AgentHealth`` (different from ``state``), or None.
    """
    new = TRANSITIONS.get((state, cause))
    return None if new is None or new is state else new
