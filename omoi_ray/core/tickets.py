"""Tickets: a unit of work moving through phases, holding the tasks of later phases back, with
its gates, history and the context its phases hand forward.

``Tickets`` is a part of the scheduler core (``core.scheduler.TaskGraph``); it records into the
graph's change log like every other part, so a phase move, its history row, its gate result, its
events and the tasks it releases commit in one transaction.

Rules:
- A ticket's phases and their table are its ``PhaseSet`` (``core.phases``); its gates are data
  (``core.gates``). A move the table does not list raises ``IllegalPhaseMoveError``; a forward
  move runs the gate of the phase it leaves first, records the result, and is refused with
  ``GateBlockedError`` (naming the reasons) when it fails.
- A task of a ticket whose ``phase`` the ticket has not reached is *held*: it stays ``pending``
  with ``reason`` "waiting for ticket ... to reach phase ..." and is not in the ready index.
  When the ticket reaches the phase the task becomes ready. While the ticket is blocked, no
  task of it is released.
- Recall: a move that leaves a phase unreached (into ``blocked``, or a regression) takes the
  tasks of the unreached phases that are ``ready`` (released, not yet claimed) back to
  ``pending`` (event ``task.held``, reason as above), out of the ready index, until the ticket
  reaches their phase again. Tasks already claimed or running go on (their result counts as
  usual); one in ``retry_wait`` is held when its backoff ends, one requeued (its agent lost) is
  held at once. A restarted scheduler holds them again (a stored ``ready`` row included).
- Tasks that name a ticket nobody created keep ``ticket_id`` and ``phase`` as free labels.
- Auto-advance: when a completed task was the last live task of its ticket's current phase and
  the ticket's ``auto_advance`` is on, the gate is evaluated and, if it passes, the ticket moves
  to ``PhaseSet.next_phase``. Adding an artifact or an approval to a phase with no live task
  left tries again. Nothing waits in an agent slot: an approval is an artifact the driver adds.
- A task of the current phase that ends *failed for good* (``failed``, ``timed_out`` or
  ``upstream_failed``: ``FAILS_PHASE``) while the ticket is in that phase moves the ticket to
  ``blocked`` at once (history ``by`` ``BY_RUNTIME``, reason naming the task and its error,
  event ``ticket.phase.changed``), whether or not ``auto_advance`` is on. A task of the current
  phase *cancelled* (by a user: ``rt.cancel``; a cancelled ticket decides nothing more) never
  blocks the ticket, nor does one ``upstream_failed`` because its root (``Task.upstream``, the
  task whose end doomed it, directly or through others) was cancelled: that end is a cancel. Either end that does not block (a cancel; a failure where the table has no
  move from the phase to ``blocked``) is *unacknowledged*: it is listed in
  ``context["unacknowledged"]`` (``{"count", "tasks": [first MAX_CONTEXT_ITEMS ids]}``) and the
  phase does not advance by itself while the list is there (a cancelled task never counts as
  completed). The ticket's next phase move acknowledges them all and clears the list: leaving
  ``blocked`` back to the phase (or earlier) is the operator's acknowledgement of a failure, a
  driver's move (forward through the gate, or back) of a cancel. So ends of a phase's tasks
  before the ticket's latest entry into the phase never hold it back: after the move back,
  replacement tasks (or none: then ``move``, an artifact or an approval, as usual) take the
  phase through its gate. Ends of tasks of any other phase (held, or still running after the
  ticket left their phase) and of phase-less tasks are not governed.
- Context: each completed task of a ticket adds its ``summary``, ``decisions``, ``risks`` and
  artifact references to ``context["phases"]`` under its phase (its ticket's current phase if it
  names none), in the ticket row, at once (every phase is kept). Each list keeps its first
  ``MAX_CONTEXT_ITEMS`` entries, each entry cut to ``MAX_ITEM_CHARS`` characters; ``dropped``
  counts what was left out. ``context_for`` hands a task the phases strictly before its own.
- A task with no ``phase`` belongs to no phase: never held, not counted by a gate, and its
  completion never advances the ticket (its context goes to the current phase).
- Only the current phase can be approved, and only when its gate asks for an approval.
- A regression (a move to an earlier phase of the sequence than the one the ticket leaves, or
  than the one it was blocked from) voids what the re-entered phases had: their gates count only
  artifacts added after it. The mark is ``context["artifacts_from"]``: ``{phase: n}``, the gate
  of ``phase`` counts the ticket's artifacts from the ``n``-th on (0-based, oldest first; stored
  with the ticket, so it survives a restart).
- Cancelling a ticket cancels all its unfinished tasks in one decision (``TaskGraph.cancel_ticket``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omoi_ray.core.changes import ChangeRecorder
from omoi_ray.core.gates import GateOutcome, check_artifact, evaluate
from omoi_ray.core.model import Event, Priority, Task
from omoi_ray.core.phases import PhaseSet
from omoi_ray.core.storable import clean_text
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.core.tasks import FAILED_FOR_GOOD, TaskStatus
from omoi_ray.errors import GateBlockedError, InvalidTicketError, TicketClosedError, TicketNotFoundError

MAX_CONTEXT_ITEMS = 10
MAX_ITEM_CHARS = 300
MAX_SUMMARY_CHARS = 2000
HELD_REASON = "waiting for ticket '{ticket}' to reach phase {phase}"
BLOCKED_REASON = "waiting for ticket '{ticket}' to leave {phase}"
#: who the history names for a move the runtime makes on its own (a failed task blocking its ticket)
BY_RUNTIME = "omoi-ray"
#: the ends of a current-phase task that block the ticket (a cancel is only unacknowledged)
FAILS_PHASE = FAILED_FOR_GOOD - {TaskStatus.CANCELLED}


class TicketStatus(str, Enum):
    """Where a ticket stands (its stored value)."""

    OPEN = "open"
    DONE = "done"  # reached its final phase
    CANCELLED = "cancelled"


@dataclass(slots=True)
class Ticket:
    """A ticket (times are seconds since the epoch; ``context`` as the module rules describe)."""

    id: str
    title: str
    phases: PhaseSet
    phase: str
    created_at: float
    updated_at: float
    description: str = ""
    priority: Priority = Priority.MEDIUM
    status: TicketStatus = TicketStatus.OPEN
    auto_advance: bool = True
    gates: dict[str, dict[str, Any]] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    previous_phase: str | None = None


@dataclass(slots=True)
class PhaseChange:
    """One row of a ticket's phase history."""

    ticket_id: str
    seq: int
    from_phase: str | None
    to_phase: str
    reason: str
    by: str
    at: float
    gate: dict[str, Any] | None = None  # {"passed", "reasons"} of the gate the move went through


@dataclass(slots=True)
class Artifact:
    """An artifact of a ticket's phase (``core.gates``); ``task_id`` is None for a driver's."""

    ticket_id: str
    phase: str
    type: str
    content: dict[str, Any]
    at: float
    by: str
    path: str | None = None
    task_id: str | None = None


@dataclass(slots=True)
class GateResult:
    """One evaluation of a phase's gate."""

    ticket_id: str
    phase: str
    passed: bool
    reasons: tuple[str, ...]
    at: float
    by: str


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ITEM_CHARS else text[: MAX_ITEM_CHARS - 4].rstrip() + " ..."


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [_clip(v.strip()) for v in value if isinstance(v, str) and v.strip()]


def aggregate(phase_context: Mapping[str, Any] | None, task_id: str, result: Any) -> dict[str, Any]:
    """The context of one phase with a completed task's result added (a new dict; pure).

    Args:
        phase_context: the phase's context so far (None: nothing yet).
        task_id: the completed task.
        result: its result; read when a mapping: ``summary`` (text), ``decisions`` and ``risks``
            (a text or a list of texts; other items are ignored), ``artifacts`` (their ``type``
            and ``path`` are referenced).

    Returns:
        ``{"tasks", "summaries", "decisions", "risks", "artifacts", "dropped"}``, each list
        bounded by ``MAX_CONTEXT_ITEMS`` (``dropped`` counts entries left out).
    """
    ctx = {k: list(v) if isinstance(v, list) else v for k, v in (phase_context or {}).items()}
    for key in ("summaries", "decisions", "risks", "artifacts"):
        ctx.setdefault(key, [])
    ctx["tasks"] = ctx.get("tasks", 0) + 1
    ctx.setdefault("dropped", 0)
    data = result if isinstance(result, Mapping) else {}
    new: dict[str, list[Any]] = {
        "summaries": [_clip(f"{task_id}: {s}") for s in _texts(data.get("summary"))[:1]],
        "decisions": _texts(data.get("decisions")),
        "risks": _texts(data.get("risks")),
        "artifacts": [
            {"type": a["type"], "path": a.get("path"), "task_id": task_id}
            for a in (data.get("artifacts") or []) if isinstance(a, Mapping) and isinstance(a.get("type"), str)
        ],
    }
    for key, items in new.items():
        for item in items:
            if item in ctx[key]:
                continue
            if len(ctx[key]) >= MAX_CONTEXT_ITEMS:
                ctx["dropped"] += 1
            else:
                ctx[key].append(item)
    return ctx


def summarize(phases: Mapping[str, Mapping[str, Any]]) -> str:
    """The summary rule: one line per phase, ``"<PHASE>: <summaries joined by '; '>"``, then
    ``"  decisions: ..."`` and ``"  risks: ..."`` when there are some, in phase order; cut at
    ``MAX_SUMMARY_CHARS`` characters on a word boundary, ending " ..." when cut."""
    lines: list[str] = []
    for phase, ctx in phases.items():
        lines.append(f"{phase}: " + ("; ".join(ctx.get("summaries", ())) or f"{ctx.get('tasks', 0)} task(s) completed"))
        for key in ("decisions", "risks"):
            if ctx.get(key):
                lines.append(f"  {key}: " + "; ".join(ctx[key]))
    text = "\n".join(lines)
    if len(text) <= MAX_SUMMARY_CHARS:
        return text
    cut = text[: MAX_SUMMARY_CHARS - 4]
    space = cut.rfind(" ")
    return (cut[:space] if space > MAX_SUMMARY_CHARS // 2 else cut).rstrip() + " ..."


def context_for(ticket: Ticket, phase: str | None) -> dict[str, Any]:
    """What a task of ``ticket`` in ``phase`` reads as ``ctx.ticket_context()``.

    Returns:
        ``{"ticket_id", "phase", "phases": {earlier phase: its context}, "summary"}``: the
        phases strictly before ``phase`` in the sequence (every phase with context but
        ``phase`` itself when ``phase`` is not in the sequence), in sequence order.
    """
    stored: Mapping[str, Any] = ticket.context.get("phases", {})
    limit = ticket.phases.position(phase) if phase is not None else None
    chosen = {
        p: stored[p] for p in ticket.phases.sequence
        if p in stored and (limit is None and p != phase or limit is not None and ticket.phases.position(p) < limit)
    }
    return {"ticket_id": ticket.id, "phase": phase, "phases": chosen, "summary": summarize(chosen)}


class Tickets:
    """The tickets part of the scheduler core (see the module rules).

    Args:
        log: the graph's change recorder.
        live: the graph's live tasks (``core.dag.LiveTasks``): its ``hold``/``on_add``/``on_leave``
            hooks are set here.
    """

    def __init__(self, log: ChangeRecorder[TaskChanges], live: Any) -> None:
        self.log = log
        self.live = live
        self.tickets: dict[str, Ticket] = {}
        #: ticket id -> ids of its tasks held for their phase
        self.held: dict[str, set[str]] = {}
        #: ticket id -> {phase: live task ids}
        self.live_tasks: dict[str, dict[str | None, set[str]]] = {}
        #: ticket id -> its artifacts (every phase), oldest first
        self.artifacts: dict[str, list[Artifact]] = {}
        self.history_seq: dict[str, int] = {}
        live.hold = self.hold
        live.admit = lambda spec: self.check_task(spec.id, spec.ticket_id, spec.phase)
        live.on_add = self.task_added
        live.on_leave = self.task_left
        live.on_forget = self.task_forgotten

    # ------------------------------------------------------------------ restoring

    def restore(self, tickets: Iterable[Ticket], artifacts: Iterable[Artifact], history_seq: Mapping[str, int]) -> None:
        """Hold the stored tickets (before the live tasks are restored), their artifacts and the
        last history ``seq`` of each."""
        for ticket in tickets:
            self.tickets[ticket.id] = ticket
        for artifact in artifacts:
            self.artifacts.setdefault(artifact.ticket_id, []).append(artifact)
        self.history_seq.update(history_seq)

    def reload(
        self, ticket_id: str, ticket: Ticket | None, artifacts: Iterable[Artifact], history_seq: int, now: float
    ) -> None:
        """Hold ``ticket`` as storage has it (None: storage has none), with its stored artifacts
        and last history ``seq``: the storage backstop, after a change of it could not be stored.

        Its live tasks stay counted, and are held or released as its stored phase says (as after
        a move): a ready task of a phase it has not reached is held, a held one of a phase it has
        reached is made ready. Without a stored ticket, its tasks keep ``ticket_id`` and ``phase``
        as free labels: none is held any more.

        Args:
            ticket_id: the ticket whose change was dropped.
            ticket, artifacts, history_seq: what storage holds of it (``store.tickets.load_ticket``).
            now: the caller's clock reading (seconds).
        """
        if ticket is None:
            self.tickets.pop(ticket_id, None)
            self.artifacts.pop(ticket_id, None)
            self.history_seq.pop(ticket_id, None)
            self.live_tasks.pop(ticket_id, None)
            held = self.held.pop(ticket_id, set())
            for task in sorted((self.live.tasks[t] for t in held if t in self.live.tasks), key=lambda t: t.seq):
                if task.status is TaskStatus.PENDING and task.waiting_on == 0:
                    task.reason = None
                    self.live.make_ready(task, now)
            return
        self.tickets[ticket_id] = ticket
        self.artifacts[ticket_id] = list(artifacts)
        self.history_seq[ticket_id] = history_seq
        self._release(ticket, now)

    def change_refused(self, ticket_id: str, reason: str, now: float) -> None:
        """Record ``ticket.change.refused``: a change of the (stored) ticket could not be
        stored and was dropped (``reason`` says why); the ticket is as storage has it."""
        ticket = self.tickets.get(ticket_id)
        if ticket is not None:
            self._event("ticket.change.refused", ticket, now, {"phase": ticket.phase, "reason": reason})

    # ------------------------------------------------------------------ the live tasks' hooks

    def hold(self, task: Task) -> str | None:
        """Why ``task`` may not become ready yet (its ticket has not reached its phase), or None."""
        ticket = self.tickets.get(task.ticket_id or "")
        if ticket is None or task.phase is None:
            return None
        if ticket.phases.reached(ticket.phase, task.phase):
            return None
        self.held.setdefault(ticket.id, set()).add(task.id)
        if ticket.phase == ticket.phases.blocked:
            return BLOCKED_REASON.format(ticket=ticket.id, phase=ticket.phase)
        return HELD_REASON.format(ticket=ticket.id, phase=task.phase)

    def task_added(self, task: Task) -> None:
        """A live task joined memory (submitted or restored): count it in its ticket's phase."""
        if task.ticket_id in self.tickets:
            self.live_tasks.setdefault(task.ticket_id, {}).setdefault(task.phase, set()).add(task.id)

    def task_forgotten(self, task: Task) -> None:
        """A task left memory as if never created (the storage backstop could not store it):
        uncount it, and nothing else: it ended nothing its ticket must acknowledge."""
        self._uncount(task)

    def task_left(self, task: Task, now: float) -> None:
        """A task reached a final status: uncount it; a completed one adds to its phase's
        context and artifacts, and may advance its ticket (module rules)."""
        ticket = self._uncount(task)
        if ticket is None:
            return
        by_phase = self.live_tasks.get(ticket.id, {})
        if ticket.status is not TicketStatus.OPEN:
            return
        if task.status is not TaskStatus.COMPLETED:
            self._ended_unfinished(ticket, task, now)
            return
        phase = task.phase if task.phase in ticket.phases.phases else ticket.phase
        result = task.result if isinstance(task.result, Mapping) else {}
        for item in result.get("artifacts") or ():
            self._add_artifact(ticket, phase, item["type"], item.get("content") or {}, now,
                               by=task.agent_id or "task", path=item.get("path"), task_id=task.id)
        phases = dict(ticket.context.get("phases", {}))
        phases[phase] = aggregate(phases.get(phase), task.id, task.result)
        ticket.context = {**ticket.context, "phases": phases}
        self._touch(ticket, now)
        if task.phase is not None and task.phase == ticket.phase and not by_phase.get(task.phase):
            self._auto_advance(ticket, now)

    # ------------------------------------------------------------------ decisions

    def create(self, ticket: Ticket, now: float, request_id: str | None = None) -> Ticket:
        """Hold a new ticket (checked by ``specs.tickets``) and record it with ``ticket.created``.

        Raises:
            InvalidTicketError: a gate names a phase outside the ticket's phase set.
        """
        unknown = set(ticket.gates) - set(ticket.phases.phases)
        if unknown:
            raise InvalidTicketError(f"ticket '{ticket.id}': gates name unknown phase(s) {sorted(unknown)}")
        self.tickets[ticket.id] = ticket
        self.log.tickets.add(ticket)
        self._event("ticket.created", ticket, now, {"phase": ticket.phase, "title": ticket.title}, request_id)
        self._history(ticket, None, ticket.phase, "created", "runtime", now, None)
        return ticket

    def get(self, ticket_id: str) -> Ticket:
        """The ticket; raise ``TicketNotFoundError``."""
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            raise TicketNotFoundError(f"no ticket with id '{ticket_id}'", ticket_id=ticket_id)
        return ticket

    def unfinished(self, ticket: Ticket, phase: str) -> int:
        """How many live tasks of ``ticket`` belong to ``phase``."""
        return len(self.live_tasks.get(ticket.id, {}).get(phase, ()))

    def gate(self, ticket_id: str, now: float, by: str = "runtime", record: bool = True) -> GateOutcome:
        """Evaluate the gate of the ticket's current phase; recorded (``ticket.gate.evaluated``)
        unless ``record`` is False."""
        ticket = self.get(ticket_id)
        return self._gate(ticket, ticket.phase, now, by, record)

    def move(self, ticket_id: str, to: str, now: float, reason: str = "", by: str = "driver",
             request_id: str | None = None) -> Ticket:
        """Move a ticket to phase ``to`` (module rules); a ticket already in ``to`` is returned
        as it is (a repeated call).

        Raises:
            TicketNotFoundError, TicketClosedError, IllegalPhaseMoveError, GateBlockedError.
        """
        ticket = self._open(ticket_id)
        if ticket.phase == to:
            return ticket
        ticket.phases.check_move(ticket.id, ticket.phase, to, ticket.previous_phase)
        outcome = None
        if ticket.phases.needs_gate(ticket.phase, to):
            outcome = self._gate(ticket, ticket.phase, now, by, True)
            if not outcome.passed:
                raise GateBlockedError(
                    f"ticket '{ticket.id}' may not leave {ticket.phase}: " + "; ".join(outcome.reasons),
                    ticket_id=ticket.id, phase=ticket.phase, reasons=list(outcome.reasons),
                )
        self._move(ticket, to, reason or "moved by request", by, now, outcome, request_id)
        return ticket

    def add_artifact(self, ticket_id: str, kind: str, content: dict[str, Any], now: float, *, phase: str | None = None,
                     by: str = "driver", path: str | None = None) -> Artifact:
        """Add an artifact to a phase of the ticket (its current one by default), checked
        (``core.gates.check_artifact``); a phase whose tasks are done may then advance.

        Raises:
            TicketNotFoundError, TicketClosedError, InvalidArtifactError, InvalidTicketError (unknown phase).
        """
        ticket = self._open(ticket_id)
        phase = self._phase(ticket, phase)
        check_artifact(ticket.id, kind, content, reserved_ok=kind == "approval")
        artifact = self._add_artifact(ticket, phase, kind, content, now, by=by, path=path)
        self._touch(ticket, now)
        if phase == ticket.phase and not self.unfinished(ticket, phase) and self._worked(ticket, phase):
            self._auto_advance(ticket, now)
        return artifact

    def approve(self, ticket_id: str, phase: str | None, by: str, note: str, now: float) -> Artifact:
        """Sign the ticket's current phase off (an ``approval`` artifact by ``by``); may advance
        as ``add_artifact``.

        Raises:
            TicketNotFoundError, TicketClosedError; InvalidTicketError: ``phase`` is not the
            ticket's current phase, or its gate asks for no approval.
        """
        ticket = self._open(ticket_id)
        phase = self._phase(ticket, phase)
        if phase != ticket.phase:
            raise InvalidTicketError(
                f"ticket '{ticket.id}': only its current phase {ticket.phase} can be approved, not {phase}",
                ticket_id=ticket.id)
        if not (ticket.gates.get(phase) or {}).get("approval"):
            raise InvalidTicketError(f"ticket '{ticket.id}': the gate of phase {phase} asks for no approval",
                                     ticket_id=ticket.id)
        content = {"by": by, **({"note": note} if note else {})}
        return self.add_artifact(ticket_id, "approval", content, now, phase=phase, by=by)

    def cancel(self, ticket_id: str, reason: str, now: float) -> tuple[Ticket, list[str]]:
        """Mark the ticket cancelled; return it and the ids of its live tasks (the caller
        cancels them in the same decision). A cancelled ticket is returned as it is."""
        ticket = self.get(ticket_id)
        if ticket.status is TicketStatus.CANCELLED:
            return ticket, []
        if ticket.status is TicketStatus.DONE:
            raise TicketClosedError(f"ticket '{ticket.id}' is done: it cannot be cancelled", ticket_id=ticket.id)
        ticket.status = TicketStatus.CANCELLED
        self._touch(ticket, now)
        self._event("ticket.cancelled", ticket, now, {"phase": ticket.phase, "reason": reason})
        ids = [tid for ids in self.live_tasks.get(ticket.id, {}).values() for tid in ids]
        return ticket, sorted(ids)

    def check_task(self, task_id: str, ticket_id: str | None, phase: str | None) -> None:
        """Refuse a new task (submitted, split off or a loop's round) of a cancelled ticket or
        with a phase its ticket does not have.

        Raises:
            TicketClosedError, InvalidTicketError: naming the task and the ticket.
        """
        ticket = self.tickets.get(ticket_id or "")
        if ticket is None:
            return
        if ticket.status is TicketStatus.CANCELLED:
            raise TicketClosedError(f"task '{task_id}': ticket '{ticket.id}' is cancelled", ticket_id=ticket.id)
        if phase is not None and phase not in ticket.phases.sequence:
            raise InvalidTicketError(
                f"task '{task_id}': phase {phase!r} is not a phase of ticket '{ticket.id}' "
                f"({', '.join(ticket.phases.sequence)})", ticket_id=ticket.id, task_id=task_id)

    # ------------------------------------------------------------------ internals

    def _open(self, ticket_id: str) -> Ticket:
        ticket = self.get(ticket_id)
        if ticket.status is not TicketStatus.OPEN:
            raise TicketClosedError(f"ticket '{ticket.id}' is {ticket.status.value}", ticket_id=ticket.id)
        return ticket

    def _phase(self, ticket: Ticket, phase: str | None) -> str:
        if phase is None:
            return ticket.phase
        if phase not in ticket.phases.phases:
            raise InvalidTicketError(
                f"ticket '{ticket.id}': unknown phase {phase!r:.60} ({', '.join(ticket.phases.phases)})",
                ticket_id=ticket.id)
        return phase

    def _worked(self, ticket: Ticket, phase: str) -> bool:
        return bool(ticket.context.get("phases", {}).get(phase, {}).get("tasks"))

    def _add_artifact(self, ticket: Ticket, phase: str, kind: str, content: dict[str, Any], now: float, *,
                      by: str, path: str | None = None, task_id: str | None = None) -> Artifact:
        artifact = Artifact(ticket.id, phase, kind, dict(content), now, by, path, task_id)
        self.artifacts.setdefault(ticket.id, []).append(artifact)
        self.log.artifacts.add(artifact)
        return artifact

    def _gate(self, ticket: Ticket, phase: str, now: float, by: str, record: bool) -> GateOutcome:
        start = ticket.context.get("artifacts_from", {}).get(phase, 0)
        arts = [(a.type, a.content) for a in self.artifacts.get(ticket.id, [])[start:] if a.phase == phase]
        outcome = evaluate(phase, ticket.gates.get(phase), arts, self.unfinished(ticket, phase))
        if record:
            self.log.gate_results.add(GateResult(ticket.id, phase, outcome.passed, outcome.reasons, now, by))
            self._event("ticket.gate.evaluated", ticket, now,
                        {"phase": phase, "passed": outcome.passed, "reasons": list(outcome.reasons)})
        return outcome

    def _uncount(self, task: Task) -> Ticket | None:
        """Take ``task`` out of its ticket's live and held tasks; return the ticket (None: the
        task names no ticket held here)."""
        ticket = self.tickets.get(task.ticket_id or "")
        if ticket is not None:
            self.live_tasks.get(ticket.id, {}).get(task.phase, set()).discard(task.id)
            self.held.get(ticket.id, set()).discard(task.id)
        return ticket

    def _ended_unfinished(self, ticket: Ticket, task: Task, now: float) -> None:
        """A task of ``ticket`` ended not completed: one of its current phase blocks the ticket
        (a failure) or is left unacknowledged (module rules)."""
        if task.phase is None or task.phase != ticket.phase:
            return
        blocked = ticket.phases.blocked
        cancel = task.status is TaskStatus.UPSTREAM_FAILED and task.upstream_cancelled  # doomed by a cancel
        if task.status in FAILS_PHASE and not cancel and blocked is not None \
                and blocked in ticket.phases.allowed(ticket.phase):
            why = task.error if task.status is not TaskStatus.UPSTREAM_FAILED else task.reason
            why = clean_text(" ".join((why or "no error recorded").split()), max_chars=MAX_ITEM_CHARS)
            reason = _clip(f"task '{task.id}' {task.status.value}: {why}")
            self._move(ticket, blocked, reason, BY_RUNTIME, now, None, None)
            return
        open_ends = ticket.context.get("unacknowledged") or {"count": 0, "tasks": []}
        ids = list(open_ends["tasks"])
        if len(ids) < MAX_CONTEXT_ITEMS:
            ids.append(task.id)
        ticket.context = {**ticket.context, "unacknowledged": {"count": open_ends["count"] + 1, "tasks": ids}}
        self._touch(ticket, now)

    def _auto_advance(self, ticket: Ticket, now: float) -> None:
        if not ticket.auto_advance or ticket.status is not TicketStatus.OPEN:
            return
        if ticket.context.get("unacknowledged"):
            return  # a task of the phase ended unfinished since the ticket entered it
        to = ticket.phases.next_phase(ticket.phase)
        if to is None:
            return
        outcome = self._gate(ticket, ticket.phase, now, "auto-advance", True)
        if outcome.passed:
            self._move(ticket, to, "every task of the phase completed and its gate passed", "auto-advance",
                       now, outcome, None)

    def _move(self, ticket: Ticket, to: str, reason: str, by: str, now: float, outcome: GateOutcome | None,
              request_id: str | None) -> None:
        old = ticket.phase
        phases = ticket.phases
        back_from = phases.position(old if old != phases.blocked else ticket.previous_phase or old)
        there = phases.position(to)
        if back_from is not None and there is not None and there < back_from:  # a regression
            mark = len(self.artifacts.get(ticket.id, ()))
            since = {**ticket.context.get("artifacts_from", {}), **{p: mark for p in phases.sequence[there:]}}
            ticket.context = {**ticket.context, "artifacts_from": since}
        if "unacknowledged" in ticket.context:  # any move acknowledges the ends of the phase it leaves
            ticket.context = {k: v for k, v in ticket.context.items() if k != "unacknowledged"}
        ticket.previous_phase, ticket.phase = old, to
        if to == ticket.phases.final:
            ticket.status = TicketStatus.DONE
        self._touch(ticket, now)
        gate = None if outcome is None else {"passed": outcome.passed, "reasons": list(outcome.reasons)}
        self._history(ticket, old, to, reason, by, now, gate)
        self._event("ticket.phase.changed", ticket, now,
                    {"from": old, "to": to, "reason": reason, "by": by, "gate": gate}, request_id)
        self._release(ticket, now)

    def _release(self, ticket: Ticket, now: float) -> None:
        """After a move: make every held task of ``ticket`` whose phase it has reached ready, and
        take its ready tasks of phases it has not reached back to held (module rules: recall)."""
        tasks = sorted(
            (self.live.tasks[t] for phase, ids in self.live_tasks.get(ticket.id, {}).items() if phase is not None
             for t in ids if t in self.live.tasks),
            key=lambda t: t.seq,
        )
        held = self.held.setdefault(ticket.id, set())
        for task in tasks:
            if ticket.phases.reached(ticket.phase, task.phase):
                if task.id in held:
                    held.discard(task.id)
                    if task.status is TaskStatus.PENDING and task.waiting_on == 0:
                        task.reason = None
                        self.live.make_ready(task, now)
                continue
            if task.status is TaskStatus.READY:
                why = self.hold(task)
                if why is not None:
                    self.live.hold_back(task, why, now)
            elif task.id in held:
                why = self.hold(task)
                if why is not None and task.reason != why:
                    task.reason = why
                    if task.id not in self.log.created:
                        self.log.updated.add(task)

    def _history(self, ticket: Ticket, old: str | None, to: str, reason: str, by: str, now: float,
                 gate: dict[str, Any] | None) -> None:
        seq = self.history_seq.get(ticket.id, 0) + 1
        self.history_seq[ticket.id] = seq
        self.log.phase_changes.add(PhaseChange(ticket.id, seq, old, to, reason, by, now, gate))

    def _touch(self, ticket: Ticket, now: float) -> None:
        ticket.updated_at = now
        self.log.tickets.add(ticket)

    def _event(self, kind: str, ticket: Ticket, now: float, payload: dict[str, Any],
               request_id: str | None = None) -> None:
        self.log.events.add(Event(type=kind, entity_type="ticket", entity_id=ticket.id, at=now,
                                  payload={k: v for k, v in payload.items() if v is not None},
                                  ticket_id=ticket.id, request_id=request_id))
