"""Lock requests as users write them, validated at the edge.

Rules:
- A resource is written ``"type:id"``, ``(type, id)``, or ``(type, id, mode)``; a mode is
  ``"exclusive"`` or ``"shared"`` (a ``LockMode`` works too). Nothing else is accepted: in
  particular ``True``/``1`` are not modes.
- A resource type is a short name (letters, digits, ``_ . -``). A resource id is any text of
  1 to 512 UTF-8 bytes without control characters (NUL included); it is NFC-normalised, so two
  Unicode spellings of one name are one resource. Ids are otherwise opaque: ``./a`` and ``a``
  are different resources.
- One request names each resource once, and at most ``MAX_ITEMS`` of them.
- ``ttl`` is a positive number of seconds (at most a day); ``wait`` is ``None`` (no limit) or
  a number of seconds from 0 (try once) to a day (``storable.MAX_LOCK_S``; the one seconds
  check is ``storable.check_seconds``).
- A holder and a request id are text without control characters (``storable.check_text``).
- Names are matched with ``re.fullmatch``: ``"file\\n"`` is not the type ``"file"``.
Every violation raises ``InvalidLockRequestError`` naming the problem, before anything changes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from omoi_ray.core import storable
from omoi_ray.core.locks import LockMode, Resource
from omoi_ray.errors import InvalidLockRequestError

MAX_ITEMS = 64
MAX_SECONDS = storable.MAX_LOCK_S
_TYPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class LockRequestSpec:
    """A validated lock request: ``holder`` name, ``items`` as ``((type, id), mode)`` pairs (each
    resource once), ``ttl`` lease seconds, ``wait`` seconds (0: try once; None: no limit)."""

    holder: str
    items: tuple[tuple[Resource, LockMode], ...]
    ttl: float
    wait: float | None


def parse_mode(value: Any) -> LockMode:
    """Return the ``LockMode`` of ``"exclusive"``, ``"shared"`` or a ``LockMode``.

    Raises:
        InvalidLockRequestError: anything else (``True`` and ``1`` included).
    """
    if isinstance(value, LockMode):
        return value
    if isinstance(value, str) and value in ("exclusive", "shared"):
        return LockMode(value)
    raise InvalidLockRequestError(f"lock mode must be 'exclusive' or 'shared', not {value!r}")


def parse_resource(value: Any) -> tuple[Resource, LockMode | None]:
    """Parse ``"type:id"`` / ``(type, id)`` / ``(type, id, mode)``.

    Returns:
        ``((type, id), mode)``; mode is None when the value names none.

    Raises:
        InvalidLockRequestError: another shape, a bad type, id or mode.
    """
    mode = None
    if isinstance(value, str):
        if ":" not in value:
            raise InvalidLockRequestError(f"resource {value!r} must be written 'type:id'")
        rtype, rid = value.split(":", 1)
    elif isinstance(value, (tuple, list)) and len(value) in (2, 3):
        rtype, rid = value[0], value[1]
        if len(value) == 3:
            mode = parse_mode(value[2])
    else:
        raise InvalidLockRequestError(f"resource must be 'type:id' or (type, id[, mode]), not {value!r}")
    return (check_type(rtype), check_id(rid)), mode


def check_type(value: Any) -> str:
    """Return ``value`` if it is a resource type (1-64 of letters, digits, ``_ . -``, not starting with ``.``/``-``).

    Raises:
        InvalidLockRequestError: not such a name.
    """
    if not isinstance(value, str) or not _TYPE.fullmatch(value):
        raise InvalidLockRequestError(
            f"resource type must be 1-64 letters, digits and '_ . -', not {value!r}"
        )
    return value


def check_id(value: Any) -> str:
    """Return a resource id, NFC-normalised: non-empty text, no control character, at most 512 UTF-8 bytes.

    Raises:
        InvalidLockRequestError: not text, empty, a control character, or over 512 bytes.
    """
    if not isinstance(value, str) or not value:
        raise InvalidLockRequestError(f"resource id must be non-empty text, not {value!r}")
    try:
        storable.check_text(value, "resource id", max_chars=len(value), allow_newlines=False)
    except ValueError:
        raise InvalidLockRequestError(f"resource id {value!r} contains a control character (NUL included)") from None
    value = unicodedata.normalize("NFC", value)
    if len(value.encode("utf-8")) > 512:
        raise InvalidLockRequestError(f"resource id is {len(value.encode())} bytes, over 512: {value[:40]!r}...")
    return value


MAX_REQUEST_ID = 100


def check_request_id(value: Any) -> str | None:
    """A caller-chosen request id: 1-100 characters without control characters (None: generated).

    Raises:
        InvalidLockRequestError: not such text.
    """
    if value is None:
        return None
    return _text(value, "request_id", MAX_REQUEST_ID)


def _text(value: Any, what: str, max_chars: int) -> str:
    """Non-empty storable text without control characters, or ``InvalidLockRequestError``."""
    try:
        storable.check_text(value, what, max_chars=max_chars, allow_newlines=False)
    except ValueError:
        ok = False
    else:
        ok = bool(value)
    if not ok:
        raise InvalidLockRequestError(
            f"{what} must be 1-{max_chars} characters of text without control characters, not {value!r}"
        )
    return value


def request_id_for(label: str) -> str:
    """A request id derived from ``label`` (e.g. a task attempt), hashed when it would be too long."""
    if len(label) <= MAX_REQUEST_ID and not _CONTROL.search(label):
        return label
    import hashlib

    return label[:40] + "~" + hashlib.sha256(label.encode()).hexdigest()[:40]


def check_holder(value: Any) -> str:
    """Return a holder name: 1-256 characters of text without control characters.

    Raises:
        InvalidLockRequestError: not such text.
    """
    return _text(value, "holder", 256)


def check_seconds(value: Any, what: str, *, allow_none: bool = False, allow_zero: bool = False) -> float | None:
    """Return ``value`` as seconds: positive (or 0 if ``allow_zero``), at most ``MAX_SECONDS``.

    Args:
        value: the number given (None passes only with ``allow_none``).
        what: the field name for the message (``"ttl"``, ``"wait"``).

    Raises:
        InvalidLockRequestError: not a finite number in range, naming ``what``.
    """
    if value is None and allow_none:
        return None
    try:
        return storable.check_seconds(value, what, maximum=MAX_SECONDS, allow_zero=allow_zero)
    except ValueError as exc:
        raise InvalidLockRequestError(str(exc)) from None


def parse_request(
    holder: Any,
    resources: Sequence[Any] | Any,
    mode: Any = "exclusive",
    *,
    ttl: Any = 30.0,
    wait: Any = None,
) -> LockRequestSpec:
    """Validate a whole request.

    Args:
        holder: the holder's name.
        resources: one resource or a list of them (see ``parse_resource``), at most ``MAX_ITEMS``.
        mode: the mode of resources that do not name their own.
        ttl: lease length, seconds.
        wait: seconds to wait at most (0: try once; None: no limit).

    Returns:
        the ``LockRequestSpec``.

    Raises:
        InvalidLockRequestError: the first problem found (nothing else changes).
    """
    default = parse_mode(mode)
    if isinstance(resources, str) or (isinstance(resources, tuple) and _is_single(resources)):
        resources = [resources]  # one resource, not a list of them
    if not isinstance(resources, (list, tuple)):
        raise InvalidLockRequestError(f"resources must be a resource or a list of them, not {resources!r}")
    items = list(_items(resources, default))
    if not items:
        raise InvalidLockRequestError("a lock request must name at least one resource")
    if len(items) > MAX_ITEMS:
        raise InvalidLockRequestError(f"a lock request names {len(items)} resources, over the limit of {MAX_ITEMS}")
    seen: set[Resource] = set()
    for key, _ in items:
        if key in seen:
            raise InvalidLockRequestError(f"resource {key[0]}:{key[1]} is named twice in one request")
        seen.add(key)
    return LockRequestSpec(
        holder=check_holder(holder),
        items=tuple(items),
        ttl=check_seconds(ttl, "ttl"),  # type: ignore[arg-type]
        wait=check_seconds(wait, "wait", allow_none=True, allow_zero=True),
    )


def _is_single(value: tuple) -> bool:
    """``("file", "a")`` or ``("file", "a", "shared")``, as opposed to a tuple of resources."""
    return len(value) in (2, 3) and all(isinstance(v, str) for v in value) and ":" not in value[0]


def _items(resources: Iterable[Any], default: LockMode) -> Iterable[tuple[Resource, LockMode]]:
    for value in resources:
        key, mode = parse_resource(value)
        yield key, mode or default
