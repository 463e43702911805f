"""``rt.agents``: start agents, find them by name or by what they can do, list and count them;
``AgentRef``: one agent's handle (``rt.agent(name)``).

    rt.agents.spawn("worker-1", capabilities=["scan"], tags=["eu"], capacity=4, handler="pkg.mod:scan")
    rt.agents.search(capabilities=["scan", "ocr"], tags=["eu"])   # ranked AgentMatch list
    rt.agents.get("worker-1").health                              # AgentInfo, from the scheduler
    rt.agent("worker-1").update(capacity=8)                       # AgentRef: the live actor
    rt.agent("worker-1").stop(timeout=10)     # or: await ....stop_async(timeout=10)

Rules:
- ``spawn`` takes an agent's name by creating its actor (Ray refuses a name that is taken),
  never by looking first, so concurrent callers cannot both start one.
- An agent spec is checked here, before anything starts: its fields (``parse_agent_spec``), that
  its handlers can be sent to the agent's process, and that some node alive in the cluster can
  host it (``InvalidAgentSpecError`` naming the field).
- An agent that fails to start is ended (its name is free again) and its own typed error is
  raised, not Ray's wrapper.
- Each call is defined once and offered blocking and awaitable (``_async``), as in ``rt.tasks``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ray

from omoi_ray.actors.agent import AgentActor
from omoi_ray.client._args import argument, flag, seconds
from omoi_ray.client.calls import Pause, Step, Steps, drive, flavours, unwrap
from omoi_ray.core import storable
from omoi_ray.errors import AgentNotFoundError, InvalidAgentSpecError, RuntimeUnavailableError
from omoi_ray.naming import agent_actor_name
from omoi_ray.specs.agents import AgentInfo, AgentMatch, AgentStats, parse_agent_update, parse_query
from omoi_ray.specs.tasks import AgentSpec, check_name, parse_agent_spec

if TYPE_CHECKING:
    from omoi_ray.client.runtime import Runtime

log = logging.getLogger("omoi_ray")

_NAME_RACE_TRIES = 5  # a name taken and freed again this many times in a row: give up
#: how long ``AgentRef.stop`` waits past its ``timeout`` for the agent to report and deregister
#: before it ends the actor anyway (an actor that ended oddly, e.g. after a handler called
#: ``ray.actor.exit_actor()``, never answers), in seconds
STOP_MARGIN_S = 15.0
RemoteAgent = ray.remote(AgentActor)
#: seconds a new agent may take to register before ``spawn`` gives up on it
READY_TIMEOUT_S = 120.0


class AgentRef:
    """A handle on one agent actor; every call also has an ``_async`` flavour.

    Attributes:
        name: the agent's name (its actor is ``omoi.agent.<name>``).
        handle: the Ray actor handle.
    """

    def __init__(self, name: str, handle: Any) -> None:
        self.name = name
        self.handle = handle

    def __repr__(self) -> str:
        return f"AgentRef({self.name!r})"

    def _info(self) -> Steps[dict[str, Any]]:
        """What the agent reports about itself.

        Returns:
            ``{"name", "incarnation", "capabilities", "capacity", "running": [[task id,
            attempt], ...], "zombies", "draining", ...}``.

        Raises:
            RuntimeUnavailableError: the agent's actor is gone.
        """
        return (yield Step(lambda: self.handle.info.remote()))

    info, info_async = flavours(_info)

    def _pid(self) -> Steps[int]:
        """The process id of the agent's actor (on its node).

        Raises:
            RuntimeUnavailableError: the agent's actor is gone.
        """
        return (yield Step(lambda: self.handle.pid.remote()))

    pid, pid_async = flavours(_pid)

    def _update(
        self,
        capabilities: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        capacity: int | None = None,
    ) -> Steps[dict[str, Any]]:
        """Change a live agent's capabilities, tags or capacity (None keeps one as it is).

        The agent adjusts its own slots and registers again with the same incarnation; the
        scheduler writes ``agent.capabilities.changed`` only when something really changed
        (capabilities and tags compared as sets).

        Args:
            capabilities: capability names (a list, never a bare string).
            tags: tag names (a list).
            capacity: slots, an int from 1 to ``MAX_CAPACITY``.

        Returns:
            What ``info`` returns, after the change is committed.

        Raises:
            InvalidAgentSpecError: a bad argument (named); nothing is changed.
            RuntimeUnavailableError: the agent's actor is gone.
        """
        caps, tag_list, cap = parse_agent_update(self.name, capabilities, tags, capacity)
        return (yield Step(lambda: self.handle.update.remote(caps, tag_list, cap)))

    update, update_async = flavours(_update)

    def _stop(self, timeout: float = 30.0) -> Steps[dict[str, Any]]:
        """Stop gracefully, then end the actor.

        Args:
            timeout: seconds running handlers get to finish (0 to ``MAX_WAIT_S``); what is left
                is requeued, not charged to the tasks' retries.

        Returns:
            The agent's counters (``started``, ``finished``, ...), or ``{}`` if it did not answer
            within ``timeout`` + ``STOP_MARGIN_S`` seconds (it is ended anyway; what it held is
            requeued as for a lost agent).

        Raises:
            InvalidArgumentError: a bad ``timeout``.
        """
        timeout = seconds(timeout)
        try:
            stats = yield Step(lambda: self.handle.stop.remote(timeout), timeout=timeout + STOP_MARGIN_S, retry=False)
        except ray.exceptions.GetTimeoutError:
            log.warning("agent %s did not answer its stop within %gs; ending it", self.name, timeout + STOP_MARGIN_S)
            stats = {}
        except ray.exceptions.RayActorError:
            stats = {}
        yield from killed(self.handle)
        return stats

    stop, stop_async = flavours(_stop)

    def kill(self, restart: bool = False) -> None:
        """End the actor abruptly (as a crash would).

        Args:
            restart: let Ray start it again (if its ``max_restarts`` allows).
        """
        flag(restart, "restart")
        ray.kill(self.handle, no_restart=not restart)


class Agents:
    """The agents of one runtime (``rt.agents``); every call also has an ``_async`` flavour."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def __repr__(self) -> str:
        return f"<agents of {self._rt!r}>"

    def _spawn(
        self,
        name: str,
        *,
        capabilities: Sequence[str] = (),
        capacity: int = 1,
        type: str = "agent",  # noqa: A002 - the field's public name
        phase: str | None = None,
        tags: Sequence[str] = (),
        handler: Callable[..., Any] | str | None = None,
        handlers: Mapping[str, Callable[..., Any] | str] | None = None,
        num_cpus: float = 0.0,
        resources: Mapping[str, float] | None = None,
        max_restarts: int = -1,
        exist_ok: bool = False,
    ) -> Steps[AgentRef]:
        """Start an agent actor (named ``omoi.agent.<name>``) and wait until it is registered.

        Safe to call from many threads or drivers at once: exactly one agent of a name is
        started; without ``exist_ok`` every other caller gets ``InvalidAgentSpecError``.

        Args:
            name: the agent's name (a valid name, unique in the runtime).
            capabilities: a list of capability names (a bare string is refused).
            capacity: how many handlers may run at once.
            type: what kind of agent it is (a name; ``"agent"`` unless given).
            phase: the phase of work it serves (a name), or None.
            tags: labels searches filter on (a list of names, like capabilities).
            handler: runs every task type: a callable or an import path ``pkg.module:function``.
            handlers: ``{task type: handler}``, each a callable or an import path.
            num_cpus: CPUs reserved on the agent's node (0 to 1024).
            resources: ``{name: amount}`` reserved on the node (amounts from 0.0001 to 1e6);
                a request no node alive in the cluster can satisfy is refused at once.
            max_restarts: -1 (forever) to 10,000.
            exist_ok: return a running agent of that name as it is (once registered).

        Returns:
            An ``AgentRef`` on the registered agent.

        Raises:
            InvalidAgentSpecError: a bad field (named), a handler that cannot be sent, no node
                to host it, or the name is taken (without ``exist_ok``).
            HandlerNotFoundError: a handler's import path does not resolve.
            AgentNotFoundError: an agent another caller started stopped before it registered.
        """
        rt = self._rt
        spec = parse_agent_spec(
            name=name,
            type=type,
            phase=phase,
            capabilities=capabilities,
            tags=tags,
            capacity=capacity,
            handler=handler,
            handlers=handlers,
            num_cpus=num_cpus,
            resources=resources,
            max_restarts=max_restarts,
        )
        flag(exist_ok, f"agent '{spec.name}': exist_ok", InvalidAgentSpecError)
        actor_name = agent_actor_name(spec.name)
        options = {
            "name": actor_name,
            "namespace": rt.settings.namespace,
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
                handle = RemoteAgent.options(**options).remote(spec, rt.settings)
                break
            except ray.exceptions.ActorAlreadyExistsError:
                try:
                    existing = ray.get_actor(actor_name, namespace=rt.settings.namespace)
                except ValueError:
                    continue  # it died meanwhile: the name is free again
            if not exist_ok:
                raise InvalidAgentSpecError(
                    f"an agent named '{spec.name}' is already running; stop it first, pick another "
                    "name, or pass exist_ok=True"
                )
            yield from _ready(existing)  # as for a new agent: return once it is registered
            return AgentRef(spec.name, existing)
        if handle is None:
            raise InvalidAgentSpecError(
                f"the agent name '{spec.name}' kept being taken and freed by other callers; try again"
            )
        try:
            yield Step(lambda: handle.ready.remote(), timeout=READY_TIMEOUT_S, retry=False)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            yield from killed(handle)
            inner = unwrap(exc)
            if inner is not exc:
                raise inner from None
            raise
        return AgentRef(spec.name, handle)

    spawn, spawn_async = flavours(_spawn)

    def _ref(self, name: str) -> AgentRef:
        """A handle on a running agent's actor (a look-up by name: nothing is sent to the agent);
        ``rt.agent(name)`` is its short form.

        Args:
            name: the agent's name.

        Returns:
            Its ``AgentRef`` (``info``, ``update``, ``stop``, ``kill``, ...).

        Raises:
            InvalidArgumentError: ``name`` cannot be an agent name.
            AgentNotFoundError: no such agent is running.
        """
        argument(check_name, name, "agent name")
        try:
            return AgentRef(name, ray.get_actor(agent_actor_name(name), namespace=self._rt.settings.namespace))
        except ValueError:
            raise AgentNotFoundError(f"no running agent named '{name}'") from None

    ref, ref_async = flavours(_ref)

    def _get(self, name: str) -> Steps[AgentInfo]:
        """One agent as the scheduler sees it (health, load, last heartbeat, tasks done).

        Args:
            name: the agent's name.

        Returns:
            Its ``AgentInfo``.

        Raises:
            InvalidArgumentError: ``name`` cannot be an agent name.
            AgentNotFoundError: the scheduler knows no agent of that name (names it).
        """
        argument(check_name, name, "agent name")
        infos = yield Step(lambda: self._rt.scheduler.agent_infos.remote(name))
        return infos[0]

    get, get_async = flavours(_get)

    def _list(self) -> Steps[list[AgentInfo]]:
        """Every agent the scheduler knows (healthy, stale, lost, dead, stopped), by id.

        Returns:
            One ``AgentInfo`` per agent: ``id``, ``type``, ``phase``, ``capabilities``, ``tags``,
            ``capacity``, ``busy``, ``free``, ``health``, ``status``, ``last_heartbeat_at``,
            ``tasks_done``, ``incarnation``, ``info``, ``zombies``, ``handles`` (task types
            with a handler; None: a default handler, every type).
        """
        return (yield Step(lambda: self._rt.scheduler.agent_infos.remote(None)))

    list, list_async = flavours(_list)

    def _search(
        self,
        capabilities: Sequence[str] | None = None,
        *,
        phase: str | None = None,
        type: str | None = None,  # noqa: A002 - the field's public name
        tags: Sequence[str] | None = None,
        include_unhealthy: bool = False,
        limit: int = 5,
        task_type: str | None = None,
    ) -> Steps[list[AgentMatch]]:
        """Agents ranked for the wanted capabilities (``omoi_ray.core.ranking``; dispatch uses the
        same order).

        score = coverage + 0.2 if a free slot now + 0.2 if healthy + 0.05 x min(capacity, 5),
        coverage = |wanted & capabilities| / |wanted| (1.0 when none is asked); agents with no
        wanted capability are left out; ties by longest waiting (free slot held longest), then id.

        Args:
            capabilities: wanted capability names (a list, never a bare string), or None.
            phase, type: keep agents of exactly this phase / type.
            tags: keep agents holding every one of these tags.
            include_unhealthy: also match ``stale`` agents (never lost, dead or stopped ones).
            limit: the most matches, 1 to 1000.
            task_type: keep agents that handle tasks of this type (a handler for it, or a
                default handler), so only agents able to run such a task are listed.

        Returns:
            ``AgentMatch(agent, score, matched)``s, best first.

        Raises:
            InvalidArgumentError: a bad argument (named).
        """
        parse_query(capabilities, phase, type, tags, include_unhealthy, limit, task_type)  # before any ref is made
        return (yield Step(lambda: self._rt.scheduler.search_agents.remote(
            capabilities, phase, type, tags, include_unhealthy, limit, task_type
        )))

    search, search_async = flavours(_search)

    def _best_fit(
        self,
        capabilities: Sequence[str] | None = None,
        *,
        phase: str | None = None,
        type: str | None = None,  # noqa: A002 - the field's public name
        tags: Sequence[str] | None = None,
        include_unhealthy: bool = False,
        task_type: str | None = None,
    ) -> Steps[AgentMatch | None]:
        """The first of ``search(...)`` (same arguments, no ``limit``), or None when nothing matches.

        Raises:
            InvalidArgumentError: a bad argument (named).
        """
        matches = yield from self._search(
            capabilities, phase=phase, type=type, tags=tags, include_unhealthy=include_unhealthy, limit=1,
            task_type=task_type,
        )
        return matches[0] if matches else None

    best_fit, best_fit_async = flavours(_best_fit)

    def _stats(self) -> Steps[AgentStats]:
        """Counts of the known agents by health, status, type and phase; slot totals (capacity,
        busy, free) of live agents; tasks done (``AgentStats``)."""
        return (yield Step(lambda: self._rt.scheduler.agent_stats.remote()))

    stats, stats_async = flavours(_stats)


def _ready(handle: Any) -> Steps[None]:
    """Wait until an agent another caller started is registered (raise its start error)."""
    try:
        yield Step(lambda: handle.ready.remote(), timeout=READY_TIMEOUT_S)
    except RuntimeUnavailableError:
        raise AgentNotFoundError("the agent stopped before it was registered") from None


def killed(handle: Any, timeout: float = 30.0) -> Steps[None]:
    """Kill an actor and return once Ray reports it dead (its name is then free again).

    A call sent before the kill lands may still be answered (a broken singleton answers with its
    start error): ask again until Ray says the actor is dead, for at most ``timeout`` seconds.
    Drive it with ``drive`` (blocking) or ``yield from`` inside a definition.
    """
    ray.kill(handle)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            yield Step(lambda: handle.__ray_ready__.remote(), timeout=max(0.1, deadline - time.monotonic()),
                       retry=False)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return
        yield Pause(0.05)  # it answered before the kill landed; Ray offers no event to await


def kill_and_wait(handle: Any, timeout: float = 30.0) -> None:
    """``killed``, blocking."""
    drive(killed(handle, timeout))


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


__all__ = ["AgentRef", "Agents", "STOP_MARGIN_S"]
