"""Hand-off offers and answers as users write them, checked at the edge; and the offer as users
read it (``HandoffInfo``).

Rules:
- An offer names exactly one of ``to`` (a list of agent names) and ``capabilities`` (a list of
  capability names); a bare string where a list belongs is an error, never split or wrapped.
- ``reason`` is text of at most ``MAX_REASON_CHARS`` characters without control characters
  other than tab and line breaks; ``context`` is storable JSON of at most
  ``MAX_CONTEXT_BYTES`` bytes; ``deadline`` is seconds, finite, not a bool, in (0,
  ``MAX_DEADLINE_S``].
- Offer ids are ``OFFER_ID_PATTERN`` (matched whole): the driver or handler makes them (uuid4
  hex), so a call retried while the scheduler restarts names the same offer.
- Every failure raises ``InvalidHandoffError`` naming the field; nothing is sent.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from omoi_ray.core import storable
from omoi_ray.core.handoff import Handoff
from omoi_ray.errors import InvalidHandoffError
from omoi_ray.specs.tasks import check_name, normalize_capabilities

#: an offer id (at most 48 characters: ``handoff:<id>`` is a claim request id of 64 at most)
OFFER_ID_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,47}"
_OFFER_ID = re.compile(OFFER_ID_PATTERN)
#: the largest context payload (compact JSON bytes)
MAX_CONTEXT_BYTES = 64 * 1024
#: the longest an offer may stay open (seconds)
MAX_DEADLINE_S = 7 * 24 * 3600.0
#: the most targets one offer may name
MAX_TARGETS = 256


def new_offer_id() -> str:
    """A fresh offer id (uuid4 hex)."""
    return uuid.uuid4().hex


def check_offer_id(value: Any) -> str:
    """``value`` if it is an offer id; ``InvalidHandoffError`` otherwise."""
    if not isinstance(value, str) or not _OFFER_ID.fullmatch(value):
        raise InvalidHandoffError(
            f"offer id must be 1-48 characters of letters, digits and '_ . : -', not {storable._short_repr(value)}"
        )
    return value


def check_agent(value: Any, what: str = "agent") -> str:
    """``value`` if it is an agent name; ``InvalidHandoffError`` naming ``what`` otherwise."""
    try:
        return check_name(value, what)
    except ValueError as exc:
        raise InvalidHandoffError(str(exc)) from None


def check_reason(value: Any, what: str = "reason") -> str:
    """``value`` if it is storable reason text (see the module rules)."""
    try:
        return storable.check_text(value, what, max_chars=storable.MAX_REASON_CHARS)
    except ValueError as exc:
        raise InvalidHandoffError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class OfferRequest:
    """A checked offer, as sent to the scheduler: exactly one of ``targets`` and ``capabilities``."""

    offer_id: str
    task_id: str
    targets: tuple[str, ...] | None
    capabilities: tuple[str, ...] | None
    reason: str
    context: Any
    deadline: float
    agent: str | None = None
    attempt: int | None = None


def parse_offer(
    task_id: Any,
    *,
    to: Any = None,
    capabilities: Any = None,
    reason: Any = "",
    context: Any = None,
    deadline: Any = 60.0,
    agent: Any = None,
    attempt: Any = None,
    offer_id: Any = None,
) -> OfferRequest:
    """Check an offer's fields (see the module rules).

    Args:
        task_id: the task offered.
        to: agent names (a list), or None when ``capabilities`` is given.
        capabilities: capability names (a list), or None when ``to`` is given.
        reason: why (text).
        context: anything the acceptor should know (storable JSON).
        deadline: seconds the offer stays open.
        agent: the offering agent (None: whoever holds the task).
        attempt: the offering attempt (None: the current one).
        offer_id: the offer's id (None: a new one).

    Returns:
        An ``OfferRequest``.

    Raises:
        InvalidHandoffError: a bad field, named.
    """
    try:
        task_id = check_name(task_id, "task_id")
    except ValueError as exc:
        raise InvalidHandoffError(str(exc)) from None
    if (to is None) == (capabilities is None):
        raise InvalidHandoffError("an offer names exactly one of to=[agent names] and capabilities=[names]")
    targets = caps = None
    if to is not None:
        if isinstance(to, (str, bytes)):
            raise InvalidHandoffError(f"to must be a list of agent names, not the string {to!r}; write [{to!r}]")
        if not isinstance(to, (list, tuple, set, frozenset)):
            raise InvalidHandoffError(f"to must be a list of agent names, not {type(to).__name__}")
        if not to or len(to) > MAX_TARGETS:
            raise InvalidHandoffError(f"to must name 1 to {MAX_TARGETS} agents, not {len(to)}")
        targets = tuple(dict.fromkeys(check_agent(name, "to[]") for name in to))
    else:
        try:
            caps = tuple(normalize_capabilities(capabilities, "capabilities"))
        except ValueError as exc:
            raise InvalidHandoffError(str(exc)) from None
        if not caps:
            raise InvalidHandoffError("capabilities must name at least one capability")
    reason = check_reason(reason)
    try:
        storable.storable_json(context, "context", max_bytes=MAX_CONTEXT_BYTES, setting="MAX_CONTEXT_BYTES")
    except (ValueError, RecursionError) as exc:
        raise InvalidHandoffError(f"context: {exc}") from None
    try:
        seconds = storable.check_seconds(deadline, "deadline", maximum=MAX_DEADLINE_S)
    except ValueError as exc:
        raise InvalidHandoffError(str(exc)) from None
    if agent is not None:
        agent = check_agent(agent)
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1):
        raise InvalidHandoffError(f"attempt must be a positive integer, not {storable._short_repr(attempt)}")
    return OfferRequest(
        offer_id=new_offer_id() if offer_id is None else check_offer_id(offer_id),
        task_id=task_id, targets=targets, capabilities=caps, reason=reason, context=context,
        deadline=seconds, agent=agent, attempt=attempt,
    )


def _utc(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


@dataclass(frozen=True, slots=True)
class HandoffInfo:
    """An offer as a driver or handler reads it.

    ``status`` is ``open``, ``accepted``, ``declined``, ``expired`` or ``withdrawn``; ``targets``
    the agents it was made to; ``declines`` agent -> reason; ``accepted_by`` and ``new_attempt``
    once accepted; times are aware UTC datetimes (``deadline`` when it expires).
    """

    id: str
    task_id: str
    attempt: int
    from_agent: str
    targets: tuple[str, ...]
    capabilities: tuple[str, ...] | None
    reason: str
    context: Any
    status: str
    deadline: datetime | None
    created_at: datetime | None
    thread_id: str | None
    declines: dict[str, str]
    accepted_by: str | None
    new_attempt: int | None
    closed_at: datetime | None
    closed_reason: str | None

    @property
    def open(self) -> bool:
        """True while the offer may still be answered."""
        return self.status == "open"

    @classmethod
    def of(cls, h: Handoff) -> HandoffInfo:
        """The info of a core offer (a copy: safe to send)."""
        return cls(
            id=h.id, task_id=h.task_id, attempt=h.attempt, from_agent=h.from_agent, targets=tuple(h.targets),
            capabilities=h.capabilities, reason=h.reason, context=h.context, status=h.status.value,
            deadline=_utc(h.deadline), created_at=_utc(h.created_at), thread_id=h.thread_id,
            declines=dict(h.declines), accepted_by=h.accepted_by, new_attempt=h.new_attempt,
            closed_at=_utc(h.closed_at), closed_reason=h.closed_reason,
        )
