"""``rt.locks``: taking, renewing and releasing locks from a driver (or anywhere with a handle on
the lock manager).

    with rt.lock("file:/srv/report.csv", wait=10) as lease:
        write_report(token=lease.token)      # hand the token to whatever you write to

    async with await rt.locks.acquire_async("file:/srv/report.csv", wait=10) as lease:
        ...

Rules:
- ``acquire`` returns a ``Lease``: every grant of one request, with their fencing tokens. It
  waits (a long poll: the lock manager answers "still waiting" every few seconds and is asked
  again with the same request id, never spinning) until granted, ``wait`` runs out
  (``LockTimeoutError``), or a deadlock is found (``DeadlockError``).
- A lease must be renewed within its ttl or it expires. ``keep_alive=True`` (the default of
  ``Runtime.lock``; ``LockClient.acquire`` defaults to False) renews it from a background thread
  every ttl/3; if a renewal ever fails the lease is marked ``lost`` and the error kept in
  ``lost_reason``. Writes must still be fenced with the token: a paused process can outlive its
  lease without knowing.
- ``release`` is idempotent: releasing twice is harmless.
- ``acquire`` checks its whole request here before sending it (``specs.locks.parse_request``):
  ``holder=None`` means this client's holder, any other holder must be valid text (``""`` is
  refused, never replaced by the default).
- Every call rides out a lock-manager restart under the caller's call policy
  (``omoi_ray.client.calls``): a driver's for ``OMOI_CALL_RETRY_FOR`` seconds, a handler's until its
  attempt ends. A waiting ``acquire`` asks again with the same request id, so a restart neither
  loses its place in the queue nor grants it twice.
- Each call is defined once and offered blocking and awaitable (``_async``).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Self

from omoi_ray.client._args import flag
from omoi_ray.client.calls import Policy, Step, Steps, ask_until, flavours
from omoi_ray.errors import InvalidLockRequestError, LeaseExpiredError, LockError, LockNotHeldError, OmoiError
from omoi_ray.specs.locks import check_request_id, parse_request, request_id_for


def default_holder() -> str:
    """A holder name unique to this client: ``"<host>:<pid>:<8 hex>"``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """Every grant of one lock request, held until released (or lost).

    Attributes:
        holder: the holder name the grants belong to.
        request_id: the request's id (a release derives its own id from it).
        grants: the grants (``resource``, ``mode``, ``token``, ``id``, ...), one per resource.
        ttl: the lease in seconds; renew within it or it expires.
        released: True once released.
        lost: True once a background renewal failed (``lost_reason`` says why).
    """

    def __init__(self, client: LockClient, holder: str, request_id: str, grants: Sequence[Any], ttl: float) -> None:
        self.client = client
        self.holder = holder
        self.request_id = request_id
        self.grants = list(grants)
        self.ttl = ttl
        self.released = False
        self.lost = False
        self.lost_reason: str | None = None
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def __repr__(self) -> str:
        held = ", ".join(f"{g.resource} {g.mode} #{g.token}" for g in self.grants)
        return f"Lease({self.holder!r}: {held})"

    @property
    def token(self) -> int:
        """The fencing token of a single-resource lease.

        Raises:
            LockError: the lease holds several resources (use ``tokens``).
        """
        if len(self.grants) != 1:
            raise LockError(f"this lease holds {len(self.grants)} resources; use tokens[resource]")
        return self.grants[0].token

    @property
    def tokens(self) -> dict[str, int]:
        """``{resource: fencing token}`` of every grant."""
        return {g.resource: g.token for g in self.grants}

    def _renew(self) -> Steps[None]:
        """Extend every grant by the ttl (from now).

        Raises:
            LeaseExpiredError: the lease expired first.
            LockNotHeldError: a grant is no longer held (released elsewhere).
        """
        self.grants = yield self.client._step("renew", self.holder, [g.id for g in self.grants])

    renew, renew_async = flavours(_renew)

    def _release(self) -> Steps[None]:
        """Give every grant back (and stop the background renewal); a second release does nothing.

        Raises:
            LeaseExpiredError: the lease had expired (nothing is held).
        """
        self._stop.set()
        if self.released:
            return
        release_id = request_id_for(f"release-{self.request_id}")
        yield self.client._step("release", self.holder, [g.id for g in self.grants], release_id,
                                if_repeated=_released_before)
        self.released = True

    release, release_async = flavours(_release)

    def keep_alive(self) -> Lease:
        """Renew from a background thread every ttl/3 until released (or the lease is lost).

        Returns:
            This lease.
        """
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._renew_until_released, name=f"lease-{self.request_id[:8]}", daemon=True)
            self._keeper.start()
        return self

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except OmoiError as exc:  # expired, or not held any more (released elsewhere, holder let go)
                self.lost, self.lost_reason = True, str(exc)
                return

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.release()
        except LeaseExpiredError:
            pass  # nothing to give back

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.release_async()
        except LeaseExpiredError:
            pass  # nothing to give back


def _released_before(error: BaseException) -> int:
    """A release made again after the lock manager restarted: its first try may have ended the
    grants (the new process no longer remembers that answer), and "not held" is what a release
    wants. An expired lease stays an error (``LeaseExpiredError``)."""
    if isinstance(error, LockNotHeldError) and not isinstance(error, LeaseExpiredError):
        return 0
    raise error


class LockClient:
    """Calls to the lock manager as one holder (or any, by passing ``holder``): ``rt.locks``.

    Args:
        handle: the lock manager's actor handle.
        holder: this client's holder name (default: ``default_holder()``).
        policy: the callers' budget across lock-manager restarts (default: a driver's).
        check: runs before each retry and may raise to stop retrying (a handler's cancellation).
        refresh: returns a new handle when the old one's actor is gone (None while there is none).
    """

    def __init__(self, handle: Any, holder: str | None = None, *, policy: Policy | None = None,
                 check: Callable[[], None] | None = None, refresh: Callable[[], Any] | None = None) -> None:
        self.handle = handle
        self.holder = holder or default_holder()
        self.policy = policy
        self.check = check
        self.refresh = refresh

    def __repr__(self) -> str:
        return f"LockClient(holder={self.holder!r})"

    def _refreshed(self) -> None:
        self.handle = self.refresh() or self.handle  # type: ignore[misc]

    def _step(self, method: str, *args: Any, if_repeated: Callable[[BaseException], Any] | None = None,
              **kwargs: Any) -> Step:
        """A step calling the lock manager's ``method`` (on the handle current at each try)."""
        return Step(lambda: getattr(self.handle, method).remote(*args, **kwargs), policy=self.policy,
                    what="the lock manager", check=self.check, if_repeated=if_repeated,
                    refresh=self._refreshed if self.refresh is not None else None)

    def _acquire(
        self,
        resources: Any,
        mode: str = "exclusive",
        *,
        wait: float | None = None,
        ttl: float = 30.0,
        holder: str | None = None,
        request_id: str | None = None,
        keep_alive: bool = False,
        task_id: str | None = None,
        agent_id: str | None = None,
    ) -> Steps[Lease]:
        """Acquire every resource of ``resources`` at once.

        Args:
            resources: ``"type:id"``, a ``(type, id)`` or ``(type, id, mode)`` tuple, or a list
                of those (up to 64; see ``specs.locks.parse_request`` for the forms).
            mode: ``"exclusive"`` or ``"shared"`` (for resources that name no mode).
            wait: seconds to wait (None: no limit, 0: try once; at most a day).
            ttl: the lease, in seconds (above 0, at most a day).
            holder: the holder name (None: this client's); an empty or non-text holder is refused.
            request_id: the request's id (default: a new uuid4 hex); the same id asks again for
                the same request, never twice.
            keep_alive: renew the lease from a background thread until released.
            task_id: the task the lock is taken for (kept with the grants, for ``release_all``).
            agent_id: the agent the lock is taken by (likewise).

        Returns:
            A ``Lease`` (use it in a ``with`` or ``async with`` block).

        Raises:
            InvalidLockRequestError: a bad argument (nothing is sent).
            LockTimeoutError: not granted within ``wait`` seconds.
            LockUnavailableError: not available at once with ``wait=0``.
            DeadlockError: waiting would close a cycle of holders.
        """
        holder = self.holder if holder is None else holder
        parse_request(holder, resources, mode, ttl=ttl, wait=wait)
        check_request_id(request_id)
        flag(keep_alive, "keep_alive", InvalidLockRequestError)
        request_id = uuid.uuid4().hex if request_id is None else request_id
        reply = yield from ask_until(
            self._step("acquire", holder, resources, mode, ttl=ttl, wait=wait, request_id=request_id,
                       task_id=task_id, agent_id=agent_id),
            lambda reply: reply.granted,
        )
        lease = Lease(self, holder, request_id, reply.grants, ttl)
        return lease.keep_alive() if keep_alive else lease

    acquire, acquire_async = flavours(_acquire)

    def _release_all(self, *, holder: str | None = None, task_id: str | None = None,
                     agent_id: str | None = None) -> Steps[int]:
        """End every grant (and drop every waiting request) of a holder, a task or an agent.

        Args:
            holder: a holder name.
            task_id: a task id (the grants taken for it).
            agent_id: an agent name (the grants taken by it).

        Returns:
            How many grants were ended.
        """
        return (yield self._step("release_all", holder=holder, task_id=task_id, agent_id=agent_id))

    release_all, release_all_async = flavours(_release_all)

    def _holders(self, resource: str) -> Steps[dict[str, Any]]:
        """Who holds and who waits for one resource.

        Args:
            resource: ``"type:id"``.

        Returns:
            ``{"resource": "type:id", "holders": [grant, ...], "waiting": [(holder, mode), ...]}``,
            waiters in queue order.
        """
        return (yield self._step("holders", resource))

    holders, holders_async = flavours(_holders)


__all__ = ["Lease", "LockClient", "default_holder"]
