"""The driver API: connect to (or start) a runtime, spawn agents, submit tasks, wait, inspect.

Rules:
- ``connect`` starts a local Ray or joins ``RAY_ADDRESS``/``address``, refuses a database another
  runtime owns (before touching it), checks the database schema (or migrates it when asked), and
  gets or creates the scheduler singleton in the runtime's namespace. On SQLite the singletons
  are pinned to the driver's node, which holds the file. A second driver connecting later gets
  the same scheduler and sees the same state; connecting with a different database than the
  running scheduler's is refused.
- ``spawn_agent`` takes an agent's name by creating its actor (Ray refuses a name that is taken),
  never by looking first, so concurrent callers cannot both start one.
- Calls are retried while the scheduler restarts (every driver call is idempotent: task ids are
  fixed on the driver before submission), and give up with ``RuntimeUnavailableError``.
- Errors raised inside actors reach the caller as the original typed ``OmoiError``, not wrapped
  in Ray's exception types.
- Arguments are checked here, before anything is sent: ids must be task ids, sequences must not
  be strings, seconds must be finite and within the bounds of ``omoi_ray.core.storable``
  (``InvalidArgumentError``, ``InvalidTaskSpecError``, ``InvalidAgentSpecError`` naming them).
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray

from omoi_ray.actors.agent import AgentActor
from omoi_ray.actors.event_relay import EventRelayActor
from omoi_ray.actors.lock_manager import LockManagerActor
from omoi_ray.actors.scheduler import SchedulerActor
from omoi_ray.client.calls import call, label, set_driver_budget, unwrap
from omoi_ray.core import storable
from omoi_ray.errors import (
    AgentNotFoundError,
    ConfigurationError,
    InvalidAgentSpecError,
    InvalidArgumentError,
    InvalidSubmissionError,
    OmoiError,
    RuntimeUnavailableError,
    TaskNotFoundError,
    WaitTimeoutError,
)
from omoi_ray.naming import EVENTS_NAME, LOCKS_NAME, SCHEDULER_NAME, agent_actor_name
from omoi_ray.protocol import RuntimeStatus, WaitReply
from omoi_ray.settings import Settings
from omoi_ray.specs.tasks import (
    AgentSpec,
    AttemptInfo,
    TaskInfo,
    TaskSpec,
    check_name,
    check_payload,
    check_task_id,
    parse_agent_spec,
    submission_list,
    task_id_list,
    task_spec_fields,
)

log = logging.getLogger("omoi_ray")

_NAME_RACE_TRIES = 5  # a name taken and freed again this many times in a row: give up
#: how long ``AgentRef.stop`` waits past its ``timeout`` for the agent to report and deregister
#: before it ends the actor anyway (an actor that ended oddly, e.g. after a handler called
#: ``ray.actor.exit_actor()``, never answers), in seconds
STOP_MARGIN_S = 15.0

_RemoteScheduler = ray.remote(SchedulerActor)
_RemoteAgent = ray.remote(AgentActor)
_RemoteLocks = ray.remote(LockManagerActor)
_RemoteRelay = ray.remote(EventRelayActor)


class AgentRef:
    """A handle on one agent actor."""

    def __init__(self, name: str, handle: Any) -> None:
        self.name = name
        self.handle = handle

    def __repr__(self) -> str:
        return f"AgentRef({self.name!r})"

    def info(self) -> dict[str, Any]:
        return call(lambda: self.handle.info.remote())

    def pid(self) -> int:
        return call(lambda: self.handle.pid.remote())

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Stop gracefully (running handlers get ``timeout`` seconds, 0 to ``MAX_WAIT_S``),
        then end the actor. Returns the agent's counters (``started``, ``finished``, ...), or
        ``{}`` if it did not answer within ``timeout`` + ``STOP_MARGIN_S`` seconds (it is ended
        anyway; what it held is requeued as for a lost agent). ``InvalidArgumentError`` for a
        bad ``timeout``."""
        timeout = _argument(storable.check_seconds, timeout, "timeout", maximum=storable.MAX_WAIT_S, allow_zero=True)
        try:
            stats = ray.get(self.handle.stop.remote(timeout), timeout=timeout + STOP_MARGIN_S)
        except ray.exceptions.GetTimeoutError:
            log.warning("agent %s did not answer its stop within %gs; ending it", self.name, timeout + STOP_MARGIN_S)
            stats = {}
        except ray.exceptions.RayActorError:
            stats = {}
        _kill_and_wait(self.handle)
        return stats

    def kill(self, restart: bool = False) -> None:
        """End the actor abruptly (as a crash would); with ``restart`` Ray starts it again."""
        ray.kill(self.handle, no_restart=not restart)


class Runtime:
    """A connection to one omoi-ray runtime (one namespace, one database)."""

    def __init__(self, settings: Settings, scheduler: Any, lock_manager: Any, relay: Any) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.lock_manager = lock_manager
        self.relay = relay
        self._locks: Any = None
        set_driver_budget(settings.call_retry_for)  # this process's calls ride out restarts this long
        for handle, role, name in ((scheduler, "scheduler", SCHEDULER_NAME), (lock_manager, "lock manager", LOCKS_NAME),
                                   (relay, "event relay", EVENTS_NAME)):
            label(handle, f"the {role} ({name})")  # named in messages of calls that fail

    # ------------------------------------------------------------------ locks

    @property
    def locks(self) -> Any:
        """A ``LockClient`` holding locks as this driver (see ``omoi_ray.client.locks``)."""
        if self._locks is None:
            from omoi_ray.client.locks import LockClient

            self._locks = LockClient(self.lock_manager)
        return self._locks

    def lock(
        self,
        resources: Any,
        mode: str = "exclusive",
        *,
        wait: float | None = None,
        ttl: float = 30.0,
        holder: str | None = None,
        keep_alive: bool = True,
    ) -> Any:
        """Acquire a lease on one or more resources (``"type:id"``); use it in a ``with`` block.

        Waits up to ``wait`` seconds (None: no limit, 0: try once; at most a day). ``ttl`` is the
        lease in seconds (above 0, at most a day). ``holder`` is this driver's holder name when
        None; an empty or non-text holder is refused. The lease is renewed in the background
        until released unless ``keep_alive`` is False. Raises ``InvalidLockRequestError`` for a
        bad argument (nothing is sent), ``LockTimeoutError``, ``DeadlockError``.
        """
        return self.locks.acquire(resources, mode, wait=wait, ttl=ttl, holder=holder, keep_alive=keep_alive)

    def __repr__(self) -> str:
        return f"Runtime(namespace={self.settings.namespace!r}, database={self.settings.safe_database_url()!r})"

    # ------------------------------------------------------------------ agents

    def spawn_agent(
        self,
        name: str,
        *,
        capabilities: Sequence[str] = (),
        capacity: int = 1,
        handler: Callable[..., Any] | str | None = None,
        handlers: Mapping[str, Callable[..., Any] | str] | None = None,
        num_cpus: float = 0.0,
        resources: Mapping[str, float] | None = None,
        max_restarts: int = -1,
        exist_ok: bool = False,
    ) -> AgentRef:
        """Start an agent actor (named ``omoi.agent.<name>``) and wait until it is registered.

        ``capabilities`` is a list of names (a bare string is refused); ``handler`` runs every
        task type; ``handlers`` maps task types to their own handlers. Handlers are callables or
        import paths ``pkg.module:function``. ``num_cpus`` (0 to 1024) and ``resources``
        (``{name: amount}``, amounts from 0.0001 to 1e6) are reserved on the node the agent runs
        on: a request that no node alive in the Ray cluster can satisfy is refused at once.
        ``max_restarts`` is -1 (forever) to 10,000. With ``exist_ok`` an agent of that name that
        is already running is returned as it is (once registered). Safe to call from many threads or
        drivers at once: exactly one agent of a name is started; without ``exist_ok`` every other
        caller gets ``InvalidAgentSpecError``. Raises ``InvalidAgentSpecError`` naming the
        field, ``HandlerNotFoundError``.
        """
        spec = parse_agent_spec(
            name=name,
            capabilities=capabilities,
            capacity=capacity,
            handler=handler,
            handlers=handlers,
            num_cpus=num_cpus,
            resources=resources,
            max_restarts=max_restarts,
        )
        actor_name = agent_actor_name(spec.name)
        options = {
            "name": actor_name,
            "namespace": self.settings.namespace,
            "lifetime": "detached",
            "num_cpus": spec.num_cpus,
            "resources": spec.resources or None,
            "max_restarts": spec.max_restarts,
            "max_concurrency": max(1000, spec.capacity * 4),
        }
        _check_sendable(spec)
        _check_placeable(spec)
        handle = None
        for _ in range(_NAME_RACE_TRIES):
            try:
                # Creating is how a name is taken: another caller may take it between any look-up
                # and the creation, and Ray then refuses the creation.
                handle = _RemoteAgent.options(**options).remote(spec, self.settings)
                break
            except ray.exceptions.ActorAlreadyExistsError:
                try:
                    existing = ray.get_actor(actor_name, namespace=self.settings.namespace)
                except ValueError:
                    continue  # it died meanwhile: the name is free again
            if not exist_ok:
                raise InvalidAgentSpecError(
                    f"an agent named '{spec.name}' is already running; stop it first, pick another "
                    "name, or pass exist_ok=True"
                )
            _ready(existing)  # as for a new agent: return once it is registered
            return AgentRef(spec.name, existing)
        if handle is None:
            raise InvalidAgentSpecError(
                f"the agent name '{spec.name}' kept being taken and freed by other callers; try again"
            )
        try:
            ray.get(handle.ready.remote(), timeout=120)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            _kill_and_wait(handle)
            inner = unwrap(exc)
            if inner is not exc:
                raise inner from None
            raise
        return AgentRef(spec.name, handle)

    def agent(self, name: str) -> AgentRef:
        """A handle on the running agent ``name``; ``InvalidArgumentError`` if ``name`` cannot be
        an agent name, ``AgentNotFoundError`` if no such agent is running."""
        _argument(check_name, name, "agent name")
        try:
            return AgentRef(name, ray.get_actor(agent_actor_name(name), namespace=self.settings.namespace))
        except ValueError:
            from omoi_ray.errors import AgentNotFoundError

            raise AgentNotFoundError(f"no running agent named '{name}'") from None

    # ------------------------------------------------------------------ tasks

    def submit(self, tasks: Iterable[TaskSpec | Mapping[str, Any]]) -> list[str]:
        """Submit tasks (a whole DAG at once if you like); returns their ids, in order.

        ``tasks`` is a list (or other iterable) of ``TaskSpec`` or dicts of its fields; a single
        task, a string or a mapping is refused with ``InvalidSubmissionError`` asking for a list.
        The submission is validated as a whole: any bad field, duplicate id, unknown dependency
        or cycle raises a typed ``InvalidSubmissionError`` and stores nothing. Submitting a task
        again with the same id and definition is a no-op.
        """
        items = [_with_id(item, index) for index, item in enumerate(submission_list(tasks))]
        request_id = uuid.uuid4().hex
        try:
            return call(lambda: self.scheduler.submit.remote(items, request_id))
        except (pickle.PicklingError, RecursionError) as exc:  # e.g. a field nested too deep to send
            raise InvalidSubmissionError(
                f"this submission cannot be sent to the scheduler ({type(exc).__name__} while "
                "pickling it); is a field nested too deep?"
            ) from None

    def run(
        self,
        tasks: Iterable[TaskSpec | Mapping[str, Any]],
        *,
        timeout: float | None = None,
        progress: bool = False,
    ) -> dict[str, TaskInfo]:
        """Submit, wait for every task to be final, and return each one's state.

        ``timeout`` is checked before anything is submitted (see ``wait``)."""
        _wait_seconds(timeout)
        ids = self.submit(tasks)
        self.wait(ids, timeout=timeout, progress=progress)
        return {info.id: info for info in self.get_many(ids)}

    def wait(
        self,
        task_ids: Sequence[str],
        *,
        timeout: float | None = None,
        progress: bool = False,
        description: str = "tasks",
    ) -> dict[str, str]:
        """Block until every task is final; return each one's final status.

        ``task_ids`` is a list of ids (a bare string is refused). ``timeout`` is None (no limit)
        or seconds from 0 to ``MAX_WAIT_S``. Raises ``WaitTimeoutError`` after ``timeout``
        seconds, ``TaskNotFoundError`` for an unknown id, ``InvalidArgumentError`` for a bad
        argument. With ``progress`` a live bar shows counts per status and warns about ready
        tasks that no live agent is able to run.
        """
        task_ids = task_id_list(task_ids)
        timeout = _wait_seconds(timeout)
        pending = list(dict.fromkeys(task_ids))
        finished: dict[str, str] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        tick = 0.25 if progress else 30.0
        bar = None
        if progress:
            from omoi_ray.client.progress import ProgressBar

            bar = ProgressBar(total=len(pending), description=description)
        try:
            while pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeoutError(
                        f"{len(pending)} of {len(finished) + len(pending)} tasks were not final after "
                        f"{timeout:g}s",
                        pending=pending,
                    )
                step = tick if remaining is None else max(0.0, min(tick, remaining))
                reply: WaitReply = call(lambda: self.scheduler.wait.remote(pending, step))
                finished.update(reply.finished)
                pending = [tid for tid in pending if tid not in reply.finished]
                if bar is not None:
                    bar.update(finished, reply.live, reply.unclaimable)
        finally:
            if bar is not None:
                bar.close()
        return {tid: finished[tid] for tid in dict.fromkeys(task_ids)}

    def get(self, task_id: str) -> TaskInfo:
        """The state of one task; ``TaskNotFoundError`` if unknown, ``InvalidArgumentError`` if
        ``task_id`` cannot be a task id."""
        return self.get_many([check_task_id(task_id)])[0]

    def get_many(self, task_ids: Sequence[str]) -> list[TaskInfo]:
        """The state of each task, in order (``task_ids``: a list, not a string)."""
        ids = task_id_list(task_ids)
        return call(lambda: self.scheduler.get.remote(ids))

    def result(self, task_id: str) -> Any:
        """The result of a completed task; raises ``OmoiError`` naming the status otherwise."""
        info = self.get(task_id)
        if info.status != "completed":
            raise OmoiError(
                f"task '{task_id}' is {info.status}, not completed"
                + (f": {info.error}" if info.error else "")
                + (f" ({info.reason})" if info.reason else ""),
                task_id=task_id,
                status=info.status,
            )
        return info.result

    def attempts(self, task_id: str) -> list[AttemptInfo]:
        """Every attempt of one task, first to last (``attempt`` counts from 1)."""
        check_task_id(task_id)
        return call(lambda: self.scheduler.attempts.remote(task_id))

    def cancel(self, *task_ids: str, reason: str = "cancelled by request") -> dict[str, str]:
        """Cancel tasks, all or nothing: pending and ready ones at once; running ones are told to
        stop and any later result is discarded. Returns ``{id: status afterwards}`` (final tasks
        stay as they are).

        Ids are separate arguments (``cancel("a", "b")``, ``cancel(*ids)``). Every task named in
        one call ends ``cancelled`` with ``reason`` (at most 1000 characters, no control
        characters but tabs and line breaks), whatever the order; dependents not named become
        ``upstream_failed``. Raises ``InvalidCancelError`` (a list given as an id, an id that is
        not a task name, a bad reason) or ``TaskNotFoundError`` (an unknown id); either way
        nothing is cancelled.
        """
        if not task_ids:
            return {}
        return call(lambda: self.scheduler.cancel.remote(list(task_ids), reason))

    def status(self) -> RuntimeStatus:
        return call(lambda: self.scheduler.status.remote())

    def describe(self) -> dict[str, Any]:
        """The scheduler's database (masked), namespace, pid, whether it was restarted, and its
        counters (exchanges, commits, events written, time spent committing)."""
        return call(lambda: self.scheduler.describe.remote())

    def events(self, entity_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The oldest ``limit`` (1 to ``MAX_EVENTS_LIMIT``) retained events, of one entity if
        ``entity_id`` is given."""
        if entity_id is not None:
            _argument(storable.check_text, entity_id, "entity_id", max_chars=1024, allow_newlines=False)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= storable.MAX_EVENTS_LIMIT:
            raise InvalidArgumentError(f"limit must be an integer from 1 to {storable.MAX_EVENTS_LIMIT}, not {limit!r}")
        return call(lambda: self.scheduler.events.remote(entity_id, limit))

    def follow(
        self,
        since: str | None = None,
        types: Any = None,
        **options: Any,
    ) -> Any:
        """An async iterator over committed events (see ``omoi_ray.client.follow.follow``); bad
        arguments raise ``InvalidEventQueryError`` here, before iterating."""
        from omoi_ray.client.follow import follow

        return follow(self.settings, since=since, types=types, **options)

    def relay_status(self) -> dict[str, Any]:
        """The event relay's state: Redis reachable, cursor, events mirrored, lag in seconds, and
        ``healthy`` (its latest round succeeded) with the latest failure kept as ``last_error`` and
        ``last_error_at`` (Unix seconds, None if it never failed)."""
        return call(lambda: self.relay.describe.remote())

    def flush_events(self, timeout: float = 30.0) -> str:
        """Wait until every event committed so far is on the Redis stream (no-op without Redis);
        returns the relay's position."""
        timeout = _argument(storable.check_seconds, timeout, "timeout", maximum=storable.MAX_WAIT_S)
        return call(lambda: self.relay.flush.remote(timeout), timeout=timeout + 30)

    # ------------------------------------------------------------------ lifecycle

    def shutdown(self, *, agents_timeout: float = 5.0) -> None:
        """Stop every agent of this runtime, then the scheduler (its state stays in the database)."""
        _argument(storable.check_seconds, agents_timeout, "agents_timeout", maximum=storable.MAX_WAIT_S, allow_zero=True)
        for view in self.status().agents:
            if view.status != "alive":
                continue
            try:
                self.agent(view.id).stop(timeout=agents_timeout)
            except (OmoiError, ray.exceptions.RayActorError):
                pass
        try:
            ray.get(self.scheduler.shutdown.remote(), timeout=30)
        except ray.exceptions.RayError:
            pass
        ray.kill(self.scheduler)
        ray.kill(self.lock_manager)
        try:
            ray.get(self.relay.stop.remote(), timeout=15)
        except ray.exceptions.RayError:
            pass
        ray.kill(self.relay)


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
            _kill_and_wait(handle)
            described.append({})
    if failure is not None:
        raise failure
    return described


def _ready(handle: Any) -> None:
    """Wait until an agent another caller started is registered (raise its start error)."""
    try:
        call(lambda: handle.ready.remote(), timeout=120)
    except RuntimeUnavailableError:
        raise AgentNotFoundError("the agent stopped before it was registered") from None


def _kill_and_wait(handle: Any, timeout: float = 30.0) -> None:
    """Kill an actor and return once Ray reports it dead (its name is then free again). A call
    sent before the kill lands may still be answered (a broken singleton answers with its start
    error): ask again until Ray says the actor is dead, for at most ``timeout`` seconds."""
    ray.kill(handle)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(handle.__ray_ready__.remote(), timeout=max(0.1, deadline - time.monotonic()))
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return
        time.sleep(0.05)  # it answered before the kill landed; Ray offers no event to await


def _with_id(item: TaskSpec | Mapping[str, Any], index: int) -> TaskSpec | dict[str, Any]:
    """Fix each task's id on the driver, so a retried submission names the same tasks, and check
    its payload here, before Ray pickles it (a ``TaskSpec`` travels as its fields: its payload may
    have been changed since it was built, and the scheduler checks every field again)."""
    if isinstance(item, TaskSpec):
        item = task_spec_fields(item, index)
    if isinstance(item, Mapping):
        out = dict(item)
        out.setdefault("id", uuid.uuid4().hex)
        check_payload(out, index)
        return out
    return item  # the scheduler rejects it with a message naming its position


def _argument(check: Callable[..., Any], value: Any, field: str, **bounds: Any) -> Any:
    """Run a ``storable`` check; its ``ValueError`` becomes ``InvalidArgumentError``."""
    try:
        return check(value, field, **bounds)
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None


def _wait_seconds(timeout: Any) -> float | None:
    """A wait's ``timeout``: None (no limit) or seconds from 0 to ``MAX_WAIT_S``."""
    if timeout is None:
        return None
    return _argument(storable.check_seconds, timeout, "timeout", maximum=storable.MAX_WAIT_S, allow_zero=True)


def _check_sendable(spec: AgentSpec) -> None:
    """Refuse at once a handler Ray cannot send to the agent's process (it is pickled with the
    spec): a closure over a lock, a socket, a client... naming it, one line, instead of Ray's
    multi-line serialisation report."""
    given = [("handler", spec.handler), *((f"handlers[{t!r}]", h) for t, h in spec.handlers.items())]
    for field, handler in given:
        if handler is None or isinstance(handler, str):
            continue  # an import path is resolved in the agent's process
        try:
            ray.cloudpickle.dumps(handler)
        except Exception as exc:  # noqa: BLE001 - TypeError, PicklingError, AttributeError, ...
            lines = storable.clean_text(exc, max_chars=300).splitlines()
            why = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
            module = getattr(handler, "__module__", None) or "?"
            name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
            raise InvalidAgentSpecError(
                f"agent '{spec.name}': {field} {storable.clean_text(f'{module}:{name}', max_chars=200)} cannot be "
                f"sent to the agent's process ({why}); define it at module level and pass its import path "
                "'pkg.module:function' instead"
            ) from None


def _check_placeable(spec: AgentSpec) -> None:
    """Refuse at once an agent no node alive in the cluster could host (Ray would keep it
    pending forever): a custom resource no node has, or more of them than any one node has."""
    wanted = dict(spec.resources)
    if spec.num_cpus:
        wanted["CPU"] = spec.num_cpus
    if not wanted:
        return
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    if any(all(res.get(name, 0.0) >= amount for name, amount in wanted.items()) for res in nodes):
        return
    for name, amount in wanted.items():
        field = "num_cpus" if name == "CPU" else f"resources[{name!r}]"
        if not any(name in res for res in nodes):
            raise InvalidAgentSpecError(
                f"agent '{spec.name}': {field}: no node of the Ray cluster has the resource {name!r}"
            )
        if not any(res[name] >= amount for res in nodes if name in res):
            most = max(res[name] for res in nodes if name in res)
            raise InvalidAgentSpecError(
                f"agent '{spec.name}': {field}: asks for {amount:g} {name}, but no node has more than {most:g}"
            )
    raise InvalidAgentSpecError(
        f"agent '{spec.name}': resources: no single node of the Ray cluster has all of {wanted}"
    )


__all__ = ["AgentRef", "Runtime", "connect", "TaskNotFoundError"]
