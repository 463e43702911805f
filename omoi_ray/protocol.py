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
from omoi_ray.core.model import Task


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
    others by status; ``unclaimable`` lists ready-task groups no live agent is able to run, as
    (required capabilities, count).
    """

    finished: dict[str, str]
    live: dict[str, int]
    unclaimable: list[tuple[list[str], int]]


@dataclass(frozen=True, slots=True)
class AgentView:
    id: str
    status: str
    capabilities: list[str]
    capacity: int
    busy: int
    info: dict[str, Any]
    #: busy slots held by zombie handlers (they ignored their stop past OMOI_HARD_TIMEOUT_GRACE):
    #: the agent takes no more work and is about to have its process replaced
    zombies: int = 0


@dataclass(frozen=True, slots=True)
class RuntimeStatus:
    database: str
    namespace: str
    tasks: dict[str, int]
    agents: list[AgentView]
    unclaimable: list[tuple[list[str], int]]
    ready: int


__all__ = ["Assignment", "ExchangeReply", "Rejection", "Report", "RuntimeStatus", "WaitReply", "AgentView"]
