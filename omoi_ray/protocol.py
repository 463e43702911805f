"""Messages between the scheduler, agents and drivers (tuples and small dataclasses).

Rules:
- Agents talk to the scheduler through one method, ``exchange``: it carries the agent's reports
  (attempt started / finished), the attempts it holds (renewing its lease), and, unless ``wait``
  is None, asks for as many tasks as the agent has free slots, waiting up to ``wait`` seconds if
  none are ready. Reporting results and claiming the next batch is therefore one call.
- Every exchange carries a request id. Repeating a call with the same id (after a lost reply or a
  scheduler restart) is safe: reports are applied once, and a repeated claim returns the tasks
  the first one claimed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from omoi_ray.core import task_fields
from omoi_ray.core.claims import Rejection, Report
from omoi_ray.core.handoff import HandoffContext
from omoi_ray.core.model import Task
from omoi_ray.specs.agents import AgentInfo

#: ``Assignment`` fields that are not the task's (so not in ``task_fields.FIELDS``): the hand-off
#: context the scheduler adds to an attempt that came from an accepted offer
ASSIGNMENT_EXTRAS: tuple[str, ...] = ("handoff", "ticket_context")


class Assignment(NamedTuple):
    """One attempt handed to an agent (a tuple: cheap to pickle, it crosses Ray per task)."""

    task_id: str
    attempt: int
    type: str
    payload: Any
    priority: str
    timeout: float | None
    ticket_id: str | None
    phase: str | None
    depends_on: tuple[str, ...] = ()
    locks: tuple[tuple[str, str, str], ...] = ()
    #: set when this attempt came from an accepted hand-off offer (the handler's ``ctx.handoff``)
    handoff: HandoffContext | None = None
    #: the context of its ticket's earlier phases (``core.tickets.context_for``), for a task of a
    #: ticket made by ``rt.tickets.create`` (the handler's ``ctx.ticket_context()``)
    ticket_context: dict[str, Any] | None = None

    @classmethod
    def of(cls, task: Task) -> Assignment:
        """The current attempt of ``task`` (its fields as ``FIELDS`` declares for ``WIRE``)."""
        return _assignment_of(task)


#: How a core task's value becomes an ``Assignment``'s, per kind of field.
TASK_TO_WIRE = dict.fromkeys(task_fields.KINDS, "{v}") | {task_fields.PRIORITY: "{v}.name"}
_assignment_of = task_fields.compile_mapping(
    "assignment_of", task_fields.Shape.TASK, task_fields.Shape.WIRE, TASK_TO_WIRE, build="Assignment",
    namespace={"Assignment": Assignment},
)


@dataclass(frozen=True, slots=True)
class ExchangeReply:
    """The scheduler's answer to an agent's ``exchange`` call.

    ``tasks`` are the attempts handed to the agent (at most its free slots; empty when the call
    only carried reports or the long poll ran out); ``rejected`` the attempts to stop;
    ``reregister`` True means the scheduler does not know the calling incarnation (nothing else
    is set); ``shutting_down`` True means the runtime is going away (the agent stops asking for
    a while).
    """

    tasks: list[Assignment] = field(default_factory=list)
    #: attempts whose reports were refused, or that the agent holds but should stop
    rejected: list[Rejection] = field(default_factory=list)
    #: the scheduler does not know this agent incarnation: register again
    reregister: bool = False
    shutting_down: bool = False


@dataclass(frozen=True, slots=True)
class WaitReply:
    """Progress of a set of tasks.

    ``finished`` maps each asked-for task that is now final to its status; ``live`` counts the
    others by status; ``unclaimable`` lists ready-task groups no live agent has the capabilities
    for, as (required capabilities, count); ``unhandled`` those some live agent has the
    capabilities for but none of those handles their type, as (type, required capabilities, count);
    ``held`` how many of the ``pending`` ones their ticket holds (its phase not reached, or the
    ticket blocked). All of it is about the asked-for tasks only.
    """

    finished: dict[str, str]
    live: dict[str, int]
    unclaimable: list[tuple[list[str], int]]
    unhandled: list[tuple[str, list[str], int]] = field(default_factory=list)
    held: int = 0


#: an agent as ``Runtime.status`` shows it: the registry's ``AgentInfo`` (one name per concept;
#: ``AgentView`` is kept for code written before the registry)
AgentView = AgentInfo


@dataclass(frozen=True, slots=True)
class RuntimeStatus:
    """The runtime at a glance, the scheduler's answer to ``status``.

    ``database`` is the URL with its password masked; ``tasks`` the stored count per status;
    ``agents`` an ``AgentInfo`` per known agent, by id; ``unclaimable`` the ready tasks no live
    agent has the capabilities for, as (required capabilities, count); ``ready`` the number of
    ready tasks; ``unhandled`` the ready tasks some live agent has the capabilities for but none
    of those handles their type, as (type, required capabilities, count).
    """

    database: str
    namespace: str
    tasks: dict[str, int]
    agents: list[AgentInfo]
    unclaimable: list[tuple[list[str], int]]
    ready: int
    unhandled: list[tuple[str, list[str], int]] = field(default_factory=list)


__all__ = ["Assignment", "ExchangeReply", "Rejection", "Report", "RuntimeStatus", "WaitReply", "AgentInfo", "AgentView"]
