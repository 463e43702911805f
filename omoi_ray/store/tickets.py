"""Reading tickets back (``omoi_ray.core.tickets``): the scheduler's start-up snapshot of them,
and the history, gate results and artifacts ``rt.tickets`` reads. Writes go through the
scheduler's change set (``store.writes``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from omoi_ray.core.model import Priority
from omoi_ray.core.phases import PhaseSet
from omoi_ray.core.tickets import Artifact, Ticket, TicketStatus
from omoi_ray.store import schema as t


def _epoch(value: datetime | None) -> float:
    return 0.0 if value is None else value.timestamp()


@dataclass(slots=True)
class TicketSnapshot:
    """Every managed ticket, the artifacts of the open ones, and each ticket's last history seq."""

    tickets: list[Ticket] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    history_seq: dict[str, int] = field(default_factory=dict)


def ticket_from_row(r: Mapping[str, Any]) -> Ticket:
    """A managed ticket from its row (``phase_set`` not NULL)."""
    return Ticket(
        id=r["id"], title=r["title"] or "", phases=PhaseSet.parse(r["phase_set"]), phase=r["phase"],
        created_at=_epoch(r["created_at"]), updated_at=_epoch(r["updated_at"]), description=r["description"] or "",
        priority=Priority(r["priority"] or Priority.MEDIUM), status=TicketStatus(r["status"]),
        auto_advance=bool(r["auto_advance"]), gates=dict(r["gates"] or {}), context=dict(r["context"] or {}),
        previous_phase=r["previous_phase"],
    )


def load_tickets(conn: Any) -> TicketSnapshot:
    """The scheduler's snapshot of tickets (read in the start-up transaction)."""
    tk = t.tickets
    tickets = [ticket_from_row(r) for r in conn.execute(sa.select(tk).where(tk.c.phase_set.is_not(None))).mappings()]
    open_ids = [k.id for k in tickets if k.status is TicketStatus.OPEN]
    artifacts: list[Artifact] = []
    if open_ids:
        a = t.ticket_artifacts
        for r in conn.execute(sa.select(a).where(a.c.ticket_id.in_(open_ids)).order_by(a.c.id)).mappings():
            artifacts.append(_artifact(r))
    h = t.ticket_phase_history
    seqs = dict(conn.execute(sa.select(h.c.ticket_id, sa.func.max(h.c.seq)).group_by(h.c.ticket_id)).all())
    return TicketSnapshot(tickets, artifacts, seqs)


def load_ticket(engine: sa.Engine, ticket_id: str) -> tuple[Ticket | None, list[Artifact], int]:
    """One managed ticket as stored (None if there is none), its artifacts (oldest first) and
    its last history ``seq`` (0 if none): what the scheduler's backstop reloads."""
    tk, h = t.tickets, t.ticket_phase_history
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(tk).where(tk.c.id == ticket_id, tk.c.phase_set.is_not(None))
        ).mappings().first()
        seq = conn.execute(sa.select(sa.func.max(h.c.seq)).where(h.c.ticket_id == ticket_id)).scalar() or 0
    if row is None:
        return None, [], 0
    return ticket_from_row(row), artifacts(engine, ticket_id), int(seq)


def _artifact(r: Mapping[str, Any]) -> Artifact:
    return Artifact(r["ticket_id"], r["phase"], r["type"], dict(r["content"] or {}), _epoch(r["created_at"]),
                    r["added_by"], r["path"], r["task_id"])


def label_exists(engine: sa.Engine, ticket_id: str) -> bool:
    """True when a ticket row with this id exists (a label some task used, or a managed ticket)."""
    with engine.connect() as conn:
        return conn.execute(sa.select(t.tickets.c.id).where(t.tickets.c.id == ticket_id)).first() is not None


def history(engine: sa.Engine, ticket_id: str) -> list[dict[str, Any]]:
    """The ticket's phase history rows, first to last (``at`` as an aware datetime; ``by`` is
    the ``moved_by`` column)."""
    h = t.ticket_phase_history
    with engine.connect() as conn:
        rows = conn.execute(sa.select(h).where(h.c.ticket_id == ticket_id).order_by(h.c.seq)).mappings()
        return [{**r, "by": r["moved_by"]} for r in rows]


def gate_results(engine: sa.Engine, ticket_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """The ticket's latest ``limit`` gate evaluations, oldest first."""
    g = t.ticket_gate_results
    with engine.connect() as conn:
        rows = conn.execute(sa.select(g).where(g.c.ticket_id == ticket_id).order_by(g.c.id.desc()).limit(limit))
        return [{**r, "by": r["judged_by"]} for r in reversed(rows.mappings().all())]


def artifacts(engine: sa.Engine, ticket_id: str) -> list[Artifact]:
    """Every artifact of the ticket, oldest first."""
    a = t.ticket_artifacts
    with engine.connect() as conn:
        return [_artifact(r) for r in conn.execute(sa.select(a).where(a.c.ticket_id == ticket_id).order_by(a.c.id)).mappings()]
