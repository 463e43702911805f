"""The scheduler actor's ticket calls: create, read, move, approve, add artifacts, judge the
gate, read history, cancel (``core.tickets``), and the ticket context handed to each attempt.

Part of ``SchedulerActor`` (``omoi_ray.actors.scheduler``), which composes one class per concept.
Each decision is one synchronous core call; the change it makes (ticket row, history, gate
result, artifacts, events, the tasks it releases or cancels) commits in one transaction before the
reply. A refusal that recorded something (a gate that blocked a move) is raised once that
record is committed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from omoi_ray.core.claims import Report
from omoi_ray.core.model import AttemptOutcome, Task
from omoi_ray.core.tickets import TicketStatus, context_for
from omoi_ray.errors import InvalidArtifactError, TicketError, TicketExistsError
from omoi_ray.protocol import Assignment
from omoi_ray.specs.tickets import (
    ArtifactInfo,
    GateResultInfo,
    PhaseChangeInfo,
    TicketInfo,
    TicketSpec,
    check_artifact_input,
    check_by,
    check_phase,
    check_result_artifacts,
    check_text,
    check_ticket_id,
)
from omoi_ray.store import tickets as ticket_rows


class TicketCalls:
    """The ticket part of the scheduler actor (see the module docstring)."""

    async def create_ticket(self, spec: TicketSpec) -> TicketInfo:
        """Create a ticket in its first phase, once committed (``rt.tickets.create``).

        Args:
            spec: a ``TicketSpec`` (checked again here, whoever sent it).

        Returns:
            Its ``TicketInfo``. Repeating a create with the same id and definition returns the
            ticket as it stands.

        Raises:
            InvalidTicketError: a bad field. TicketExistsError: the id is taken by another
                ticket or already used as a label by tasks.
        """
        spec = _spec(spec)
        if spec.id not in self.graph.tickets.tickets:
            await self.commit.sync()
            if await self._db(ticket_rows.label_exists, self.store.engine, spec.id) and (
                spec.id not in self.graph.tickets.tickets  # a concurrent create of the same id won
            ):
                raise TicketExistsError(f"ticket id '{spec.id}' is already used as a label by tasks", ticket_id=spec.id)
        # No await since the checks: the id is free, or the ticket in memory answers.
        known = self.graph.tickets.tickets.get(spec.id)
        if known is not None:
            if (known.title, known.description, known.phases.as_data(), known.gates) != (
                spec.title, spec.description, spec.phases, spec.gates
            ):
                raise TicketExistsError(f"ticket id '{spec.id}' is already used by another ticket", ticket_id=spec.id)
            await self.commit.sync()
            return TicketInfo.of(known)
        ticket = self.graph.tickets.create(spec.ticket(time.time()), time.time())
        return await self._ticket_reply(ticket)

    async def ticket(self, ticket_id: str) -> TicketInfo:
        """A ticket as it stands, once committed. Raises ``TicketNotFoundError``."""
        ticket_id = check_ticket_id(ticket_id)
        await self.commit.sync()
        return TicketInfo.of(self.graph.tickets.get(ticket_id))

    async def tickets(self, status: str | None = None, phase: str | None = None) -> list[TicketInfo]:
        """Every ticket (of ``status``, in ``phase``), by creation time then id."""
        await self.commit.sync()
        found = [k for k in self.graph.tickets.tickets.values()
                 if (status is None or k.status.value == status) and (phase is None or k.phase == phase)]
        return [TicketInfo.of(k) for k in sorted(found, key=lambda k: (k.created_at, k.id))]

    async def move_ticket(self, ticket_id: str, to: str, reason: str = "", by: str = "driver") -> TicketInfo:
        """Move a ticket to phase ``to`` through the table and, forward, through the gate.

        Raises:
            TicketNotFoundError, TicketClosedError, IllegalPhaseMoveError (names the allowed
                phases), GateBlockedError (names every reason; the failed result is stored).
        """
        ticket_id, to = check_ticket_id(ticket_id), check_phase(to, "to")
        reason, by = check_text(reason, "reason"), check_by(by)
        return await self._ticket_call(lambda now: self.graph.tickets.move(ticket_id, to, now, reason, by))

    async def approve_ticket(self, ticket_id: str, phase: str | None, by: str, note: str = "") -> TicketInfo:
        """Sign a phase off (an ``approval`` artifact); the ticket may then advance."""
        ticket_id, phase = check_ticket_id(ticket_id), check_phase(phase)
        by, note = check_by(by), check_text(note, "note")

        def decide(now: float) -> Any:
            self.graph.tickets.approve(ticket_id, phase, by, note, now)
            return self.graph.tickets.get(ticket_id)

        return await self._ticket_call(decide)

    async def add_ticket_artifact(self, ticket_id: str, kind: str, content: Any, path: str | None = None,
                                  phase: str | None = None, by: str = "driver") -> ArtifactInfo:
        """Add an artifact to a phase of the ticket (its current one by default).

        Raises:
            TicketNotFoundError, TicketClosedError, InvalidArtifactError, InvalidTicketError.
        """
        ticket_id, phase, by = check_ticket_id(ticket_id), check_phase(phase), check_by(by)
        kind, content, path = check_artifact_input(ticket_id, kind, content, path)
        artifact = await self._ticket_call(
            lambda now: self.graph.tickets.add_artifact(ticket_id, kind, content, now, phase=phase, by=by, path=path),
            info=False,
        )
        return ArtifactInfo.of(artifact)

    async def ticket_gate(self, ticket_id: str, by: str = "driver") -> GateResultInfo:
        """Judge the gate of the ticket's current phase now (recorded); why it blocks, if it does."""
        ticket_id, by = check_ticket_id(ticket_id), check_by(by)
        outcome = await self._ticket_call(lambda now: self.graph.tickets.gate(ticket_id, now, by), info=False)
        phase = self.graph.tickets.get(ticket_id).phase
        return GateResultInfo(ticket_id=ticket_id, phase=phase, passed=outcome.passed, reasons=list(outcome.reasons))

    async def ticket_history(self, ticket_id: str) -> list[PhaseChangeInfo]:
        """The ticket's phase history, first to last, once committed."""
        ticket_id = check_ticket_id(ticket_id)
        await self.commit.sync()
        self.graph.tickets.get(ticket_id)
        rows = await self._db(ticket_rows.history, self.store.engine, ticket_id)
        return [PhaseChangeInfo(**{k: r[k] for k in PhaseChangeInfo.model_fields}) for r in rows]

    async def ticket_artifacts(self, ticket_id: str) -> list[ArtifactInfo]:
        """Every artifact of the ticket, oldest first, once committed."""
        ticket_id = check_ticket_id(ticket_id)
        await self.commit.sync()
        self.graph.tickets.get(ticket_id)
        return [ArtifactInfo.of(a) for a in await self._db(ticket_rows.artifacts, self.store.engine, ticket_id)]

    async def cancel_ticket(self, ticket_id: str, reason: str = "ticket cancelled") -> tuple[TicketInfo, list[str]]:
        """Cancel a ticket and all its unfinished tasks at once; return it and the cancelled ids."""
        ticket_id, reason = check_ticket_id(ticket_id), check_text(reason, "reason")
        ticket, ids = await self._ticket_call(lambda now: self.graph.cancel_ticket(ticket_id, now, reason), info=False)
        return TicketInfo.of(ticket), ids

    # ------------------------------------------------------------------ internals

    async def _ticket_call(self, decide: Any, info: bool = True) -> Any:
        """Run one ticket decision now, commit, and reply; a refusal is raised once what it
        recorded (a gate result) is committed."""
        try:
            outcome = decide(time.time())
        except TicketError:
            self._after_change()
            await self.commit.sync()
            raise
        if info:
            return await self._ticket_reply(outcome)
        self._after_change()
        await self.commit.sync()
        return outcome

    async def _ticket_reply(self, ticket: Any) -> TicketInfo:
        self._after_change()
        await self.commit.sync()
        return TicketInfo.of(ticket)

    def _ticket_intake(self, reports: Sequence[Report]) -> Sequence[Report]:
        """A completed result of a ticket's task whose ``artifacts`` are malformed fails its
        attempt for good, naming the artifact (``specs.tickets.check_result_artifacts``)."""
        out: list[Report] | None = None
        for i, report in enumerate(reports):
            if report.kind != "finished" or report.outcome is not AttemptOutcome.COMPLETED:
                continue
            task = self.graph.tasks.get(report.task_id)
            if task is None or task.ticket_id not in self.graph.tickets.tickets:
                continue
            try:
                check_result_artifacts(task.ticket_id, task.id, report.result)
            except InvalidArtifactError as exc:
                out = list(reports) if out is None else out
                out[i] = report._replace(outcome=AttemptOutcome.PERMANENT_FAILURE, result=None,
                                         error=f"InvalidArtifactError: {exc}")
        return reports if out is None else out

    def _assignment(self, task: Task) -> Assignment:
        """The wire form of ``task``'s attempt, with its ticket's context of earlier phases."""
        assignment = super()._assignment(task)  # type: ignore[misc]
        ticket = self.graph.tickets.tickets.get(task.ticket_id or "")
        if ticket is None or ticket.status is TicketStatus.CANCELLED:
            return assignment
        return assignment._replace(ticket_context=context_for(ticket, task.phase))


def _spec(spec: Any) -> TicketSpec:
    if not isinstance(spec, TicketSpec):
        from omoi_ray.errors import InvalidTicketError

        raise InvalidTicketError(f"a ticket must be a TicketSpec, not {type(spec).__name__}")
    return TicketSpec.make(spec.title, id=spec.id, description=spec.description, priority=spec.priority,
                           phases=spec.phases, gates=spec.gates, auto_advance=spec.auto_advance)
