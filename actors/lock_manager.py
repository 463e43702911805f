"""The lock manager actor: the one writer of lock grants, waiters and fencing-token counters.

A thin shell around ``LockTable`` (decisions), on the durable-singleton shell
(``omoi_ray.actors.durable.DurableWriter``: start-up, ``Store``, ``GroupCommit``, deadline timer, describe).

Rules:
- Every grant, release, expiry, wait and refusal is committed (with its event) before the caller
  hears of it; a grant's token is therefore durable before anyone can use it.
- Singleton like the scheduler: fixed name, namespace, ``get_if_exists``, ``num_cpus=0``,
  ``max_restarts=-1``; the constructor claims the database (``omoi_ray.actors.durable``), then rebuilds
  memory from it.
- ``acquire`` parks a waiting caller for at most ``poll`` seconds and then answers "still
  waiting"; the caller asks again with the same request id. A waiting request nobody has asked
  about for ``3 * poll`` seconds is dropped (Ray does not cancel a parked call whose caller died),
  so dead waiters never block a queue. Waiters restored after a restart get that grace too.
- Leases expire on time (a timer for the earliest deadline, no polling) and waiters are granted
  the moment a holder releases.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from typing import Any, NamedTuple

import ray
from omoi_ray.actors.durable import DurableWriter, holds_start_error

from omoi_ray.core.locks import Grant, LockChanges, LockTable, RequestState, show
from omoi_ray.errors import OmoiError
from omoi_ray.settings import Settings
from omoi_ray.specs.locks import check_holder, check_request_id, parse_request

log = logging.getLogger("omoi_ray.client.locks")

POLL = 10.0  # seconds a waiting caller is parked before it is told to ask again
REMEMBERED_RELEASES = 10_000


class GrantInfo(NamedTuple):
    """A grant as a lock holder sees it."""

    id: str
    resource_type: str
    resource_id: str
    mode: str
    token: int
    holder: str
    expires_in: float  # seconds left on the lease when this was sent

    @property
    def resource(self) -> str:
        """The resource as ``"type:id"`` (as ``core.locks.show`` names it)."""
        return f"{self.resource_type}:{self.resource_id}"


class AcquireReply(NamedTuple):
    """The lock manager's answer to ``acquire``.

    ``request_id`` names the request (the caller's, or one made here); ``granted`` is True when
    every resource was granted, and ``grants`` then lists one ``GrantInfo`` per resource. False
    means still waiting (``grants`` is empty): ask again with the same request id.
    """

    request_id: str
    granted: bool  # False: still waiting, ask again with the same request id
    grants: list[GrantInfo]


def info(grant: Grant, now: float) -> GrantInfo:
    """Return ``grant`` as its holder sees it, ``expires_in`` counted from ``now``.

    Args:
        grant: a grant of the lock table (active or ended).
        now: the lock manager's clock reading (seconds since the epoch).

    Returns:
        A ``GrantInfo``; ``expires_in`` is the seconds left on the lease, rounded to the
        millisecond and never below 0.
    """
    return GrantInfo(
        grant.id, grant.resource[0], grant.resource[1], grant.mode.value, grant.token, grant.holder,
        round(max(0.0, grant.expires_at - now), 3),
    )


@holds_start_error
class LockManagerActor(DurableWriter[LockChanges]):
    """The lock manager singleton: a Ray actor (``ray.remote(LockManagerActor)``, started by
    ``omoi_ray.client.runtime``) around a ``LockTable``, rebuilt from the database at start-up.

    Its public methods are Ray calls. ``acquire``, ``release``, ``renew``, ``release_all`` and
    ``holders`` come from drivers (``LockClient`` and its ``Lease``s) and from agents (the locks
    a task declares, ``ctx`` locks); ``renew_all`` and ``release_all`` from agents (heartbeats,
    attempt ends). Each replies only once its changes are committed (see the module rules).

    Args:
        settings: the runtime's settings (database, namespace, owner lease).

    Raises:
        OmoiError: start-up failed (the database is not migrated, or owned by another runtime);
            held and raised by every call (``holds_start_error``).
    """

    WRITER = "locks"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)  # settings, logging, migration check, store, claim
        self.table = LockTable()
        snapshot = self.store.load_locks()
        now = time.time()
        self.table.restore(snapshot.tokens, snapshot.grants, snapshot.requests, f"{secrets.token_hex(4)}-", now)
        self.callers: dict[str, list[asyncio.Future[None]]] = {}
        # Waiting requests with no caller parked on them, and when one last asked: dropped after
        # 3 * POLL (restored waiters start here, so their callers have that long to come back).
        self.unattended: dict[str, float] = {r.id: now for r in snapshot.requests}
        self.releases: OrderedDict[str, Any] = OrderedDict()
        self._start(self.table, self.store.writer.locks)
        log.info(
            "lock manager up (%s): %d active grants, %d waiting, database %s",
            "restarted" if self.restarted else "new", len(self.table.grants), len(snapshot.requests), self.store.safe_url,
        )

    def __repr__(self) -> str:
        return f"LockManager(namespace={self.settings.namespace!r})"

    # ------------------------------------------------------------------ API

    @ray.method(enable_task_events=False)
    async def acquire(
        self,
        holder: str,
        resources: Any,
        mode: str = "exclusive",
        *,
        ttl: float = 30.0,
        wait: float | None = None,
        request_id: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
        poll: float = POLL,
    ) -> AcquireReply:
        """Ask for every resource at once (see ``LockTable.acquire``). Returns granted grants, or
        "still waiting" after ``poll`` seconds: ask again with the returned request id."""
        spec = parse_request(holder, resources, mode, ttl=ttl, wait=wait)
        request_id = check_request_id(request_id) or uuid.uuid4().hex
        now = time.time()
        try:
            request = self.table.acquire(
                request_id, spec.holder, spec.items, now, ttl=spec.ttl, wait=spec.wait,
                task_id=task_id, agent_id=agent_id,
            )
        except OmoiError:
            self._after_change()  # a refused wait writes its event (deadlock)
            await self.commit.sync()
            raise
        self._after_change()
        if request.state is RequestState.WAITING:
            caller: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.callers.setdefault(request.id, []).append(caller)
            self.unattended.pop(request.id, None)
            try:
                await asyncio.wait({caller}, timeout=max(0.05, poll))
            finally:
                waiting = self.callers.get(request.id, [])
                if caller in waiting:
                    waiting.remove(caller)
                if not waiting and request.state is RequestState.WAITING:
                    self.callers.pop(request.id, None)
                    self.unattended[request.id] = time.time()
                    self.timers.poke()
        await self.commit.sync()
        if request.state is RequestState.FAILED and request.error is not None:
            raise request.error
        if request.state is RequestState.WAITING:
            return AcquireReply(request.id, False, [])
        now = time.time()
        grants = [self.table.grant_of(g) or self.table.ended.get(g) for g in request.grants]
        return AcquireReply(request.id, True, [info(g, now) for g in grants if g is not None])

    @ray.method(enable_task_events=False)
    async def release(self, holder: str, grant_ids: list[str], request_id: str | None = None) -> int:
        """End grants. A repeated call with the same request id returns the first answer."""
        check_request_id(request_id)
        if request_id is not None and request_id in self.releases:
            outcome = self.releases[request_id]
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        try:
            ended = len(self.table.release(check_holder(holder), list(grant_ids), time.time()))
            outcome: Any = ended
        except OmoiError as exc:
            outcome = exc
        self._remember(request_id, outcome)
        self._after_change()
        await self.commit.sync()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @ray.method(enable_task_events=False)
    async def renew(self, holder: str, grant_ids: list[str]) -> list[GrantInfo]:
        """Extend the leases of a holder's grants by their ``ttl``, all or nothing; called by a
        driver's ``Lease`` that keeps itself alive.

        Args:
            holder: the holder's name.
            grant_ids: ids of active grants of ``holder``.

        Returns:
            The renewed grants as ``GrantInfo``s, in ``grant_ids`` order, once committed.

        Raises:
            InvalidLockRequestError: ``holder`` is not a holder name.
            LeaseExpiredError, LockNotHeldError: as ``LockTable.renew`` (nothing is renewed).
        """
        now = time.time()
        grants = self.table.renew(check_holder(holder), list(grant_ids), now)
        self._after_change()
        await self.commit.sync()
        return [info(g, now) for g in grants]

    async def renew_all(self, holders: list[str]) -> int:
        """Renew every grant of the given holders, and keep their waits alive (an agent's
        heartbeat for its running attempts)."""
        now = time.time()
        wanted = set(holders)
        mine = [g for g in self.table.grants.values() if g.holder in wanted]
        by_holder: dict[str, list[str]] = {}
        for grant in mine:
            by_holder.setdefault(grant.holder, []).append(grant.id)
        for name, ids in by_holder.items():
            self.table.renew(name, ids, now)
        for name in wanted:
            for request_id in self.table.waiting_by_holder.get(name, ()):
                if request_id in self.unattended:
                    self.unattended[request_id] = now
        self._after_change()
        await self.commit.sync()
        return len(mine)

    async def release_all(
        self, *, holder: str | None = None, holders: list[str] | None = None, task_id: str | None = None,
        agent_id: str | None = None, reason: str = "holder released",
    ) -> int:
        """End every grant and drop every wait of a holder (or several), a task or an agent."""
        now = time.time()
        count = 0
        for name in [holder] if holder else []:
            count += self.table.release_all(now, holder=name, reason=reason)
        for name in holders or []:
            count += self.table.release_all(now, holder=name, reason=reason)
        if task_id or agent_id:
            count += self.table.release_all(now, task_id=task_id, agent_id=agent_id, reason=reason)
        self._after_change()
        await self.commit.sync()
        return count

    async def holders(self, resource: str) -> dict[str, Any]:
        """Who holds a resource and who waits for it, in order."""
        from omoi_ray.specs.locks import parse_resource

        key, _ = parse_resource(resource)
        now = time.time()
        await self.commit.sync()
        return {
            "resource": show(key),
            "holders": [info(g, now) for g in self.table.holders_of(key)],
            "waiting": [(r.holder, dict(r.items)[key].value) for r in self.table.waiting_on(key)],
        }

    # ------------------------------------------------------------------ internals

    def _counters(self) -> dict[str, Any]:
        """``describe``'s numbers: the shell's, then active grants and waiting requests."""
        return {
            **super()._counters(),
            "active_grants": len(self.table.grants),
            "waiting": sum(1 for r in self.table.requests.values() if r.state is RequestState.WAITING),
        }

    def _on_committed(self, batch: LockChanges) -> None:
        """After a commit: wake the callers of requests that were granted or gave up."""
        for request in batch.settled:
            self.unattended.pop(request.id, None)
            for caller in self.callers.pop(request.id, ()):
                if not caller.done():
                    caller.set_result(None)

    def _next_due(self) -> float | None:
        due = self.table.next_due()
        orphan = min(self.unattended.values(), default=None)
        if orphan is not None:
            orphan += 3 * POLL
            due = orphan if due is None else min(due, orphan)
        return due

    def _advance(self, now: float) -> None:
        """Leases that lapsed end, waits that timed out fail, and waits nobody asks about go."""
        self.table.advance(now)
        for request_id, asked in list(self.unattended.items()):
            if asked + 3 * POLL <= now:
                self.unattended.pop(request_id, None)
                self.table.cancel(request_id, now, "its caller stopped asking (gone?)")

    def _remember(self, request_id: str | None, outcome: Any) -> None:
        if request_id is None:
            return
        self.releases[request_id] = outcome
        while len(self.releases) > REMEMBERED_RELEASES:
            self.releases.popitem(last=False)
