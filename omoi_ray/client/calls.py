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
- A "still waiting" answer of a long poll (a lock request queued behind others) is asked again
  with the same request id (``ask_until``), never with a new one: the actor keeps its place.
- Every public driver call is described once, as a generator of ``Step``s (the object ref(s) it
  makes, with their policy) around its checks and post-processing; ``flavours`` turns that one
  definition into a blocking method (``ray.get`` on each step) and an awaitable one (``await``
  on the same refs), so a web layer's event loop reuses it with no extra hop. Arguments are
  checked once, in the definition, before the first ref is made.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

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
        """A driver's budget: give up after ``seconds`` of failed tries.

        Args:
            seconds: the budget, in seconds (``OMOI_CALL_RETRY_FOR``; default 60).

        Returns:
            A ``Policy`` named ``"driver"``.
        """
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
    """The driver budget in force in this process (see ``set_driver_budget``)."""
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


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Step:
    """One call to an actor, ready to be made: how to make its object ref, under which policy.

    Attributes:
        make: makes the call and returns its object ref (or, in tests, an awaitable); called
            again for every try, so it picks up a handle that ``refresh`` replaced.
        policy: the caller's budget (None: the driver's, ``Settings.call_retry_for`` seconds).
        what: names the actor in messages (None: the label ``label`` gave its handle).
        timeout: seconds each try may take (None: no limit); past it Ray's ``GetTimeoutError``.
        refresh: looks the actor up again by name when its handle's actor is gone.
        check: runs before each retry and may raise to stop retrying (a cancelled attempt).
        if_repeated: turns the error of a call made again into its answer (or raises it).
        retry: False for a call that is made once, whose Ray errors reach the definition as
            they are (it handles them itself, e.g. an agent that failed to start).
    """

    make: Callable[[], Any]
    policy: Policy | None = None
    what: str | None = None
    timeout: float | None = None
    refresh: Callable[[], Any] | None = None
    check: Callable[[], None] | None = None
    if_repeated: Callable[[BaseException], Any] | None = None
    retry: bool = True


def telling_repeats(make: Callable[[bool], Any]) -> Callable[[], Any]:
    """A ``Step.make`` for a call that the actor answers faster when it knows it is a first try:
    ``make(False)`` on the first try, ``make(True)`` on every later one (an earlier try may have
    run). One per call: the count of tries is kept in it.

    Args:
        make: makes the call, told whether it repeats an earlier try.

    Returns:
        The ``make`` to put in the call's ``Step``.
    """
    tries = 0

    def each() -> Any:
        nonlocal tries
        tries += 1
        return make(tries > 1)

    return each


class Repeated:
    """A refusal of a call made again that its own first try may have caused ("already done"):
    a definition's ``if_repeated`` wraps it (``Repeated.of``), reads what the call acts on, and
    answers with that if it holds the call's own work, else raises ``error`` (handoff answers,
    thread creates and closes)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    @classmethod
    def of(cls, error: BaseException, kind: type[Exception]) -> Repeated:
        """Wrap ``error`` if it is of ``kind`` (to be checked against what the call acts on);
        raise it otherwise."""
        if isinstance(error, kind):
            return cls(error)
        raise error


@dataclass(frozen=True, slots=True)
class Pause:
    """A wait of ``seconds`` inside a definition (``time.sleep`` blocking, ``asyncio.sleep``
    awaiting); its answer is None."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Answered:
    """A step answered in this process, with no actor to call (the in-memory doubles of
    ``omoi_ray.testing`` yield these); its answer is ``value``."""

    value: Any


#: A call's one definition: yields ``Step``s (and ``Pause``s), receives each step's answer (or
#: its final error, thrown in), and returns the call's result.
Steps = Generator["Step | Pause | Answered", Any, T]


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

    Args:
        ref_factory: makes the call (called again for every try, so it picks up a handle that
            ``refresh`` replaced).
        policy: the caller's budget (default: the driver's, ``Settings.call_retry_for`` seconds).
        retry_for: overrides ``policy`` with a driver budget of that many seconds.
        timeout: bounds each try, in seconds (Ray's ``GetTimeoutError``).
        what: names the actor in messages.
        refresh: looks the actor up again when its handle's actor is gone.
        check: runs before each retry and may raise to stop retrying.
        if_repeated: turns an error from a repeated call into its answer (or raises it).

    Returns:
        The actor's answer.

    Raises:
        OmoiError: the actor's own typed error, as itself.
        RuntimeUnavailableError: the budget is spent, or the actor is gone and cannot be
            refreshed.
        Exception: any other error, unchanged.
    """
    if retry_for is not None:
        policy = Policy.driver(retry_for)
    return _get(Step(ref_factory, policy, what, timeout, refresh, check, if_repeated))


async def call_async(
    ref_factory: Callable[[], Any],
    *,
    policy: Policy = AGENT,
    timeout: float | None = None,
    what: str | None = None,
    refresh: Callable[[], Any] | None = None,
    check: Callable[[], None] | None = None,
    if_repeated: Callable[[BaseException], Any] | None = None,
) -> Any:
    """``call`` for async code: ``await ref_factory()`` under ``policy`` (default: an agent's,
    which never gives up). Cancelling the awaiting task stops the retries.

    Args, Returns and Raises as for ``call``.
    """
    return await _await(Step(ref_factory, policy, what, timeout, refresh, check, if_repeated))


class _Retry:
    """What one step's failed tries mean under its policy (shared by ``_get`` and ``_await``)."""

    __slots__ = ("step", "tries")

    def __init__(self, step: Step) -> None:
        self.step = step
        self.tries: _Tries | None = None

    def failed(self, exc: Exception) -> tuple[bool, Any]:
        """``(True, answer)`` when a repeated call's error is its answer (``if_repeated``), else
        ``(False, seconds to wait)``; raises the final error when the step may not be retried."""
        step = self.step
        if not step.retry:
            raise exc
        if self.tries is None:
            self.tries = _Tries(step.policy or _driver, step.what, step.refresh, step.check)
        elif step.if_repeated is not None and isinstance(exc, ray.exceptions.RayTaskError):
            return True, step.if_repeated(unwrap(exc))  # made again: "already done" may be its answer
        return False, self.tries.after(exc)

    def answered(self, value: Any) -> Any:
        """The step's answer, once a try succeeded."""
        if self.tries is not None:
            self.tries.recovered()
        return value


def _get(step: Step) -> Any:
    """One step, blocking: ``ray.get`` under its policy."""
    retry = _Retry(step)
    while True:
        try:
            return retry.answered(ray.get(step.make(), timeout=step.timeout))
        except Exception as exc:  # noqa: BLE001 - sorted by the policy
            done, outcome = retry.failed(exc)
        if done:
            return outcome
        time.sleep(outcome)


async def _await_once(step: Step) -> Any:
    if step.timeout is None:
        return await step.make()
    try:
        return await asyncio.wait_for(_awaited(step.make()), step.timeout)
    except TimeoutError:
        raise ray.exceptions.GetTimeoutError(f"the call did not answer within {step.timeout:g}s") from None


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def _await(step: Step) -> Any:
    """One step, awaiting the same ref under the same policy as ``_get``."""
    retry = _Retry(step)
    while True:
        try:
            return retry.answered(await _await_once(step))
        except Exception as exc:  # noqa: BLE001 - sorted by the policy
            done, outcome = retry.failed(exc)
        if done:
            return outcome
        await asyncio.sleep(outcome)


def drive(steps: Steps[T] | T) -> T:
    """Run a definition blocking: each ``Step`` with ``ray.get``, each ``Pause`` with
    ``time.sleep``; returns what the definition returns (a plain value is returned as is).
    A step's final error is thrown into the definition, which may handle it."""
    if not inspect.isgenerator(steps):
        return steps  # type: ignore[return-value]
    try:
        item = next(steps)
        while True:
            try:
                if isinstance(item, Answered):
                    answer = item.value
                else:
                    answer = time.sleep(item.seconds) if isinstance(item, Pause) else _get(item)
            except Exception as exc:  # noqa: BLE001 - the definition decides
                item = steps.throw(exc)
            else:
                item = steps.send(answer)
    except StopIteration as done:
        return done.value


async def drive_async(steps: Steps[T] | T) -> T:
    """``drive`` for async code: each ``Step`` awaited on its ref, each ``Pause`` with
    ``asyncio.sleep``."""
    if not inspect.isgenerator(steps):
        return steps  # type: ignore[return-value]
    try:
        item = next(steps)
        while True:
            try:
                if isinstance(item, Answered):
                    answer = item.value
                elif isinstance(item, Pause):
                    answer = await asyncio.sleep(item.seconds)
                else:
                    answer = await _await(item)
            except Exception as exc:  # noqa: BLE001 - the definition decides
                item = steps.throw(exc)
            else:
                item = steps.send(answer)
    except StopIteration as done:
        return done.value


def ask_until(step: Step, done: Callable[[Any], bool]) -> Steps[Any]:
    """A long poll: make ``step`` (the same call, so the same request id) until ``done(answer)``;
    returns that answer. For use with ``yield from`` inside a definition."""
    while True:
        answer = yield step
        if done(answer):
            return answer


_STEPS_OF = re.compile(r"(?:\w+\.)*Steps\[(.*)\]")  # a definition's return annotation


def flavours(
    definition: Callable[..., Steps[T] | T],
) -> tuple[Callable[..., T], Callable[..., Awaitable[T]]]:
    """The blocking and the awaitable method made from one definition.

    Args:
        definition: a method (``self`` first) that checks its arguments and yields ``Step``s;
            conventionally named with a leading underscore (``_get`` gives ``get`` and
            ``get_async``).

    Returns:
        ``(blocking, awaitable)``: ``blocking(self, ...)`` drives the definition with
        ``ray.get``; ``awaitable(self, ...)`` is a coroutine function driving it with ``await``.
        Both keep the definition's signature and docstring.
    """
    name = definition.__name__.lstrip("_")

    @functools.wraps(definition)
    def blocking(self: Any, *args: Any, **kwargs: Any) -> T:
        return drive(definition(self, *args, **kwargs))

    @functools.wraps(definition)
    async def awaitable(self: Any, *args: Any, **kwargs: Any) -> T:
        return await drive_async(definition(self, *args, **kwargs))

    signature = inspect.signature(definition)
    returns = signature.return_annotation
    steps_of = _STEPS_OF.fullmatch(returns) if isinstance(returns, str) else None
    if steps_of is not None:
        signature = signature.replace(return_annotation=steps_of[1])  # what callers get
    owner = definition.__qualname__.rpartition(".")[0]
    for method, suffix in ((blocking, ""), (awaitable, "_async")):
        method.__name__ = name + suffix
        method.__qualname__ = f"{owner}.{name}{suffix}" if owner else name + suffix
        method.__signature__ = signature  # type: ignore[attr-defined]
    awaitable.__doc__ = (f"Awaitable form of ``{name}`` (same arguments, result and errors; awaits the "
                         f"same object refs).\n\n{inspect.getdoc(definition) or ''}")
    return blocking, awaitable
