"""``rt.tickets``: tickets that move through phases, with gates, history and context.

    t = rt.tickets.create("Login page", description="...")          # BACKLOG, default phases and gates
    rt.submit([TaskSpec(id="impl", type="code", ticket_id=t.id, phase="IMPLEMENTATION")])  # held
    rt.tickets.move(t.id, "REQUIREMENTS", reason="triaged", by="ann")
    rt.tickets.add_artifact(t.id, "requirements_document", {"text": doc, "sections": ["scope", ...]})
    rt.tickets.gate(t.id)                 # GateResultInfo: passed, and every reason it blocks
    rt.tickets.approve(t.id, by="lead", note="ok")   # its current phase, when the gate asks for one
    rt.tickets.history(t.id)              # every move: from, to, reason, by, gate result
    rt.tickets.cancel(t.id)               # the ticket and all its unfinished tasks

Rules:
- Each call is defined once and offered blocking and awaitable (``_async``), through
  ``omoi_ray.client.calls.flavours``; arguments are checked here first (``specs.tickets``), and
  again by the scheduler. A new ticket's id is made here before the first try, so a create
  retried while the scheduler restarts makes one ticket; a repeated move to the phase the
  ticket is in is a no-op.
- Errors are the scheduler's typed ones (``TicketError`` and its subclasses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omoi_ray.client.calls import Step, Steps, flavours
from omoi_ray.errors import InvalidTicketError
from omoi_ray.specs.tickets import (
    ArtifactInfo,
    GateResultInfo,
    PhaseChangeInfo,
    TicketInfo,
    TicketSpec,
    check_artifact_input,
    check_by,
    check_phase,
    check_text,
    check_ticket_id,
)

STATUSES = ("open", "done", "cancelled")


class TicketClient:
    """Ticket calls to the scheduler (``rt.tickets``).

    Args:
        scheduler: returns the scheduler's handle (read at every try).
    """

    def __init__(self, scheduler: Callable[[], Any]) -> None:
        self._scheduler = scheduler

    def __repr__(self) -> str:
        return "TicketClient()"

    def _step(self, method: str, *args: Any) -> Step:
        return Step(lambda: getattr(self._scheduler(), method).remote(*args))

    def _create(self, title: str, *, id: str | None = None, description: str = "", priority: Any = "MEDIUM",
                phases: Any = None, gates: Any = None, auto_advance: bool = True) -> Steps[TicketInfo]:
        """Create a ticket in the first phase of its phase set.

        Args:
            title: one line, 1-500 characters.
            id: a name (made here when None).
            description: text, at most 20,000 characters.
            priority: LOW, MEDIUM, HIGH, CRITICAL (or 1-4).
            phases: None for the default set, or a custom set's mapping (``core.phases``).
            gates: None for the default gates (none for a custom set), or ``{phase: {"artifacts":
                {type: {criterion: value}}, "approval": bool}}`` (``core.gates``).
            auto_advance: advance on its own when a phase's tasks all completed and its gate passes.

        Returns:
            Its ``TicketInfo``.

        Raises:
            InvalidTicketError: a bad field (named). TicketExistsError: the id is taken.
        """
        spec = TicketSpec.make(title, id=id, description=description, priority=priority, phases=phases,
                               gates=gates, auto_advance=auto_advance)
        return (yield self._step("create_ticket", spec))

    create, create_async = flavours(_create)

    def _get(self, ticket_id: str) -> Steps[TicketInfo]:
        """A ticket as it stands. Raises ``TicketNotFoundError``."""
        return (yield self._step("ticket", check_ticket_id(ticket_id)))

    get, get_async = flavours(_get)

    def _list(self, *, status: str | None = None, phase: str | None = None) -> Steps[list[TicketInfo]]:
        """Every ticket, or those of ``status`` (open, done, cancelled) / in ``phase``, oldest first."""
        if status is not None and status not in STATUSES:
            raise InvalidTicketError(f"status must be one of {', '.join(STATUSES)}, not {status!r:.60}")
        return (yield self._step("tickets", status, check_phase(phase)))

    list, list_async = flavours(_list)

    def _move(self, ticket_id: str, to: str, *, reason: str = "", by: str = "driver") -> Steps[TicketInfo]:
        """Move a ticket to phase ``to``: the table must allow it, and a forward move passes the
        gate of the phase it leaves (recorded either way).

        Returns:
            Its ``TicketInfo`` after the move: tasks of the new phase are released; ready,
            unclaimed tasks of phases it no longer has reached (a move into BLOCKED, or back)
            are held again (claimed ones go on); unacknowledged task ends of the phase left
            are cleared (``context["unacknowledged"]``).

        Raises:
            IllegalPhaseMoveError: names the allowed phases. GateBlockedError: names every reason.
            TicketNotFoundError, TicketClosedError.
        """
        args = (check_ticket_id(ticket_id), check_phase(to, "to"), check_text(reason, "reason"), check_by(by))
        return (yield self._step("move_ticket", *args))

    move, move_async = flavours(_move)

    def _approve(self, ticket_id: str, phase: str | None = None, *, by: str, note: str = "") -> Steps[TicketInfo]:
        """Sign a phase off (the ticket's current one by default); a gate that requires an
        approval passes once given, and the ticket may advance at once. Nothing waits in an
        agent slot meanwhile."""
        args = (check_ticket_id(ticket_id), check_phase(phase), check_by(by), check_text(note, "note"))
        return (yield self._step("approve_ticket", *args))

    approve, approve_async = flavours(_approve)

    def _add_artifact(self, ticket_id: str, type: str, content: dict[str, Any], *, path: str | None = None,
                      phase: str | None = None, by: str = "driver") -> Steps[ArtifactInfo]:
        """Add an artifact (``core.gates.ARTIFACT_TYPES``) to a phase (the current one by default).

        Raises:
            InvalidArtifactError: unknown type or malformed content (names the field).
        """
        ticket_id = check_ticket_id(ticket_id)
        kind, content, path = check_artifact_input(ticket_id, type, content, path)
        return (yield self._step("add_ticket_artifact", ticket_id, kind, content, path, check_phase(phase), check_by(by)))

    add_artifact, add_artifact_async = flavours(_add_artifact)

    def _gate(self, ticket_id: str) -> Steps[GateResultInfo]:
        """Judge the gate of the ticket's current phase now: ``passed`` and every reason it blocks."""
        return (yield self._step("ticket_gate", check_ticket_id(ticket_id)))

    gate, gate_async = flavours(_gate)

    def _history(self, ticket_id: str) -> Steps[list[PhaseChangeInfo]]:
        """Every phase move of the ticket (creation first): from, to, reason, by, gate result."""
        return (yield self._step("ticket_history", check_ticket_id(ticket_id)))

    history, history_async = flavours(_history)

    def _artifacts(self, ticket_id: str) -> Steps[list[ArtifactInfo]]:
        """Every artifact of the ticket, oldest first."""
        return (yield self._step("ticket_artifacts", check_ticket_id(ticket_id)))

    artifacts, artifacts_async = flavours(_artifacts)

    def _cancel(self, ticket_id: str, *, reason: str = "ticket cancelled") -> Steps[list[str]]:
        """Cancel the ticket and all its unfinished tasks at once.

        Returns:
            The ids of the tasks cancelled (sorted).
        """
        _, ids = yield self._step("cancel_ticket", check_ticket_id(ticket_id), check_text(reason, "reason"))
        return ids

    cancel, cancel_async = flavours(_cancel)
