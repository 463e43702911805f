"""Who owns a database: one runtime at a time, decided here as data (no SQL, no Ray).

Rules:
- The *owner* of a database is one runtime: its Ray namespace plus the id of the Ray cluster it
  runs on (``OwnerId``). It holds a *lease* (``owner_lease`` seconds, renewed by its scheduler).
- A writer of the runtime (scheduler, lock manager, event relay) claims the database when it
  starts (``decide``):
  * nobody owns it, or the owner released it, or the owner's lease lapsed: it becomes the owner;
  * its own runtime owns it (a restart of one of its singletons): it takes over at once;
  * another runtime owns it with a live lease: refused (the caller raises ``DatabaseOwnedError``).
- Every claim bumps an *owner epoch*: the claiming writer's own, and on a change of owner every
  writer's. A writer checks its owner epoch in the same transaction as each of its commits, so a
  replaced (zombie) writer can no longer commit. (Not to be confused with the random ``epoch``
  of a commit mark, which only tells a retry whether a batch went through.)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: the writers of a runtime that hold an owner epoch (their names are their commit-mark names)
WRITERS = ("scheduler", "locks", "events")


@dataclass(frozen=True, slots=True)
class OwnerId:
    """A runtime, as the owner of a database."""

    namespace: str
    cluster_id: str

    def __str__(self) -> str:
        """``namespace '<ns>' on Ray cluster <first 12 characters of the cluster id>``, for messages."""
        return f"namespace '{self.namespace}' on Ray cluster {self.cluster_id[:12]}"


@dataclass(frozen=True, slots=True)
class Ownership:
    """The stored owner of a database (epoch seconds for times)."""

    owner: OwnerId
    since: float
    lease_expires_at: float

    def live(self, now: float) -> bool:
        """True while the lease runs past ``now`` (epoch seconds)."""
        return self.lease_expires_at > now


class Claim(enum.Enum):
    """What ``decide`` lets a starting writer do: become the owner, take over at once, or nothing."""

    NEW_OWNER = "new owner"  # nobody owned it, or the owner released it or let its lease lapse
    SAME_OWNER = "same owner"  # a singleton of the owning runtime started again: at once
    REFUSED = "refused"  # another runtime owns it and its lease is live


def decide(current: Ownership | None, me: OwnerId, now: float) -> Claim:
    """What a writer of runtime ``me`` starting at ``now`` may do with the database."""
    if current is None:
        return Claim.NEW_OWNER
    if current.owner == me:
        return Claim.SAME_OWNER
    if current.live(now):
        return Claim.REFUSED
    return Claim.NEW_OWNER


def describe_owner(current: Ownership) -> str:
    """One line naming the owner, for messages: namespace, full cluster id, since when."""
    from datetime import UTC, datetime

    since = datetime.fromtimestamp(current.since, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"namespace '{current.owner.namespace}' on Ray cluster {current.owner.cluster_id} "
        f"(owner since {since})"
    )
