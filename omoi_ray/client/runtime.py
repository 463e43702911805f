"""The driver API's front: ``connect`` to (or start) a runtime, and the ``Runtime`` it returns.

    rt = omoi.connect(migrate=True)
    rt.tasks / rt.agents / rt.locks / rt.events / rt.messages   # the calls, grouped by concept
    rt.submit(...), rt.wait(...), rt.get(...), rt.lock(...), ...   # short forms of the common ones

Rules:
- ``connect`` starts a local Ray or joins ``RAY_ADDRESS``/``address``, refuses a database another
  runtime owns (before touching it), checks the database schema (or migrates it when asked), and
  gets or creates the singletons (scheduler, lock manager, event relay) in the runtime's
  namespace. On SQLite the singletons are pinned to the driver's node, which holds the file. A
  second driver connecting later gets the same singletons and sees the same state; connecting
  with a different database (or Redis mirror) than the running singletons' is refused.
- ``Runtime`` is a thin shell: every call lives in its group (``omoi_ray.client.tasks``,
  ``.agents``, ``.locks``, ``.events``, ``.messages``), defined once and offered blocking and awaitable
  (``name`` and ``name_async``); the short forms (``rt.submit`` is ``rt.tasks.submit``) are the
  group's own methods, not copies.
- Calls are retried while a singleton restarts (every driver call is idempotent) and give up with
  ``RuntimeUnavailableError`` after ``Settings.call_retry_for`` seconds; errors raised inside
  actors reach the caller as the original typed ``OmoiError``.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray

from omoi_ray.actors.event_relay import EventRelayActor
from omoi_ray.actors.lock_manager import LockManagerActor
from omoi_ray.actors.scheduler import SchedulerActor
from omoi_ray.client._args import flag, seconds
from omoi_ray.client.agents import STOP_MARGIN_S, AgentRef, Agents, kill_and_wait  # noqa: F401 - re-exported
from omoi_ray.client.calls import Step, Steps, call, flavours, label, set_driver_budget
from omoi_ray.client.events import Events
from omoi_ray.client.handoffs import HandoffClient
from omoi_ray.client.locks import Lease, LockClient
from omoi_ray.client.messages import Messages
from omoi_ray.client.patterns import Patterns
from omoi_ray.client.tasks import Tasks
from omoi_ray.client.tickets import TicketClient
from omoi_ray.errors import ConfigurationError, OmoiError, RuntimeUnavailableError, TaskNotFoundError
from omoi_ray.naming import EVENTS_NAME, LOCKS_NAME, SCHEDULER_NAME
from omoi_ray.protocol import RuntimeStatus
from omoi_ray.settings import Settings

log = logging.getLogger("omoi_ray")

_RemoteScheduler = ray.remote(SchedulerActor)
_RemoteLocks = ray.remote(LockManagerActor)
_RemoteRelay = ray.remote(EventRelayActor)


class _ShortForm:
    """``rt.<name>`` is ``rt.<group>.<method>`` itself (same signature, docstring and result)."""

    def __init__(self, group: str, method: str) -> None:
        self.group, self.method = group, method
        self.__doc__ = f"Short form of ``rt.{group}.{method}``."

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, rt: Any, owner: type | None = None) -> Any:
        if rt is None:
            return self
        return getattr(getattr(rt, self.group), self.method)


class Runtime:
    """A connection to one omoi-ray runtime (one namespace, one database); made by ``connect``.

    Attributes:
        settings: the runtime's ``Settings``.
        tasks: ``rt.tasks`` (submit, run, wait, get, get_many, result, attempts, cancel).
        agents: ``rt.agents`` (spawn, ref, get, list, search, best_fit, stats).
        locks: ``rt.locks``, a ``LockClient`` holding as this driver (acquire, holders,
            release_all).
        events: ``rt.events`` (call it to list; follow, relay_status, flush).
        handoffs: ``rt.handoffs`` (offer, accept, decline, get, wait; see ``omoi_ray.client.handoffs``).
        patterns: ``rt.patterns`` (apply, result: YAML pattern files; short forms
            ``rt.apply_pattern``, ``rt.pattern_result``).
        tickets: ``rt.tickets`` (create, get, list, move, approve, add_artifact, gate, history,
            artifacts, cancel; see ``omoi_ray.client.tickets``).
        messages: ``rt.messages`` (create_thread, close_thread, thread, threads, send,
            send_many, mark_read, messages, unread, receipts, receive, follow).
        scheduler, lock_manager, relay: the singletons' actor handles.

    Every call has an awaitable flavour named ``<call>_async`` (``await rt.tasks.get_async(id)``,
    ``await rt.wait_async(ids)``), built from the same definition as the blocking one.
    """

    def __init__(self, settings: Settings, scheduler: Any, lock_manager: Any, relay: Any) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.lock_manager = lock_manager
        self.relay = relay
        self.tasks = Tasks(self)
        self.agents = Agents(self)
        self.events = Events(self)
        self.messages = Messages(self)
        self.patterns = Patterns(self)
        self._locks: LockClient | None = None
        #: ``rt.handoffs``: offer held tasks to other agents, accept or decline for an agent
        self.handoffs = HandoffClient(lambda: self.scheduler)
        #: ``rt.tickets``: tickets moving through phases, with gates, history and context
        self.tickets = TicketClient(lambda: self.scheduler)
        set_driver_budget(settings.call_retry_for)  # this process's calls ride out restarts this long
        for handle, role, name in ((scheduler, "scheduler", SCHEDULER_NAME), (lock_manager, "lock manager", LOCKS_NAME),
                                   (relay, "event relay", EVENTS_NAME)):
            if handle is not None:
                label(handle, f"the {role} ({name})")  # named in messages of calls that fail

    def __repr__(self) -> str:
        return f"Runtime(namespace={self.settings.namespace!r}, database={self.settings.safe_database_url()!r})"

    # ------------------------------------------------------------------ the groups' short forms

    submit, submit_async = _ShortForm("tasks", "submit"), _ShortForm("tasks", "submit_async")
    run, run_async = _ShortForm("tasks", "run"), _ShortForm("tasks", "run_async")
    wait, wait_async = _ShortForm("tasks", "wait"), _ShortForm("tasks", "wait_async")
    get, get_async = _ShortForm("tasks", "get"), _ShortForm("tasks", "get_async")
    get_many, get_many_async = _ShortForm("tasks", "get_many"), _ShortForm("tasks", "get_many_async")
    result, result_async = _ShortForm("tasks", "result"), _ShortForm("tasks", "result_async")
    attempts, attempts_async = _ShortForm("tasks", "attempts"), _ShortForm("tasks", "attempts_async")
    cancel, cancel_async = _ShortForm("tasks", "cancel"), _ShortForm("tasks", "cancel_async")
    spawn_agent, spawn_agent_async = _ShortForm("agents", "spawn"), _ShortForm("agents", "spawn_async")
    agent, agent_async = _ShortForm("agents", "ref"), _ShortForm("agents", "ref_async")
    follow = _ShortForm("events", "follow")
    relay_status, relay_status_async = _ShortForm("events", "relay_status"), _ShortForm("events", "relay_status_async")
    flush_events, flush_events_async = _ShortForm("events", "flush"), _ShortForm("events", "flush_async")
    apply_pattern, apply_pattern_async = _ShortForm("patterns", "apply"), _ShortForm("patterns", "apply_async")
    pattern_result, pattern_result_async = _ShortForm("patterns", "result"), _ShortForm("patterns", "result_async")

    @property
    def locks(self) -> LockClient:
        """A ``LockClient`` holding locks as this driver (see ``omoi_ray.client.locks``)."""
        if self._locks is None:
            self._locks = LockClient(self.lock_manager)
        return self._locks

    def _lock(self, resources: Any, mode: str = "exclusive", **options: Any) -> Steps[Lease]:
        """``rt.locks.acquire`` with a lease that renews itself: ``keep_alive`` defaults to True.

        Args:
            resources, mode: as for ``LockClient.acquire``.
            **options: ``wait``, ``ttl``, ``holder``, ``keep_alive``, ... as for
                ``LockClient.acquire``.

        Returns:
            A ``Lease``; use it in a ``with`` (or ``async with``) block.

        Raises:
            InvalidLockRequestError: a bad argument (nothing is sent).
            LockTimeoutError, LockUnavailableError, DeadlockError: as ``LockClient.acquire``.
        """
        options.setdefault("keep_alive", True)
        return (yield from self.locks._acquire(resources, mode, **options))

    lock, lock_async = flavours(_lock)

    # ------------------------------------------------------------------ the runtime as a whole

    def _status(self) -> Steps[RuntimeStatus]:
        """The runtime at a glance.

        Returns:
            A ``RuntimeStatus``: ``database`` (masked), ``namespace``, ``tasks`` (count per
            status), ``agents`` (``AgentInfo``s), ``unclaimable`` ((required capabilities,
            count) of ready tasks no live agent has the capabilities for), ``ready``,
            ``unhandled`` ((type, required capabilities, count) of ready tasks whose type no
            live agent with their capabilities handles).
        """
        return (yield Step(lambda: self.scheduler.status.remote()))

    status, status_async = flavours(_status)

    def _describe(self) -> Steps[dict[str, Any]]:
        """The scheduler's own state.

        Returns:
            ``{"database" (masked), "namespace", "pid", "restarted", ...counters}``: exchanges,
            commits, events written, time spent committing.
        """
        return (yield Step(lambda: self.scheduler.describe.remote()))

    describe, describe_async = flavours(_describe)

    def _shutdown(self, *, agents_timeout: float = 5.0) -> Steps[None]:
        """Stop every agent of this runtime, then the singletons (their state stays in the database).

        Args:
            agents_timeout: seconds each agent's running handlers get to finish (0 to
                ``MAX_WAIT_S``).

        Raises:
            InvalidArgumentError: a bad ``agents_timeout``.
        """
        seconds(agents_timeout, "agents_timeout")
        status = yield from self._status()
        for view in status.agents:
            if view.status != "alive":
                continue
            try:
                yield from self.agents._ref(view.id)._stop(timeout=agents_timeout)
            except (OmoiError, ray.exceptions.RayActorError):
                pass
        try:
            yield Step(lambda: self.scheduler.shutdown.remote(), timeout=30, retry=False)
        except ray.exceptions.RayError:
            pass
        ray.kill(self.scheduler)
        ray.kill(self.lock_manager)
        try:
            yield Step(lambda: self.relay.stop.remote(), timeout=15, retry=False)
        except ray.exceptions.RayError:
            pass
        ray.kill(self.relay)

    shutdown, shutdown_async = flavours(_shutdown)


def connect(
    settings: Settings | None = None,
    *,
    address: str | None = None,
    migrate: bool = False,
    ray_init: Mapping[str, Any] | None = None,
) -> Runtime:
    """Connect to the runtime in ``settings.namespace``, creating its scheduler if needed.

    Starts a local Ray when none is running and no address is given (``RAY_ADDRESS`` counts as
    one). With ``migrate`` the database is upgraded to the code's schema first; otherwise a
    database that is behind raises ``DatabaseNotMigratedError``. A database owned by another
    runtime (namespace and Ray cluster) whose lease is live raises ``DatabaseOwnedError`` before
    anything is migrated or started. A singleton that cannot start raises its typed error.
    """
    from omoi_ray.store import migrate as migrations  # alembic: only drivers that connect need it

    flag(migrate, "migrate")  # before anything starts: "no" is not False
    settings = settings or Settings()
    url = settings.resolved_database_url()
    if not ray.is_initialized():
        options = {"namespace": settings.namespace, "log_to_driver": False, **(ray_init or {})}
        if address is not None:
            options["address"] = address
        _check_ray_address(options.get("address"))
        ray.init(**options)
        if options.get("address") is None and not os.environ.get("RAY_ADDRESS"):
            # This process's local Ray ends with it: so does the runtime's claim on the database.
            from omoi_ray.owner import runtime_owner

            atexit.register(_release_at_exit, runtime_owner(settings.namespace), url)
    _check_running_database(settings)  # before migrating: a refused driver creates nothing
    _check_owner(settings, url)  # before migrating: another runtime's database stays untouched
    if migrate:
        migrations.upgrade(url)
    else:
        migrations.check(url)
    # The runtime's singletons: named, detached, restarted by Ray forever, placed on no CPU.
    placement = _placement(url)
    scheduler, lock_manager, relay = (
        remote.options(
            name=name, namespace=settings.namespace, get_if_exists=True, lifetime="detached",
            num_cpus=0, max_restarts=-1, max_concurrency=concurrency, **placement,
        ).remote(settings)
        for remote, name, concurrency in (
            (_RemoteScheduler, SCHEDULER_NAME, 10_000),
            (_RemoteLocks, LOCKS_NAME, 10_000),
            (_RemoteRelay, EVENTS_NAME, 16),  # threaded: flush() blocks a thread
        )
    )
    described, _, relay_state = _describe_started([scheduler, lock_manager, relay])
    _check_same_database(settings, described["database"])
    mirror = (settings.safe_redis_url(), settings.redis_prefix if settings.redis_url else None)
    running = (relay_state["redis"], relay_state["prefix"])
    if mirror != running:
        raise ConfigurationError(
            f"the runtime in namespace '{settings.namespace}' mirrors events to "
            f"{running[0] or 'no Redis'} (prefix {running[1]}), but this driver is configured for "
            f"{mirror[0] or 'no Redis'} (prefix {mirror[1]}); use the same OMOI_REDIS_URL and "
            "OMOI_REDIS_PREFIX, or another OMOI_NAMESPACE"
        )
    return Runtime(settings, scheduler, lock_manager, relay)


def _check_ray_address(address: str | None) -> None:
    """Refuse at once, with ``ConfigurationError``, a Ray address (given, else ``RAY_ADDRESS``)
    that is malformed or where no Ray answers: ``ray.init`` would retry there for minutes."""
    from omoi_ray.client import address as ray_address

    source = "address" if address is not None else "RAY_ADDRESS"
    text = address if address is not None else os.environ.get("RAY_ADDRESS", "").strip()
    if not text:
        return  # a local Ray is started
    try:
        text = ray_address.parse(text)
    except ValueError as exc:
        raise ConfigurationError(f"{source}: {exc}") from None
    ray_address.check_reachable(text)


def _check_same_database(settings: Settings, running: str) -> None:
    if running != settings.safe_database_url():
        raise ConfigurationError(
            f"the runtime in namespace '{settings.namespace}' uses the database {running}, but this "
            f"driver is configured for {settings.safe_database_url()}; use the same OMOI_DATABASE_URL "
            "or another OMOI_NAMESPACE"
        )


def _check_running_database(settings: Settings) -> None:
    """If a scheduler already runs in the namespace, raise ``ConfigurationError`` unless it uses
    this driver's database (checked again, with Redis, once the singletons answer)."""
    try:
        scheduler = ray.get_actor(SCHEDULER_NAME, namespace=settings.namespace)
    except ValueError:
        return  # none yet: this driver starts it
    try:
        described = ray.get(scheduler.describe.remote(), timeout=30)
    except (ray.exceptions.RayError, OmoiError):
        return  # restarting or broken: the full start-up below waits for it and reports
    _check_same_database(settings, described["database"])


def _check_owner(settings: Settings, url: str) -> None:
    """Raise ``DatabaseOwnedError`` if another runtime owns the database (read only)."""
    from omoi_ray.owner import runtime_owner
    from omoi_ray.store import ownership
    from omoi_ray.store.store import make_engine

    path = _sqlite_path(url)
    if path is not None and not Path(path).exists():
        return  # a file not created yet is owned by nobody
    engine = make_engine(url)
    try:
        ownership.check_free(engine, runtime_owner(settings.namespace), f"the database {settings.safe_database_url()}")
    finally:
        engine.dispose()


def _release_at_exit(me: Any, url: str) -> None:
    from omoi_ray.store import ownership
    from omoi_ray.store.store import make_engine

    try:
        engine = make_engine(url)
        try:
            ownership.release_owner(engine, me)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - the lease then lapses on its own
        log.debug("could not release the database lease at exit: %s", exc)


def _sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return path.split("?", 1)[0] if path and path != ":memory:" else None


def _placement(url: str) -> dict[str, Any]:
    """Where the singletons may run. A SQLite file lives on the driver's node, so they are
    pinned there (``soft=False``: never placed where another, empty file would be opened)."""
    if not url.startswith("sqlite"):
        return {}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node, soft=False)}


def _describe_started(handles: list[Any]) -> list[dict[str, Any]]:
    """Each singleton's ``describe``, waiting out restarts. One that could not start (its typed
    start error: database not migrated, owned by another runtime, ...) is ended, so that the
    next ``connect`` starts it afresh, and its error is raised."""
    described: list[dict[str, Any]] = []
    failure: OmoiError | None = None
    for handle in handles:
        try:
            described.append(call(lambda h=handle: h.describe.remote(), retry_for=120))
        except OmoiError as exc:
            if isinstance(exc, RuntimeUnavailableError):
                raise
            failure = failure or exc  # ``call`` raises the actor's own typed error
            kill_and_wait(handle)
            described.append({})
    if failure is not None:
        raise failure
    return described


__all__ = ["AgentRef", "Runtime", "connect", "TaskNotFoundError"]
