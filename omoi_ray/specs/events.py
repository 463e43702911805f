"""Events as consumers see them: the record, its position, and its wire form.

Rules:
- Every event has a *position* ``"<major>-<minor>"``: on PostgreSQL ``<writing transaction id>-
  <row id>``, on SQLite ``0-<row id>``. Positions are totally ordered, every reader (relay,
  ``follow``, the CLI) sees committed events as a growing prefix of that order, and the relay
  uses the position as the Redis stream entry id. So a position means the same thing in the
  database and on the stream, a consumer resumes from the last one it saw, and the stream
  refuses a second copy of an entry (``XADD`` ids must increase).
- Events of one entity are written by one actor, one transaction after another, so their
  positions follow commit order.
- ``id`` (the event id) is unique and stable: a consumer that stores ids can drop repeats, but
  ``follow`` already never yields a position twice.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

from omoi_ray.core.storable import MAX_POSITION
from omoi_ray.errors import InvalidEventQueryError

_POSITION = re.compile(r"([0-9]{1,40})(?:-([0-9]{1,40}))?")


class Position(NamedTuple):
    """An event's place in the one total order: ``(major, minor)`` = (writing transaction id, row id), major 0 on SQLite."""

    major: int
    minor: int

    def __str__(self) -> str:
        """The text form ``"<major>-<minor>"`` (also the Redis stream entry id)."""
        return f"{self.major}-{self.minor}"

    @classmethod
    def parse(cls, value: str | Position) -> Position:
        """``"12-345"`` (also ``"345"``, meaning ``0-345``) to a Position; a typed error otherwise.

        Both numbers are ASCII digits up to ``MAX_POSITION`` (the stores hold positions as signed
        64-bit integers, so no larger position can exist).

        Raises:
            InvalidEventQueryError: not a string or Position, not of that form, or out of range.
        """
        if isinstance(value, Position):
            if not all(type(n) is int and 0 <= n <= MAX_POSITION for n in value):
                raise InvalidEventQueryError(f"event position {value!r} must hold two integers from 0 to {MAX_POSITION}")
            return value
        if not isinstance(value, str):
            raise InvalidEventQueryError(f"event position must be a string such as '0-42', not {value!r}")
        found = _POSITION.fullmatch(value.strip())
        if found is None:
            raise InvalidEventQueryError(
                f"event position {value!r} is not of the form '<number>-<number>' (e.g. '0-42')"
            )
        major, minor = found.groups()
        pos = cls(int(major), int(minor)) if minor is not None else cls(0, int(major))
        if pos.major > MAX_POSITION or pos.minor > MAX_POSITION:
            raise InvalidEventQueryError(f"event position {value!r} is past the largest possible position")
        return pos


START = Position(0, 0)  # before every event


class EventRecord(BaseModel):
    """One committed event (the schema of the ``events`` table, the stream and ``follow``)."""

    model_config = ConfigDict(frozen=True)

    position: str
    id: str
    type: str
    entity_type: str
    entity_id: str
    payload: dict[str, Any] | None = None
    at: datetime
    task_id: str | None = None
    agent_id: str | None = None
    ticket_id: str | None = None
    request_id: str | None = None

    @property
    def pos(self) -> Position:
        """The ``position`` text parsed as a ``Position``."""
        return Position.parse(self.position)

    def wire(self) -> str:
        """The JSON stored in a stream entry (compact; times as epoch seconds)."""
        return json.dumps(
            {
                "position": self.position, "id": self.id, "type": self.type,
                "entity_type": self.entity_type, "entity_id": self.entity_id, "payload": self.payload,
                "at": self.at.timestamp(), "task_id": self.task_id, "agent_id": self.agent_id,
                "ticket_id": self.ticket_id, "request_id": self.request_id,
            },
            separators=(",", ":"),
            default=str,
        )

    @classmethod
    def from_wire(cls, data: str | bytes) -> EventRecord:
        """Rebuild a record from ``wire()`` JSON (``at`` from epoch seconds to an aware UTC datetime).

        Raises:
            json.JSONDecodeError: not JSON.
            pydantic.ValidationError: fields missing or of the wrong type.
        """
        raw = json.loads(data)
        raw["at"] = datetime.fromtimestamp(raw["at"], tz=timezone.utc)
        return cls.model_validate(raw)
