"""Taking locks from a driver (or anywhere with a handle on the lock manager).

    with rt.lock("file:/srv/report.csv", wait=10) as lease:
        write_report(token=lease.token)      # hand the token to whatever you write to

Rules:
- ``acquire`` returns a ``Lease``: every grant of one request, with their fencing tokens. It
  waits (asking again every few seconds, never spinning) until granted, ``wait`` runs out
  (``LockTimeoutError``), or a deadlock is found (``DeadlockError``).
- A lease must be renewed within its ttl or it expires. ``keep_alive=True`` (the default of
  ``Runtime.lock``; ``LockClient.acquire`` defaults to False) renews it from a background thread every ttl/3; if a renewal ever fails the
  lease is marked ``lost`` and the error kept in ``lost_reason``. Writes must still be fenced
  with the token: a paused process can outlive its lease without knowing.
- ``release`` is idempotent: releasing twice is harmless.
- ``acquire`` checks its whole request here before sending it (``lock_specs.parse_request``):
  ``holder=None`` means this client's holder, any other holder must be valid text (``""`` is
  refused, never replaced by the default).
- Every call rides out a lock-manager restart under the caller's call policy
  (``omoi_ray.client.calls``): a driver's for ``OMOI_CALL_RETRY_FOR`` seconds, a handler's until its
  attempt ends. A waiting ``acquire`` asks again with the same request id, so a restart neither
  loses its place in the queue nor grants it twice.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Self

from omoi_ray.client.calls import Policy, call
from omoi_ray.errors import LeaseExpiredError, LockError, LockNotHeldError, OmoiError
from omoi_ray.specs.locks import check_request_id, parse_request, request_id_for


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
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
        """The fencing token of a single-resource lease."""
        if len(self.grants) != 1:
            raise LockError(f"this lease holds {len(self.grants)} resources; use tokens[resource]")
        return self.grants[0].token

    @property
    def tokens(self) -> dict[str, int]:
        return {g.resource: g.token for g in self.grants}

    def renew(self) -> None:
        self.grants = self.client._call(lambda: self.client.handle.renew.remote(self.holder, [g.id for g in self.grants]))

    def release(self) -> None:
        self._stop.set()
        if self.released:
            return
        release_id = request_id_for(f"release-{self.request_id}")
        self.client._call(
            lambda: self.client.handle.release.remote(self.holder, [g.id for g in self.grants], release_id),
            if_repeated=_released_before,
        )
        self.released = True

    def keep_alive(self) -> Lease:
        """Renew from a background thread every ttl/3 until released (or the lease is lost)."""
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._renew_until_released, name=f"lease-{self.request_id[:8]}", daemon=True)
            self._keeper.start()
        return self

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except LeaseExpiredError as exc:
                self.lost, self.lost_reason = True, str(exc)
                return
            except OmoiError as exc:  # not held any more (released elsewhere, holder let go)
                self.lost, self.lost_reason = True, str(exc)
                return

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.release()
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
    """Blocking calls to the lock manager, as one holder (or any, by passing ``holder``).

    ``policy`` is the callers' budget across lock-manager restarts (default: a driver's);
    ``check`` runs before each retry and may raise to stop retrying (a handler's cancellation).
    """

    def __init__(self, handle: Any, holder: str | None = None, *, policy: Policy | None = None,
                 check: Callable[[], None] | None = None) -> None:
        self.handle = handle
        self.holder = holder or default_holder()
        self.policy = policy
        self.check = check

    def _call(self, ref_factory: Callable[[], Any], if_repeated: Callable[[BaseException], Any] | None = None) -> Any:
        return call(ref_factory, policy=self.policy, what="the lock manager", check=self.check, if_repeated=if_repeated)

    def acquire(
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
    ) -> Lease:
        """Acquire every resource of ``resources`` at once (see ``lock_specs.parse_request`` for
        the forms and bounds of ``mode``, ``ttl`` and ``wait``); returns a ``Lease``. Raises
        ``InvalidLockRequestError`` before anything is sent, ``LockTimeoutError``,
        ``LockUnavailableError`` (``wait=0``), ``DeadlockError``."""
        holder = self.holder if holder is None else holder
        parse_request(holder, resources, mode, ttl=ttl, wait=wait)
        check_request_id(request_id)
        request_id = uuid.uuid4().hex if request_id is None else request_id
        while True:  # "still waiting" replies: ask again with the same request id
            reply = self._call(
                lambda: self.handle.acquire.remote(
                    holder, resources, mode, ttl=ttl, wait=wait, request_id=request_id,
                    task_id=task_id, agent_id=agent_id,
                )
            )
            if reply.granted:
                lease = Lease(self, holder, request_id, reply.grants, ttl)
                return lease.keep_alive() if keep_alive else lease

    def release_all(self, *, holder: str | None = None, task_id: str | None = None, agent_id: str | None = None) -> int:
        return self._call(lambda: self.handle.release_all.remote(holder=holder, task_id=task_id, agent_id=agent_id))

    def holders(self, resource: str) -> dict[str, Any]:
        return self._call(lambda: self.handle.holders.remote(resource))
