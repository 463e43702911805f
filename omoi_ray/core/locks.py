"""Locks on named resources: who holds what, who waits in which order, and every decision.

``LockTable`` is the lock manager's state, without I/O: it takes the caller's clock reading and
returns decisions, and logs every change for its owner to persist (``take_changes``): a
``LockChanges``, recorded with the shared ``core.changes.ChangeRecorder``.

Rules of this file:
- A lock is on a resource ``(type, id)`` in a mode; ``COMPATIBLE`` is the only place that says
  which modes may be held together (many shared holders, or one exclusive holder).
- Fairness (the ZooKeeper rule): each resource keeps its waiters in arrival order. A shared
  request waits behind any earlier exclusive request; an exclusive request waits behind any
  earlier request. So a waiting writer is never starved by readers who arrive after it.
- A request names one or more resources and is granted all together or not at all; a waiting
  request holds its place in every one of its resources' queues.
- Every grant carries a fencing token: the resource's counter, bumped by that grant. Counters
  are persisted with the grant, so they never go backwards.
- Holders are names. A holder asking again for a mode it holds gets its grant back (re-entry,
  no counting). A holder waits for a resource in one request at a time. Shared to exclusive is an upgrade, allowed only to the sole holder; exclusive to
  shared is a downgrade, always allowed. Both end the old grant and issue a new token.
- Every grant has a lease. It ends when released, when it expires, or when its holder is let go
  (bulk release). A renew or release of a grant that has ended is an error saying how it ended.
- Waiting that would close a cycle in the wait-for graph is refused with a deadlock error
  naming the cycle; waits may also carry a deadline, after which they are dropped.
- Requests are idempotent by request id: asking again returns the same grants, the same place
  in the queue, or the same error.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from operator import attrgetter
from typing import Any, ClassVar

from omoi_ray.core.changes import APPEND, UNION, ChangeRecorder, ChangeSet, latest, merge_rule
from omoi_ray.core.model import Event
from omoi_ray.core.timers import Timers
from omoi_ray.errors import (
    DeadlockError,
    InvalidLockRequestError,
    LeaseExpiredError,
    LockNotHeldError,
    LockTimeoutError,
    LockUnavailableError,
    LockUpgradeError,
    OmoiError,
)


class LockMode(str, Enum):
    """How a resource is held: ``shared`` (many holders) or ``exclusive`` (one); see ``COMPATIBLE``."""

    SHARED = "shared"
    EXCLUSIVE = "exclusive"

    def __str__(self) -> str:
        """The stored value, ``"shared"`` or ``"exclusive"``."""
        return self.value


M = LockMode
#: (mode held, mode asked for) -> may both be held by different holders at once
COMPATIBLE: dict[tuple[LockMode, LockMode], bool] = {
    (M.SHARED, M.SHARED): True,
    (M.SHARED, M.EXCLUSIVE): False,
    (M.EXCLUSIVE, M.SHARED): False,
    (M.EXCLUSIVE, M.EXCLUSIVE): False,
}
#: (mode waiting earlier, mode arriving later) -> the later request may overtake the earlier
OVERTAKES: dict[tuple[LockMode, LockMode], bool] = COMPATIBLE

Resource = tuple[str, str]  # (type, id)


def show(resource: Resource) -> str:
    """Return ``"type:id"`` for a resource ``(type, id)``, as messages and event entity ids name it."""
    return f"{resource[0]}:{resource[1]}"


@dataclass(slots=True)
class Grant:
    """A lease on one resource in one mode, held by ``holder``.

    ``token`` is the fencing token (the resource's counter after this grant); ``request_id`` the
    request that obtained it; ``ttl`` the lease length in seconds; ``granted_at``, ``expires_at``
    and ``ended_at`` are seconds on the lock manager's clock; ``task_id``/``agent_id`` tie it to a
    task attempt or an agent for bulk release; ``end_reason`` says how it ended (``released``,
    ``expired``, ``holder released``, ``upgraded``, ``downgraded``, or a bulk-release reason).
    """

    id: str
    resource: Resource
    mode: LockMode
    holder: str
    token: int
    request_id: str
    ttl: float
    granted_at: float
    expires_at: float
    task_id: str | None = None
    agent_id: str | None = None
    ended_at: float | None = None
    end_reason: str | None = None  # released, expired, holder released, upgraded, downgraded

    @property
    def active(self) -> bool:
        """True until the grant ends (``ended_at`` is None)."""
        return self.ended_at is None


class RequestState(str, Enum):
    """Where a lock request stands: waiting in queues, granted, or failed (``Request.error`` says why)."""

    WAITING = "waiting"
    GRANTED = "granted"
    FAILED = "failed"  # timed out, deadlock, cancelled: ``error`` says which


@dataclass(slots=True)
class Request:
    """A request for one or more ``(resource, mode)`` items, granted all together or not at all.

    ``ttl`` is the lease length in seconds of the grants it obtains; ``seq`` its arrival order;
    ``enqueued_at`` and ``deadline`` (None: waits forever) are seconds on the lock manager's clock;
    ``grants`` lists the ids of its grants once granted; ``error`` is the typed error of a failed one.
    """

    id: str
    holder: str
    items: tuple[tuple[Resource, LockMode], ...]
    ttl: float
    seq: int
    enqueued_at: float
    deadline: float | None
    task_id: str | None = None
    agent_id: str | None = None
    state: RequestState = RequestState.WAITING
    grants: list[str] = field(default_factory=list)
    error: OmoiError | None = None


@dataclass(slots=True)
class ResourceState:
    """One resource: its fencing-token counter, its active grants, and its waiting request ids in arrival order."""

    key: Resource
    token: int = 0
    holders: dict[str, Grant] = field(default_factory=dict)  # grant id -> active grant
    queue: deque[str] = field(default_factory=deque)  # waiting request ids, arrival order


@dataclass(slots=True)
class LockChanges(ChangeSet):
    """What changed since the last ``take_changes`` (live objects; the owner snapshots them).

    Resources, grants and requests keep their latest state per key; events and settled requests
    are appended in order; ``new_grants`` (which grants are inserts) is a set; ``settled`` only
    names callers to wake once the rest is written (``NOTIFY``).
    """

    NOTIFY: ClassVar[tuple[str, ...]] = ("settled",)

    resources: list[ResourceState] = field(default_factory=list, metadata=merge_rule(latest(attrgetter("key"))))
    grants: list[Grant] = field(default_factory=list, metadata=merge_rule(latest(attrgetter("id"))))
    new_grants: set[str] = field(default_factory=set, metadata=merge_rule(UNION))
    #: waiting ones to store, others to drop
    requests: list[Request] = field(default_factory=list, metadata=merge_rule(latest(attrgetter("id"))))
    events: list[Event] = field(default_factory=list, metadata=merge_rule(APPEND))
    #: no longer waiting: wake their callers
    settled: list[Request] = field(default_factory=list, metadata=merge_rule(APPEND))


class LockTable:
    """The lock manager's state and decisions, without I/O (see the Rules above).

    Every method takes ``now``, seconds on the owner's clock, and records its changes for
    ``take_changes``.
    """

    def __init__(self) -> None:
        """An empty table; ``restore`` fills it from storage."""
        self.resources: dict[Resource, ResourceState] = {}
        self.grants: dict[str, Grant] = {}  # active grants
        self.requests: dict[str, Request] = {}  # every request still remembered, by id
        self.by_holder: dict[str, dict[Resource, str]] = {}  # holder -> resource -> grant id
        self.waiting_by_holder: dict[str, set[str]] = {}  # holder -> ids of its waiting requests
        self.timers = Timers()
        self._seq = itertools.count(1)
        self._grant_ids = itertools.count(1)
        self._grant_prefix = ""
        self._recent: deque[str] = deque()  # finished request ids, oldest first (bounded memory)
        self.ended: dict[str, Grant] = {}  # recently ended grants, to say how a grant ended
        self._ended_order: deque[str] = deque()
        self.remember = 10_000
        self.log: ChangeRecorder[LockChanges] = ChangeRecorder(LockChanges)

    # ------------------------------------------------------------------ restoring

    def restore(
        self,
        tokens: Iterable[tuple[Resource, int]],
        grants: Iterable[Grant],
        waiting: Iterable[Request],
        grant_prefix: str,
        now: float,
    ) -> None:
        """Rebuild from storage: resource counters, active grants, waiting requests (in their
        original order). Grants that expired meanwhile, and waits past their deadline, are
        settled here; the ids of new grants start with ``grant_prefix`` (unique per process)."""
        self._grant_prefix = grant_prefix
        for key, token in tokens:
            self._resource(key).token = token
        for grant in grants:
            self._hold(grant)
            self.timers.add(grant.expires_at, "lease", grant.id)
        last_seq = 0
        for request in sorted(waiting, key=lambda r: r.seq):
            self.requests[request.id] = request
            self.waiting_by_holder.setdefault(request.holder, set()).add(request.id)
            for key, _ in request.items:
                self._resource(key).queue.append(request.id)
            if request.deadline is not None:
                self.timers.add(request.deadline, "wait", request.id)
            last_seq = max(last_seq, request.seq)
        self._seq = itertools.count(last_seq + 1)
        self.log.resources.clear()
        self.advance(now)
        self._regrant(list(self.resources), now)

    # ------------------------------------------------------------------ acquiring

    def acquire(
        self,
        request_id: str,
        holder: str,
        items: Sequence[tuple[Resource, LockMode]],
        now: float,
        *,
        ttl: float,
        wait: float | None,
        task_id: str | None = None,
        agent_id: str | None = None,
    ) -> Request:
        """Ask for every item at once. Nothing changes when it raises, and asking again with the
        same ``request_id`` gets the same answer (the same request, or the same error).

        Args:
            request_id: the caller's idempotency key.
            holder: the holder's name.
            items: ``(resource, mode)`` pairs, granted all together or not at all.
            now: seconds on the owner's clock.
            ttl: lease length of each grant, seconds.
            wait: seconds to wait at most; 0 refuses at once; None waits with no deadline.
            task_id: the task attempt it belongs to, if any (for bulk release).
            agent_id: the agent it belongs to, if any (for bulk release).

        Returns:
            the ``Request``: ``GRANTED`` (its ``grants`` hold the grant ids) or ``WAITING``.

        Raises:
            LockUnavailableError: ``wait == 0`` and an item is not free now.
            LockUpgradeError: an upgrade to exclusive while others share the resource.
            InvalidLockRequestError: the holder is already waiting for one of the resources.
            DeadlockError: waiting would close a wait-for cycle (the error names it).
            OmoiError: the stored error of an earlier failed request with this id.
        """
        known = self.requests.get(request_id)
        if known is not None:
            if known.state is RequestState.FAILED and known.error is not None:
                raise known.error
            return known
        request = Request(
            id=request_id,
            holder=holder,
            items=tuple(items),
            ttl=ttl,
            seq=next(self._seq),
            enqueued_at=now,
            deadline=None if wait is None or wait == 0 else now + wait,
            task_id=task_id,
            agent_id=agent_id,
        )
        # Items this holder already holds: re-entry, upgrade or downgrade.
        held = self.by_holder.get(holder, {})
        changes: list[tuple[Resource, LockMode, Grant]] = []
        for key, mode in request.items:
            grant_id = held.get(key)
            if grant_id is None:
                continue
            grant = self.grants[grant_id]
            if grant.mode is mode:
                continue
            if mode is M.EXCLUSIVE and any(g.holder != holder for g in self.resources[key].holders.values()):
                raise LockUpgradeError(
                    f"'{holder}' holds {show(key)} shared with others; only a sole holder may upgrade "
                    "to exclusive (release it and ask again, which queues fairly)",
                    resource=show(key),
                )
            changes.append((key, mode, grant))
        new_items = [(k, m) for k, m in request.items if k not in held]
        for key, _ in request.items:
            for rid in self.resources[key].queue if key in self.resources else ():
                if self.requests[rid].holder == holder:
                    raise InvalidLockRequestError(
                        f"'{holder}' is already waiting for {show(key)} (request '{rid}'); wait for "
                        "that request or let it time out before asking again",
                        resource=show(key),
                    )
        blocked = self._blocked(request, new_items, ahead_of=None)
        if blocked:
            if wait == 0:
                names = ", ".join(show(k) for k in blocked)
                raise LockUnavailableError(f"not available now: {names}", resources=[show(k) for k in blocked])
            cycle = self._cycle_with_changes(request, new_items, changes)
            if cycle is not None:
                error = DeadlockError("deadlock: " + " -> ".join(cycle), cycle=cycle)
                self._event("lock.deadlock", request, now, cycle=cycle)
                raise error
        # From here on the request is accepted: apply mode changes, then grant or queue.
        self.requests[request.id] = request
        for key, mode, grant in changes:
            self._end(grant, now, "upgraded" if mode is M.EXCLUSIVE else "downgraded")
        reused = [held[k] for k, _ in request.items if k in held and k not in {c[0] for c in changes}]
        request.grants.extend(reused)
        for key, mode, _ in changes:
            request.grants.append(self._grant(request, key, mode, now).id)
        if not new_items:
            self._settle(request, RequestState.GRANTED)
            if changes:
                self._regrant([c[0] for c in changes], now)
            return request
        if not blocked:
            for key, mode in new_items:
                request.grants.append(self._grant(request, key, mode, now).id)
            self._settle(request, RequestState.GRANTED)
        else:
            # It waits in the queue of every resource it names; it is granted once its holder
            # holds them all (a held one may expire meanwhile and is then asked for again).
            for key, _ in request.items:
                self._resource(key).queue.append(request.id)
            self.waiting_by_holder.setdefault(request.holder, set()).add(request.id)
            self.log.requests.add(request)
            if request.deadline is not None:
                self.timers.add(request.deadline, "wait", request.id)
            self._event("lock.waiting", request, now, resources=[show(k) for k, _ in new_items])
        if changes:
            self._regrant([c[0] for c in changes], now)
        return request

    # ------------------------------------------------------------------ releasing and renewing

    def release(self, holder: str, grant_ids: Sequence[str], now: float, reason: str = "released") -> list[Grant]:
        """End grants this holder holds; all or nothing.

        Args:
            holder: the holder's name.
            grant_ids: ids of its active grants.
            now: seconds on the owner's clock.
            reason: recorded as each grant's ``end_reason``.

        Returns:
            list[Grant] of the ended grants, in ``grant_ids`` order.

        Raises:
            LeaseExpiredError: a grant's lease expired (nothing is changed).
            LockNotHeldError: a grant is not an active grant of this holder (nothing is changed).
        """
        grants = [self._held_by(holder, gid) for gid in grant_ids]
        touched = []
        for grant in grants:
            self._end(grant, now, reason)
            touched.append(grant.resource)
        self._regrant(touched, now)
        return grants

    def renew(self, holder: str, grant_ids: Sequence[str], now: float) -> list[Grant]:
        """Extend each grant's lease to ``now + ttl`` (seconds); all or nothing.

        Returns:
            list[Grant] of the renewed grants, in ``grant_ids`` order.

        Raises:
            LeaseExpiredError: a grant's lease expired (nothing is changed).
            LockNotHeldError: a grant is not an active grant of this holder (nothing is changed).
        """
        grants = [self._held_by(holder, gid) for gid in grant_ids]
        for grant in grants:
            grant.expires_at = now + grant.ttl
            self.log.grants.add(grant)
            self.timers.add(grant.expires_at, "lease", grant.id)
        return grants

    def release_all(
        self,
        now: float,
        *,
        holder: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
        reason: str = "holder released",
    ) -> int:
        """End every grant, and drop every waiting request, of a holder, task or agent.

        A grant or request matches when any of the given ``holder``, ``task_id``, ``agent_id``
        matches it; dropped requests fail with ``LockNotHeldError`` naming ``reason``.

        Returns:
            the number of grants ended plus requests dropped.
        """

        def matches(x: Grant | Request) -> bool:
            return (
                (holder is not None and x.holder == holder)
                or (task_id is not None and x.task_id == task_id)
                or (agent_id is not None and x.agent_id == agent_id)
            )

        ended = [g for g in self.grants.values() if matches(g)]
        for grant in ended:
            self._end(grant, now, reason)
        dropped = [r for r in self.requests.values() if r.state is RequestState.WAITING and matches(r)]
        for request in dropped:
            self._fail(request, LockNotHeldError(f"request '{request.id}' was dropped: {reason}"), now)
        self._regrant([g.resource for g in ended] + [k for r in dropped for k, _ in r.items], now)
        return len(ended) + len(dropped)

    def cancel(self, request_id: str, now: float, reason: str) -> None:
        """Drop a waiting request (its caller gave up); it fails with ``LockTimeoutError`` naming
        ``reason``. An unknown or no longer waiting request is left alone."""
        request = self.requests.get(request_id)
        if request is not None and request.state is RequestState.WAITING:
            self._fail(request, LockTimeoutError(f"request '{request_id}' stopped waiting: {reason}"), now)
            self._regrant([k for k, _ in request.items], now)

    # ------------------------------------------------------------------ time

    def next_due(self) -> float | None:
        """Return when the next lease expiry or wait deadline falls due (seconds), or None."""
        return self.timers.next_due()

    def advance(self, now: float) -> None:
        """Expire leases and drop waits (``LockTimeoutError``) due at or before ``now`` (seconds),
        then grant what they freed."""
        touched: list[Resource] = []
        for kind, key in self.timers.pop_due(now):
            if kind == "lease":
                grant = self.grants.get(key)  # type: ignore[arg-type]
                if grant is not None and grant.expires_at <= now:
                    self._end(grant, now, "expired")
                    touched.append(grant.resource)
            elif kind == "wait":
                request = self.requests.get(key)  # type: ignore[arg-type]
                if request is not None and request.state is RequestState.WAITING and request.deadline is not None and request.deadline <= now:
                    waited = now - request.enqueued_at
                    self._fail(
                        request,
                        LockTimeoutError(
                            f"'{request.holder}' waited {waited:.3g}s for "
                            f"{', '.join(show(k) for k, _ in request.items)} and gave up",
                            resources=[show(k) for k, _ in request.items],
                        ),
                        now,
                    )
                    touched.extend(k for k, _ in request.items)
        if touched:
            self._regrant(touched, now)

    # ------------------------------------------------------------------ queries

    def holders_of(self, key: Resource) -> list[Grant]:
        """Return the active grants on ``key``, oldest token first (empty if unknown)."""
        state = self.resources.get(key)
        return sorted(state.holders.values(), key=lambda g: g.token) if state else []

    def waiting_on(self, key: Resource) -> list[Request]:
        """Return the requests waiting for ``key``, in arrival order (empty if unknown)."""
        state = self.resources.get(key)
        return [self.requests[rid] for rid in state.queue] if state else []

    def grant_of(self, grant_id: str) -> Grant | None:
        """Return the active grant with this id, or None (ended or unknown)."""
        return self.grants.get(grant_id)

    # ------------------------------------------------------------------ change log

    def take_changes(self) -> LockChanges:
        """Drain the change log: everything changed since the last call.

        Returns:
            a ``LockChanges`` of live objects (the owner snapshots them before persisting).
        """
        return self.log.take()

    # ------------------------------------------------------------------ internals

    def _resource(self, key: Resource) -> ResourceState:
        state = self.resources.get(key)
        if state is None:
            state = self.resources[key] = ResourceState(key)
        return state

    def _free(self, key: Resource, mode: LockMode, holder: str) -> bool:
        state = self.resources.get(key)
        return state is None or all(
            g.holder == holder or COMPATIBLE[(g.mode, mode)] for g in state.holders.values()
        )

    def _blocked(self, request: Request, items: Sequence[tuple[Resource, LockMode]], ahead_of: str | None) -> list[Resource]:
        """The items a request cannot have now: held incompatibly by someone else, or waited for
        by an earlier request it may not overtake.

        ``ahead_of`` is the request's own id when it is already queued (only the waiters before
        it count); None for a newcomer (every waiter is before it).
        """
        blocked = []
        for key, mode in items:
            if not self._free(key, mode, request.holder):
                blocked.append(key)
                continue
            state = self.resources.get(key)
            for rid in state.queue if state is not None else ():
                if rid == ahead_of:
                    break
                earlier = self.requests[rid]
                if earlier.holder != request.holder and not OVERTAKES[(dict(earlier.items)[key], mode)]:
                    blocked.append(key)
                    break
        return blocked

    def _regrant(self, keys: Iterable[Resource], now: float) -> None:
        """Grant, in arrival order, every waiting request that has become grantable."""
        pending = deque(dict.fromkeys(keys))
        while pending:
            key = pending.popleft()
            state = self.resources.get(key)
            if state is None:
                continue
            for rid in list(state.queue):
                request = self.requests.get(rid)
                if request is None or request.state is not RequestState.WAITING:
                    continue
                held = self.by_holder.get(request.holder, {})
                items = [(k, m) for k, m in request.items if k not in held]
                if not self._blocked(request, items, ahead_of=request.id):
                    for k, m in items:
                        request.grants.append(self._grant(request, k, m, now).id)
                    self._dequeue(request)
                    self._settle(request, RequestState.GRANTED)
                    pending.extend(k for k, _ in request.items if k != key)

    def _grant(self, request: Request, key: Resource, mode: LockMode, now: float) -> Grant:
        state = self._resource(key)
        state.token += 1
        grant = Grant(
            id=f"{self._grant_prefix}{next(self._grant_ids):x}",
            resource=key,
            mode=mode,
            holder=request.holder,
            token=state.token,
            request_id=request.id,
            ttl=request.ttl,
            granted_at=now,
            expires_at=now + request.ttl,
            task_id=request.task_id,
            agent_id=request.agent_id,
        )
        self._hold(grant)
        self.log.new_grants.add(grant.id)
        self.log.grants.add(grant)
        self.log.resources.add(state)
        self.timers.add(grant.expires_at, "lease", grant.id)
        self.log.events.add(
            Event(
                type="lock.granted",
                entity_type="lock",
                entity_id=show(key),
                at=now,
                payload={"mode": mode.value, "holder": grant.holder, "token": grant.token, "grant": grant.id,
                         "waited": round(now - request.enqueued_at, 6)},
                task_id=grant.task_id,
                agent_id=grant.agent_id,
                request_id=request.id,
            )
        )
        return grant

    def _hold(self, grant: Grant) -> None:
        self.grants[grant.id] = grant
        self._resource(grant.resource).holders[grant.id] = grant
        self.by_holder.setdefault(grant.holder, {})[grant.resource] = grant.id

    def _end(self, grant: Grant, now: float, reason: str) -> None:
        grant.ended_at = now
        grant.end_reason = reason
        self.grants.pop(grant.id, None)
        self.resources[grant.resource].holders.pop(grant.id, None)
        self.ended[grant.id] = grant
        self._ended_order.append(grant.id)
        while len(self._ended_order) > self.remember:
            self.ended.pop(self._ended_order.popleft(), None)
        held = self.by_holder.get(grant.holder)
        if held is not None and held.get(grant.resource) == grant.id:
            del held[grant.resource]
            if not held:
                del self.by_holder[grant.holder]
        self.log.grants.add(grant)
        self.log.events.add(
            Event(
                type="lock.expired" if reason == "expired" else "lock.released",
                entity_type="lock",
                entity_id=show(grant.resource),
                at=now,
                payload={"mode": grant.mode.value, "holder": grant.holder, "token": grant.token,
                         "grant": grant.id, "reason": reason},
                task_id=grant.task_id,
                agent_id=grant.agent_id,
            )
        )

    def _held_by(self, holder: str, grant_id: str) -> Grant:
        grant = self.grants.get(grant_id)
        if grant is not None:
            if grant.holder != holder:
                raise LockNotHeldError(
                    f"grant '{grant_id}' on {show(grant.resource)} is held by '{grant.holder}', not '{holder}'",
                    grant=grant_id,
                )
            return grant
        ended = self.ended.get(grant_id)
        if ended is not None and ended.holder == holder and ended.end_reason == "expired":
            raise LeaseExpiredError(
                f"the lease of grant '{grant_id}' on {show(ended.resource)} expired; acquire it again "
                "(the new grant carries a larger token)",
                grant=grant_id,
            )
        if ended is not None and ended.holder == holder:
            raise LockNotHeldError(f"grant '{grant_id}' on {show(ended.resource)} was already {ended.end_reason}", grant=grant_id)
        raise LockNotHeldError(f"'{holder}' holds no grant '{grant_id}'", grant=grant_id)

    def _dequeue(self, request: Request) -> None:
        for key, _ in request.items:
            state = self.resources.get(key)
            if state is not None:
                try:
                    state.queue.remove(request.id)
                except ValueError:
                    pass

    def _settle(self, request: Request, state: RequestState) -> None:
        waiting = self.waiting_by_holder.get(request.holder)
        queued = waiting is not None and request.id in waiting
        if queued:
            waiting.discard(request.id)
            if not waiting:
                del self.waiting_by_holder[request.holder]
        request.state = state
        if queued or request.id in self.log.requests:
            # only a request that waited has a stored row to remove; one granted (or refused)
            # at once was never stored
            self.log.requests.add(request)
        self.log.settled.add(request)
        self._recent.append(request.id)
        while len(self._recent) > self.remember:
            old = self.requests.get(self._recent.popleft())
            if old is not None and old.state is not RequestState.WAITING:
                del self.requests[old.id]

    def _fail(self, request: Request, error: OmoiError, now: float) -> None:
        self._dequeue(request)
        request.error = error
        self._settle(request, RequestState.FAILED)
        self._event("lock.wait_ended", request, now, error=str(error))

    def _cycle_with_changes(
        self,
        request: Request,
        items: Sequence[tuple[Resource, LockMode]],
        changes: Sequence[tuple[Resource, LockMode, Grant]],
    ) -> list[str] | None:
        """The cycle this request would close by waiting, judged with its own upgrades and
        downgrades already made (an upgrade can make others wait for this holder)."""
        before = [(grant, grant.mode) for _, _, grant in changes]
        try:
            for _, mode, grant in changes:
                grant.mode = mode
            return self._cycle_if_waiting(request, items)
        finally:
            for grant, mode in before:
                grant.mode = mode

    def _cycle_if_waiting(self, request: Request, items: Sequence[tuple[Resource, LockMode]]) -> list[str] | None:
        """The wait-for cycle this request would close by waiting, as holder names, else None."""
        start = request.holder
        if start not in self.by_holder and start not in self.waiting_by_holder:
            return None  # it holds nothing and waits for nothing: nobody can be waiting for it
        first = self._blockers(request.holder, items, newcomer=True)
        stack: list[tuple[str, list[str]]] = [(b, [start, b]) for b in sorted(first)]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            if node == start:
                return path
            if node in seen:
                continue
            seen.add(node)
            for request_id in self._waiting_requests_of(node):
                waiter = self.requests[request_id]
                held = self.by_holder.get(waiter.holder, {})
                pending = [(k, m) for k, m in waiter.items if k not in held]
                for nxt in sorted(self._blockers(node, pending, newcomer=False, own=waiter.id)):
                    stack.append((nxt, [*path, nxt]))
        return None

    def _waiting_requests_of(self, holder: str) -> list[str]:
        return sorted(self.waiting_by_holder.get(holder, ()))

    def _blockers(self, holder: str, items: Sequence[tuple[Resource, LockMode]], newcomer: bool, own: str | None = None) -> set[str]:
        """Holders this holder would wait for: incompatible holders and earlier waiters it may
        not overtake, on each item."""
        out: set[str] = set()
        for key, mode in items:
            state = self.resources.get(key)
            if state is None:
                continue
            for grant in state.holders.values():
                if grant.holder != holder and not COMPATIBLE[(grant.mode, mode)]:
                    out.add(grant.holder)
            for rid in state.queue:
                if rid == own:
                    break
                earlier = self.requests[rid]
                if earlier.holder != holder and not OVERTAKES[(dict(earlier.items)[key], mode)]:
                    out.add(earlier.holder)
        return out

    def _event(self, event_type: str, request: Request, now: float, **payload: Any) -> None:
        self.log.events.add(
            Event(
                type=event_type,
                entity_type="lock_request",
                entity_id=request.id,
                at=now,
                payload={"holder": request.holder, **payload},
                task_id=request.task_id,
                agent_id=request.agent_id,
                request_id=request.id,
            )
        )
