"""Tickets as users write them, checked at the edge (``TicketSpec``, artifacts), and as users
read them (``TicketInfo``, ``PhaseChangeInfo``, ``ArtifactInfo``, ``GateResultInfo``).

Rules:
- Ticket ids are names (``specs.tasks.check_name``); the driver makes one (``ticket-<uuid4
  hex>``) when none is given, before the first try, so a create retried while the scheduler
  restarts makes one ticket.
- ``title`` is text of 1-500 characters on one line, ``description`` at most 20,000 characters;
  neither holds NUL or other control characters (tab and line breaks apart in a description).
- ``phases`` is None (the default set, ``core.phases.DEFAULT``) or a custom set's mapping
  (``PhaseSet.parse``); ``gates`` None (the defaults for the default set, none for a custom
  one) or a declaration ``core.gates.check_gates`` accepts; ``auto_advance`` a bool.
- A phase named in a call is one of the ticket's (the scheduler checks); ``by`` is a name;
  ``reason`` and ``note`` text of at most ``MAX_REASON_CHARS`` characters.
- Every failure raises a typed error naming the field (``InvalidTicketError``,
  ``InvalidArtifactError``); nothing is sent.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from omoi_ray.core import storable
from omoi_ray.core.gates import DEFAULT_GATES, check_artifact, check_gates
from omoi_ray.core.model import Priority
from omoi_ray.core.phases import DEFAULT, PhaseSet
from omoi_ray.core.tickets import Artifact, Ticket
from omoi_ray.errors import InvalidArtifactError, InvalidTicketError
from omoi_ray.specs.tasks import check_name

MAX_TITLE_CHARS = 500
MAX_DESCRIPTION_CHARS = 20_000
#: the largest artifact content (compact JSON bytes)
MAX_ARTIFACT_BYTES = 256 * 1024


def new_ticket_id() -> str:
    """A fresh ticket id (``ticket-<uuid4 hex>``)."""
    return f"ticket-{uuid.uuid4().hex}"


def _utc(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def check_ticket_id(value: Any) -> str:
    """``value`` if it is a ticket id; ``InvalidTicketError`` otherwise."""
    try:
        return check_name(value, "ticket id")
    except ValueError as exc:
        raise InvalidTicketError(str(exc)) from None


def check_by(value: Any, what: str = "by") -> str:
    """``value`` if it is a name (who acts); ``InvalidTicketError`` naming ``what`` otherwise."""
    try:
        return check_name(value, what)
    except ValueError as exc:
        raise InvalidTicketError(str(exc)) from None


def check_text(value: Any, what: str, max_chars: int = storable.MAX_REASON_CHARS, *, newlines: bool = True) -> str:
    """``value`` if it is storable text of at most ``max_chars`` characters; ``InvalidTicketError`` otherwise."""
    try:
        return storable.check_text(value, what, max_chars=max_chars, allow_newlines=newlines)
    except ValueError as exc:
        raise InvalidTicketError(str(exc)) from None


def check_phase(value: Any, what: str = "phase") -> str | None:
    """``value`` if it is None or a phase name (``core.phases.PHASE_NAME``)."""
    from omoi_ray.core.phases import PHASE_NAME

    if value is None:
        return None
    if not isinstance(value, str) or not PHASE_NAME.fullmatch(value):
        hint = ""
        if isinstance(value, str) and PHASE_NAME.fullmatch(value.upper()):
            hint = f" (phase names are upper case: {value.upper()!r}?)"
        raise InvalidTicketError(
            f"{what} must be a phase name such as 'DESIGN', not {storable._short_repr(value)}{hint}; "
            "a ticket's phases are listed in rt.tickets.get(ticket).phases"
        )
    return value


class TicketSpec(BaseModel):
    """A new ticket, checked (``TicketSpec.make``); ``phases`` and ``gates`` are the normalised data."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    description: str = ""
    priority: str = "MEDIUM"
    phases: dict[str, Any]
    gates: dict[str, Any]
    auto_advance: bool = True

    @classmethod
    def make(cls, title: Any, *, id: Any = None, description: Any = "", priority: Any = "MEDIUM",
             phases: Any = None, gates: Any = None, auto_advance: Any = True) -> TicketSpec:
        """Check a ticket's fields (see the module rules).

        Returns:
            A ``TicketSpec`` (a fresh id when ``id`` is None).

        Raises:
            InvalidTicketError: names the field at fault.
        """
        tid = new_ticket_id() if id is None else check_ticket_id(id)
        title = check_text(title, "title", MAX_TITLE_CHARS, newlines=False)
        if not title.strip():
            raise InvalidTicketError("title must not be empty")
        description = check_text(description, "description", MAX_DESCRIPTION_CHARS)
        try:
            prio = Priority.parse(priority)
        except ValueError as exc:
            raise InvalidTicketError(str(exc)) from None
        phase_set = DEFAULT if phases is None else PhaseSet.parse(phases)
        if gates is None:
            gates = DEFAULT_GATES if phase_set is DEFAULT else {}
        norm = check_gates(gates, phase_set.phases)
        if not isinstance(auto_advance, bool):
            raise InvalidTicketError(f"auto_advance must be true or false, not {storable._short_repr(auto_advance)}")
        return cls(id=tid, title=title, description=description, priority=prio.name, phases=phase_set.as_data(),
                   gates=norm, auto_advance=auto_advance)

    def ticket(self, now: float) -> Ticket:
        """The core ``Ticket`` this spec makes, created at ``now`` (seconds) in its first phase."""
        phase_set = PhaseSet.parse(self.phases)
        return Ticket(id=self.id, title=self.title, phases=phase_set, phase=phase_set.first, created_at=now,
                      updated_at=now, description=self.description, priority=Priority[self.priority],
                      auto_advance=self.auto_advance, gates=dict(self.gates))


def check_artifact_input(ticket_id: str, kind: Any, content: Any, path: Any = None) -> tuple[str, dict[str, Any], str | None]:
    """An artifact as a driver adds it: type and content per ``core.gates.ARTIFACT_TYPES``,
    storable JSON of at most ``MAX_ARTIFACT_BYTES``, ``path`` None or text of at most 1000
    characters. Raises ``InvalidArtifactError`` naming the ticket and field."""
    check_artifact(ticket_id, kind, content)
    try:
        storable.storable_json(content, "content", max_bytes=MAX_ARTIFACT_BYTES, setting="MAX_ARTIFACT_BYTES")
        if path is not None:
            path = storable.check_text(path, "path", max_chars=1000, allow_newlines=False)
    except ValueError as exc:
        raise InvalidArtifactError(f"ticket '{ticket_id}': artifact {kind}: {exc}", ticket_id=ticket_id) from None
    return kind, dict(content), path


def check_result_artifacts(ticket_id: str, task_id: str, result: Any) -> None:
    """Raise ``InvalidArtifactError`` naming the task when ``result["artifacts"]`` is not a list of
    ``{"type", "content", "path"?}`` that ``check_artifact_input`` accepts (a result that is not a
    mapping, or has no ``artifacts``, passes)."""
    if not isinstance(result, dict) or "artifacts" not in result:
        return
    items = result["artifacts"]
    if not isinstance(items, list):
        raise InvalidArtifactError(f"task '{task_id}': result.artifacts must be a list, not {storable._short_repr(items)}",
                                   ticket_id=ticket_id, task_id=task_id)
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"type", "content", "path"}:
            raise InvalidArtifactError(
                f"task '{task_id}': result.artifacts[{i}] must be a mapping of type, content and path",
                ticket_id=ticket_id, task_id=task_id)
        try:
            check_artifact_input(ticket_id, item.get("type"), item.get("content"), item.get("path"))
        except InvalidArtifactError as exc:
            raise InvalidArtifactError(f"task '{task_id}': result.artifacts[{i}]: {exc}", ticket_id=ticket_id,
                                       task_id=task_id) from None


class TicketInfo(BaseModel):
    """A ticket as it stands (``rt.tickets.get``/``list``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    description: str
    phase: str
    previous_phase: str | None
    status: str
    priority: str
    auto_advance: bool
    phases: list[str]
    allowed: list[str]  # the phases it may move to now
    context: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, k: Ticket) -> TicketInfo:
        """The info of a core ticket."""
        return cls(id=k.id, title=k.title, description=k.description, phase=k.phase, previous_phase=k.previous_phase,
                   status=k.status.value, priority=k.priority.name, auto_advance=k.auto_advance,
                   phases=list(k.phases.phases), allowed=list(k.phases.allowed(k.phase)) if k.status.value == "open" else [],
                   context=k.context, created_at=_utc(k.created_at), updated_at=_utc(k.updated_at))


class PhaseChangeInfo(BaseModel):
    """One phase move (``rt.tickets.history``): ``gate`` is ``{"passed", "reasons"}`` or None."""

    model_config = ConfigDict(frozen=True)

    seq: int
    from_phase: str | None
    to_phase: str
    reason: str
    by: str
    gate: dict[str, Any] | None
    at: datetime


class ArtifactInfo(BaseModel):
    """An artifact of a ticket's phase."""

    model_config = ConfigDict(frozen=True)

    ticket_id: str
    phase: str
    type: str
    content: dict[str, Any]
    path: str | None
    task_id: str | None
    by: str
    at: datetime

    @classmethod
    def of(cls, a: Artifact) -> ArtifactInfo:
        """The info of a core artifact."""
        return cls(ticket_id=a.ticket_id, phase=a.phase, type=a.type, content=a.content, path=a.path,
                   task_id=a.task_id, by=a.by, at=_utc(a.at))


class GateResultInfo(BaseModel):
    """A gate's verdict (``rt.tickets.gate``): why it blocks, if it does."""

    model_config = ConfigDict(frozen=True)

    ticket_id: str
    phase: str
    passed: bool
    reasons: list[str]
