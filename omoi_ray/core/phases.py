"""Phase sets: which phases a ticket goes through and which phase may follow which, as data.

A phase set is ``PhaseSet(name, sequence, transitions, blocked)``:

- ``sequence``: the working phases in order, first to last; the last one is final (no move
  leaves it). A task of a ticket is held until its ticket reaches the task's phase
  (``position``: earlier phases come first).
- ``transitions``: ``{phase: (phases it may move to, ...)}``, the one table of legal moves.
- ``blocked``: the name of the parking phase (outside the sequence), or None.

``DEFAULT`` is the original's table (BACKLOG .. DONE, plus BLOCKED):

============== =======================================================
from           to
============== =======================================================
BACKLOG        REQUIREMENTS, BLOCKED
REQUIREMENTS   DESIGN, BLOCKED
DESIGN         IMPLEMENTATION, BLOCKED
IMPLEMENTATION TESTING, BLOCKED
TESTING        DEPLOYMENT, IMPLEMENTATION (regression), BLOCKED
DEPLOYMENT     DONE, BLOCKED
DONE           nothing (final)
BLOCKED        BACKLOG, REQUIREMENTS, DESIGN, IMPLEMENTATION, TESTING
               (only the phase it was blocked from, or an earlier one)
============== =======================================================

A custom set is declared as a mapping (``PhaseSet.parse``)::

    {"name": "review", "sequence": ["DRAFT", "REVIEW", "PUBLISHED"],
     "transitions": {"DRAFT": ["REVIEW"], "REVIEW": ["PUBLISHED", "DRAFT"]},
     "blocked": None}

Rules:
- Phase names match ``PHASE_NAME`` (upper case letters, digits, ``_``; 1-64 characters); a set
  has 2-32 phases, no name twice, and ``blocked`` (if any) is not in ``sequence``.
- Every name in ``transitions`` is a phase of the set; the final phase has no move out and
  every other phase (``blocked`` included) has one; a move to itself is refused; every phase of
  the sequence is reachable from the first.
- Leaving ``blocked`` goes back to the phase the ticket was blocked from (its stored
  ``previous_phase``) or an earlier one: forward progress only goes through gates.
- A move is legal only if the table lists it (``check_move``): anything else raises
  ``IllegalPhaseMoveError`` naming the allowed targets.
- A move *forward* (to a later phase of the sequence) passes the gate of the phase it leaves
  (``needs_gate``); moves back, into ``blocked`` and out of it do not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omoi_ray.errors import IllegalPhaseMoveError, InvalidTicketError

#: a phase name, matched whole
PHASE_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
MIN_PHASES, MAX_PHASES = 2, 32


@dataclass(frozen=True, slots=True)
class PhaseSet:
    """A validated phase set (see the module rules); build custom ones with ``parse``."""

    name: str
    sequence: tuple[str, ...]
    transitions: Mapping[str, tuple[str, ...]]
    blocked: str | None = None

    @property
    def first(self) -> str:
        """The phase a new ticket starts in."""
        return self.sequence[0]

    @property
    def final(self) -> str:
        """The last phase (no move leaves it)."""
        return self.sequence[-1]

    @property
    def phases(self) -> tuple[str, ...]:
        """Every phase: the sequence, then ``blocked`` if there is one."""
        return self.sequence + ((self.blocked,) if self.blocked else ())

    def position(self, phase: str) -> int | None:
        """Where ``phase`` stands in the sequence (0 first), None for ``blocked`` or unknown."""
        try:
            return self.sequence.index(phase)
        except ValueError:
            return None

    def allowed(self, phase: str) -> tuple[str, ...]:
        """The phases ``phase`` may move to (empty for the final phase or an unknown one)."""
        return self.transitions.get(phase, ())

    def check_move(self, ticket_id: str, current: str, to: str, previous: str | None = None) -> None:
        """Raise ``IllegalPhaseMoveError`` unless the table allows ``current -> to``; a move out
        of ``blocked`` may only go to ``previous`` (the phase the ticket was blocked from) or an
        earlier phase of the sequence.

        Raises:
            IllegalPhaseMoveError: names the ticket, both phases and the allowed targets.
        """
        allowed = self.allowed(current)
        limit = self.position(previous) if current == self.blocked and previous is not None else None
        if limit is not None:
            allowed = tuple(p for p in allowed if (self.position(p) or 0) <= limit)
        if to not in allowed:
            shown = ", ".join(allowed) if allowed else f"none: {current} is final"
            raise IllegalPhaseMoveError(
                f"ticket '{ticket_id}' may not move from {current} to {to} (allowed: {shown})",
                ticket_id=ticket_id, current=current, to=to, allowed=list(allowed),
            )

    def needs_gate(self, current: str, to: str) -> bool:
        """True when ``current -> to`` moves forward in the sequence (the gate of ``current`` applies)."""
        here, there = self.position(current), self.position(to)
        return here is not None and there is not None and there > here

    def next_phase(self, current: str) -> str | None:
        """The phase an automatic advance moves to: the first allowed target later in the sequence."""
        here = self.position(current)
        if here is None:
            return None
        for to in self.allowed(current):
            there = self.position(to)
            if there is not None and there > here:
                return to
        return None

    def reached(self, current: str, phase: str) -> bool:
        """True when a ticket in ``current`` has reached ``phase`` (``blocked`` reaches nothing)."""
        here, there = self.position(current), self.position(phase)
        return here is not None and there is not None and there <= here

    def as_data(self) -> dict[str, Any]:
        """The set as the mapping ``parse`` takes (stored with each ticket)."""
        return {
            "name": self.name,
            "sequence": list(self.sequence),
            "transitions": {k: list(v) for k, v in self.transitions.items()},
            "blocked": self.blocked,
        }

    @classmethod
    def parse(cls, data: Any) -> PhaseSet:
        """A phase set from its mapping form (see the module docstring), validated.

        Raises:
            InvalidTicketError: the field at fault is named (``phases.sequence``, ``phases.transitions.X``...).
        """
        if not isinstance(data, Mapping):
            raise InvalidTicketError(f"phases must be a mapping with name, sequence, transitions, not {data!r:.60}")
        unknown = set(data) - {"name", "sequence", "transitions", "blocked"}
        if unknown:
            raise InvalidTicketError(f"phases has unknown field(s) {sorted(map(str, unknown))}")
        name = data.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
            raise InvalidTicketError(f"phases.name must be 1-64 lower case letters, digits or '_', not {name!r:.60}")
        sequence = data.get("sequence")
        if not isinstance(sequence, (list, tuple)):
            raise InvalidTicketError(f"phases.sequence must be a list of phase names, not {sequence!r:.60}")
        blocked = data.get("blocked")
        names = list(sequence) + ([blocked] if blocked is not None else [])
        for phase in names:
            _check_phase_name(phase, "phases.sequence" if phase is not blocked else "phases.blocked")
        if not MIN_PHASES <= len(sequence) <= MAX_PHASES:
            raise InvalidTicketError(f"phases.sequence must hold {MIN_PHASES}-{MAX_PHASES} phases, not {len(sequence)}")
        if len(set(names)) != len(names):
            raise InvalidTicketError("phases: a phase name appears twice in sequence and blocked")
        raw = data.get("transitions")
        if not isinstance(raw, Mapping):
            raise InvalidTicketError(f"phases.transitions must be a mapping of phase -> list of phases, not {raw!r:.60}")
        known = set(names)
        table: dict[str, tuple[str, ...]] = {}
        for src, targets in raw.items():
            if src not in known:
                raise InvalidTicketError(f"phases.transitions names unknown phase {src!r:.60}")
            if not isinstance(targets, (list, tuple)):
                raise InvalidTicketError(f"phases.transitions.{src} must be a list of phases, not {targets!r:.60}")
            for to in targets:
                if not isinstance(to, str) or to not in known:
                    raise InvalidTicketError(f"phases.transitions.{src} names unknown phase {to!r:.60}")
                if to == src:
                    raise InvalidTicketError(f"phases.transitions.{src} may not move to itself")
            if targets:
                table[src] = tuple(dict.fromkeys(targets))
        if table.get(sequence[-1]):
            raise InvalidTicketError(f"phases.transitions.{sequence[-1]}: the final phase may not move on")
        seen, todo = {sequence[0]}, [sequence[0]]
        while todo:
            for to in table.get(todo.pop(), ()):
                if to not in seen:
                    seen.add(to)
                    todo.append(to)
        unreachable = [p for p in sequence if p not in seen]
        if unreachable:
            raise InvalidTicketError(f"phases: {', '.join(unreachable)} cannot be reached from {sequence[0]}")
        stuck = [p for p in (*sequence[:-1], *([blocked] if blocked is not None else [])) if not table.get(p)]
        if stuck:
            raise InvalidTicketError(f"phases.transitions.{stuck[0]}: only the final phase may have no move out")
        return cls(name, tuple(sequence), table, blocked)


def _check_phase_name(phase: Any, field: str) -> None:
    if not isinstance(phase, str) or not PHASE_NAME.fullmatch(phase):
        raise InvalidTicketError(
            f"{field}: a phase name is 1-64 upper case letters, digits or '_' (starting with a letter), not {phase!r:.60}"
        )


_WORKING = ("BACKLOG", "REQUIREMENTS", "DESIGN", "IMPLEMENTATION", "TESTING")

#: the default phase set: the original's table, enforced
DEFAULT = PhaseSet.parse({
    "name": "default",
    "sequence": [*_WORKING, "DEPLOYMENT", "DONE"],
    "transitions": {
        "BACKLOG": ["REQUIREMENTS", "BLOCKED"],
        "REQUIREMENTS": ["DESIGN", "BLOCKED"],
        "DESIGN": ["IMPLEMENTATION", "BLOCKED"],
        "IMPLEMENTATION": ["TESTING", "BLOCKED"],
        "TESTING": ["DEPLOYMENT", "IMPLEMENTATION", "BLOCKED"],
        "DEPLOYMENT": ["DONE", "BLOCKED"],
        "BLOCKED": list(_WORKING),
    },
    "blocked": "BLOCKED",
})
