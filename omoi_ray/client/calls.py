"""One call policy: how drivers, agents and handler contexts reach the runtime's singletons.

The singletons (scheduler ``omoi.scheduler``, lock manager ``omoi.locks``, event relay
``omoi.events``) are restarted by Ray whenever they die (``max_restarts=-1``); a restart costs
the caller time, never an attempt or a lost call.

Rules:
- Every call made through here is idempotent (it carries its request id, or only reads), so a
  call that failed because its actor was restarting is made again with the same arguments. A
  method whose memory of answers does not survive a restart says "already done" in its own
  way; the caller turns that into the answer with ``if_repeated`` (called only for a call that
  was made again).
- Which Ray errors mean "try again" is data (``RETRY_ON``): ``ActorUnavailableError`` ("The
  actor was restarted", "temporarily unavailable": the call may or may not have run, so it is
  repeated). ``ActorDiedError`` means this handle's actor is gone for good (killed without
  restart); a caller that can look the singleton up again by name (``refresh``) does so and
  tries again under its budget, any other caller fails at once. Every other error is final.
- Each caller has a budget (``Policy``): a driver gives up with ``RuntimeUnavailableError``
  after ``OMOI_CALL_RETRY_FOR`` seconds (default 60) of failed tries; agents and handler
  contexts never give up (a handler context stops when its attempt is cancelled), logging while
  they wait. Waits between tries double from 0.05 s up to 2 s.
- Errors raised inside an actor reach the caller as the plain typed ``OmoiError`` with its
  one-line message (``unwrap`` takes the cause out of Ray's ``RayTaskError`` wrapper).
- ``call`` (blocking) and ``call_async`` (awaiting) share one policy (``_Tries``); the path of
  a call that succeeds at once does no extra work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from omoi_ray.errors import OmoiError, RuntimeUnavailableError

log = logging.getLogger("omoi_ray.client.calls")

#: Ray errors that mean "the actor is restarting or briefly unreachable: ask again". In Ray 2.60
#: a restartable actor's calls in flight when it dies fail with it ("The actor was restarted"),
#: and so do calls sent while it restarts ("The actor is restarting"), within a second or two.
RETRY_ON: tuple[type[BaseException], ...] = (ray.exceptions.ActorUnavailableError,)
#: Ray errors that mean "this handle's actor is gone": it is dead with no restart left (killed
#: with ``no_restart``, or its constructor raised). Retried only after ``refresh``.
GONE_ON: tuple[type[BaseException], ...] = (ray.exceptions.ActorDiedError,)

DEFAULT_DRIVER_RETRY_FOR = 60.0
FIRST_DELAY, MAX_DELAY = 0.05, 2.0
LOG_EVERY = 10.0  # seconds between "still waiting" warnings


@dataclass(frozen=True)
class Policy:
    """How long one kind of caller rides out a singleton's restart.

    ``who`` names the caller in logs; ``give_up_after`` is the number of seconds of failed tries
    after which ``RuntimeUnavailableError`` is raised (None: never give up).
    """

    who: str
    give_up_after: float | None

    @classmethod
    def driver(cls, seconds: float = DEFAULT_DRIVER_RETRY_FOR) -> Policy:
        return cls("driver", seconds)


AGENT = Policy("agent", None)
HANDLER = Policy("handler", None)
_driver = Policy.driver()


def set_driver_budget(seconds: float) -> None:
    """Set how long this process's driver calls retry (``Settings.call_retry_for``; ``connect``
    sets it from the runtime's settings)."""
    global _driver
    _driver = Policy.driver(seconds)


def driver_policy() -> Policy:
    return _driver


_labels: dict[str, str] = {}  # actor id (hex) -> how this process's messages name that actor


def label(handle: Any, name: str) -> None:
    """Name an actor in this process's messages about it (``"the scheduler (omoi.scheduler)"``),
    for calls that do not pass ``what``."""
    _labels[handle._actor_id.hex()] = name


def unwrap(exc: BaseException) -> BaseException:
    """The ``OmoiError`` behind a Ray exception (the plain error, not Ray's wrapper), or ``exc``."""
    current: Any = exc
    for _ in range(5):
        if isinstance(current, ray.exceptions.RayTaskError):
            # Ray's wrapper is a dynamic subclass of the cause's class: it passes isinstance
            # checks but its text is the remote traceback. The cause is the error itself.
            current = current.cause
        elif isinstance(current, OmoiError):
            return current
        else:
            current = getattr(current, "__cause__", None)
        if current is None:
            break
    return exc


class _Tries:
    """The state of one call's retries: decides, after each failure, to wait or to give up."""

    __slots__ = ("check", "delay", "last_log", "named", "policy", "refresh", "started", "tries", "what")

    def __init__(self, policy: Policy, what: str | None, refresh: Callable[[], Any] | None,
                 check: Callable[[], None] | None) -> None:
        self.policy, self.refresh, self.check = policy, refresh, check
        self.what = what or "an omoi-ray actor"
        self.named = what is not None
        self.started = self.last_log = time.monotonic()
        self.delay = FIRST_DELAY
        self.tries = 0

    def after(self, exc: BaseException) -> float:
        """Seconds to wait before the next try; raises the final error instead when there is none."""
        if isinstance(exc, ray.exceptions.RayTaskError):
            inner = unwrap(exc)
            if inner is not exc:
                raise inner from None
            raise exc
        if not self.named and isinstance(exc, ray.exceptions.RayActorError):
            self.what = _labels.get(exc.actor_id or "", self.what)
        if isinstance(exc, GONE_ON):
            if self.refresh is None:
                raise RuntimeUnavailableError(
                    f"{self.what} is gone (killed without restart?); connect() again to recreate it"
                ) from None
            self.refresh()  # the singleton's name may now point at a new actor
        elif not isinstance(exc, RETRY_ON):
            raise exc
        self.tries += 1
        now = time.monotonic()
        waited = now - self.started
        budget = self.policy.give_up_after
        if budget is not None and waited + self.delay > budget:
            raise RuntimeUnavailableError(
                f"{self.what} did not come back within {budget:g}s "
                f"(OMOI_CALL_RETRY_FOR; last error {type(exc).__name__})"
            ) from None
        if self.tries == 1 or now - self.last_log >= LOG_EVERY:
            self.last_log = now
            log.warning("%s is unavailable for %.1fs (%s); the %s keeps trying", self.what,
                        waited, type(exc).__name__, self.policy.who)
        if self.check is not None:
            self.check()
        delay, self.delay = self.delay, min(self.delay * 2, MAX_DELAY)
        return delay

    def recovered(self) -> None:
        if self.tries:
            log.info("%s answered after %d tries (%.1fs)", self.what, self.tries,
                     time.monotonic() - self.started)


def call(
    ref_factory: Callable[[], Any],
    *,
    policy: Policy | None = None,
    retry_for: float | None = None,
    timeout: float | None = None,
    what: str | None = None,
    refresh: Callable[[], Any] | None = None,
    check: Callable[[], None] | None = None,
    if_repeated: Callable[[BaseException], Any] | None = None,
) -> Any:
    """Run ``ray.get(ref_factory())`` under the call policy; returns the actor's answer.

    ``ref_factory`` makes the call (it is called again for every try, so it picks up a handle
    that ``refresh`` replaced). ``policy`` is the caller's budget (default: the driver's,
    ``Settings.call_retry_for`` seconds); ``retry_for`` overrides it with a driver budget of that
    many seconds. ``timeout`` bounds each try (Ray's ``GetTimeoutError``). ``what`` names the
    actor in messages; ``check`` runs before each retry and may raise to stop retrying;
    ``if_repeated(error)`` turns an error from a repeated call into its answer (or raises it).

    Raises the actor's ``OmoiError`` as itself, ``RuntimeUnavailableError`` when the budget is
    spent (or the actor is gone and cannot be refreshed), and any other error unchanged.
    """
    if retry_for is not None:
        policy = Policy.driver(retry_for)
    tries: _Tries | None = None
    while True:
        try:
            value = ray.get(ref_factory(), timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - sorted by the policy
            if tries is None:
                tries = _Tries(policy or _driver, what, refresh, check)
            elif if_repeated is not None and isinstance(exc, ray.exceptions.RayTaskError):
                return if_repeated(unwrap(exc))  # made again: "already done" may be its answer
            delay = tries.after(exc)
        else:
            if tries is not None:
                tries.recovered()
            return value
        time.sleep(delay)


async def call_async(
    ref_factory: Callable[[], Any],
    *,
    policy: Policy = AGENT,
    what: str | None = None,
    refresh: Callable[[], Any] | None = None,
    if_repeated: Callable[[BaseException], Any] | None = None,
) -> Any:
    """``call`` for async code: ``await ref_factory()`` under ``policy`` (default: an agent's,
    which never gives up). Cancelling the awaiting task stops the retries."""
    tries: _Tries | None = None
    while True:
        try:
            value = await ref_factory()
        except Exception as exc:  # noqa: BLE001 - sorted by the policy
            if tries is None:
                tries = _Tries(policy, what, refresh, None)
            elif if_repeated is not None and isinstance(exc, ray.exceptions.RayTaskError):
                return if_repeated(unwrap(exc))  # made again: "already done" may be its answer
            delay = tries.after(exc)
        else:
            if tries is not None:
                tries.recovered()
            return value
        await asyncio.sleep(delay)
