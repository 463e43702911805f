"""What every supported store can hold: the one definition of a storable value, and its bounds.

Rules:
- A value is *storable* when SQLite and PostgreSQL both accept it unchanged: text has no NUL
  (PostgreSQL refuses ``\\x00`` in text and ``\\u0000`` in JSONB) and no lone surrogate (neither
  store can encode it as UTF-8); JSON holds only dicts with string keys, lists, strings, finite
  numbers, booleans and null, nested at most ``MAX_JSON_DEPTH`` deep.
- Input from users is *checked* (``check_text``, ``check_json``, ``check_seconds``): a bad value
  raises ``ValueError`` whose message names the field (and the path inside a JSON value).
  Callers at the edge turn it into their typed error.
- Text produced inside the runtime (a handler's error message) is *cleaned* (``clean_text``):
  unstorable and control characters are replaced, so it can always be recorded.
- Every numeric bound a user can meet is a constant here, and the README's bounds table lists
  the same numbers.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: deepest nesting of lists and dicts in a payload or result (a JSON document at depth 1 is flat)
MAX_JSON_DEPTH = 64
#: longest attempt timeout: 7 days, in seconds
MAX_TIMEOUT_S = 7 * 24 * 3600.0
#: longest retry backoff (``backoff_base`` and ``backoff_cap``): 1 day, in seconds
MAX_BACKOFF_S = 24 * 3600.0
#: longest reason (cancel reasons) a user may give, in characters
MAX_REASON_CHARS = 1000
#: longest error text recorded for an attempt, in characters (longer text is cut)
MAX_ERROR_CHARS = 4000
#: longest wait a driver call accepts, in seconds (about 31 years: "no limit" is ``None``)
MAX_WAIT_S = 1e9
#: longest grace a handler gets past its timeout or cancellation before its agent's process is
#: replaced (``OMOI_HARD_TIMEOUT_GRACE``), in seconds
MAX_HARD_TIMEOUT_GRACE_S = 3600.0
#: most retries a task may declare (``max_retries``)
MAX_RETRIES = 1000
#: most handlers one agent runs at once (``capacity``)
MAX_CAPACITY = 1024
#: most CPUs (``num_cpus``) and most units of one custom resource an agent may reserve
MAX_AGENT_CPUS = 1024.0
MAX_AGENT_RESOURCE = 1e6
#: smallest non-zero share of a resource Ray can reserve
MIN_RESOURCE_SHARE = 0.0001
#: most restarts an agent may be given (``max_restarts``; -1 means "restart forever")
MAX_AGENT_RESTARTS = 10_000
#: longest lock lease (``ttl``) and lock wait, in seconds: 1 day
MAX_LOCK_S = 24 * 3600.0
#: ``follow``: shortest and longest database poll interval, in seconds; most events per read
MIN_POLL_S = 0.01
MAX_POLL_S = 60.0
MAX_FOLLOW_BATCH = 10_000
#: most events one ``Runtime.events`` call returns
MAX_EVENTS_LIMIT = 100_000
#: largest number in an event position (both stores hold positions as signed 64-bit integers)
MAX_POSITION = 2**63 - 1
#: latest time (seconds since the epoch) a store can hold: 9999-12-31 23:59:59 UTC
MAX_TIMESTAMP_S = 253402300799.0
#: longest lease a runtime may hold on its database (``OMOI_OWNER_LEASE``), in seconds
MAX_OWNER_LEASE_S = 3600.0
#: largest size limit a setting may give JSON the stores hold (``OMOI_PAYLOAD_MAX_BYTES``,
#: ``OMOI_RESULT_MAX_BYTES``, ``OMOI_MESSAGE_MAX_BYTES``): 100 MB, well inside PostgreSQL's
#: largest JSONB value (255 MB)
MAX_JSON_BYTES_SETTING = 100_000_000
#: what a sync's or a loop's own result (``core.coordination``) may have past
#: ``OMOI_RESULT_MAX_BYTES`` for each result it wraps (a sync's member, a loop's last check),
#: besides that result's key: room for the wrapper, as each wrapped result already fit the cap
NODE_RESULT_ALLOWANCE_BYTES = 1024
#: most tasks one submission may be allowed (``OMOI_MAX_SUBMISSION``)
MAX_SUBMISSION_SETTING = 10_000_000
#: largest event count a setting may give (``OMOI_EVENTS_STREAM_MAXLEN``, ``OMOI_EVENTS_REPLAY``)
MAX_EVENT_COUNT_SETTING = 1_000_000_000

# Text a store cannot hold, anywhere: NUL and lone surrogates.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
# Free text (reasons, error messages) may hold tabs and line breaks, no other control characters.
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Names and keys hold no control characters at all.
_CONTROL_ANY = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def unstorable_char(text: str) -> str | None:
    """The first character of ``text`` that no store can hold (NUL, lone surrogate), or None."""
    found = _UNSTORABLE.search(text)
    return None if found is None else found.group()


def check_text(value: Any, field: str, *, max_chars: int, allow_newlines: bool = True) -> str:
    """Return ``value`` if it is storable text of at most ``max_chars`` characters.

    Tabs and line breaks are allowed when ``allow_newlines``; other control characters, NUL and
    lone surrogates never are. Raises ``ValueError`` naming ``field``.
    """
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, not {type(value).__name__}")
    bad = (_CONTROL_IN_TEXT if allow_newlines else _CONTROL_ANY).search(value)
    if bad is not None:
        raise ValueError(f"{field} holds the control or unstorable character {bad.group()!r}")
    if len(value) > max_chars:
        raise ValueError(f"{field} is {len(value)} characters, over the limit of {max_chars}")
    return value


def clean_text(value: Any, *, max_chars: int = MAX_ERROR_CHARS) -> str:
    """``value`` as storable text: control and unstorable characters become U+FFFD, and text
    over ``max_chars`` is cut (ending in an ellipsis). Never raises."""
    try:
        text = value if isinstance(value, str) else str(value)
    except BaseException:  # noqa: BLE001 - a __str__ that raises must not stop the cleaning
        text = f"<{type(value).__name__} whose str() failed>"
    text = _CONTROL_IN_TEXT.sub("\ufffd", text)
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "\u2026"
    return text


def check_json(value: Any, field: str, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise ``ValueError`` naming ``field`` and the path to the first part of ``value`` that is
    not storable JSON (see the module rules). Iterative: any depth of input is safe to check.
    Submissions check every payload, so leaves are checked in their container's loop and a
    path string is built only for nested containers and for the part in error."""
    if not isinstance(value, (list, tuple, dict)):
        _check_leaf(value, field, None)
        return
    stack: list[tuple[Any, str, int]] = [(value, field, 1)]
    while stack:
        item, path, depth = stack.pop()
        if depth > max_depth:
            raise ValueError(f"{field} is nested more than {max_depth} levels deep")
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        is_dict = isinstance(item, dict)
        for key, child in pairs:
            if is_dict:
                if type(key) is not str and not isinstance(key, str):
                    raise ValueError(f"{path} has the key {key!r}; JSON object keys must be strings")
                if _UNSTORABLE.search(key) is not None:
                    raise ValueError(f"{path} has a key holding the unstorable character {unstorable_char(key)!r}")
            kind = type(child)
            if kind is str:
                if _UNSTORABLE.search(child) is not None:
                    _check_leaf(child, path, key)
            elif child is None or kind is int or kind is bool:
                pass
            elif kind is float:
                if not math.isfinite(child):
                    _check_leaf(child, path, key)
            elif isinstance(child, (list, tuple, dict)):
                stack.append((child, _path(path, key), depth + 1))
            else:
                _check_leaf(child, path, key)  # subclasses of str, int and float, or not JSON


def _check_leaf(item: Any, parent: str, key: Any) -> None:
    """Raise ``ValueError`` naming the path if ``item`` (not a list or dict) is not storable JSON."""
    if item is None or isinstance(item, (bool, int)):
        return
    if isinstance(item, str):
        bad = unstorable_char(item)
        if bad is not None:
            raise ValueError(f"{_path(parent, key)} holds the unstorable character {bad!r}")
        return
    if isinstance(item, float):
        if not math.isfinite(item):
            raise ValueError(f"{_path(parent, key)} is {item!r}; JSON numbers must be finite")
        return
    raise ValueError(f"{_path(parent, key)} is a {type(item).__name__}, which is not JSON")


def _path(parent: str, key: Any) -> str:
    """``payload['a'][0]``: the path of the part at ``key`` of the container at ``parent``."""
    if key is None:
        return parent
    return f"{parent}[{key}]" if type(key) is int else f"{parent}[{key!r}]"


def storable_json(value: Any, field: str, *, max_bytes: int, setting: str) -> str:
    """``value`` as compact JSON text, if it is storable JSON (``check_json``) of at most
    ``max_bytes`` bytes; raises ``ValueError`` naming ``field``, or the size and ``setting``
    (the name of the limit a user can change) when it is too large."""
    check_json(value, field)
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    size = len(text.encode())
    if size > max_bytes:
        raise ValueError(f"{size} bytes of JSON, over the limit of {max_bytes} ({setting})")
    return text


def check_seconds(value: Any, field: str, *, maximum: float, allow_zero: bool = False) -> float:
    """Return ``value`` as float seconds if it is a real, finite, non-boolean number in
    ``(0, maximum]`` (``[0, maximum]`` with ``allow_zero``). Raises ``ValueError`` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} must be a number of seconds, not {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int past float's range
        seconds = math.inf
    low_ok = seconds >= 0 if allow_zero else seconds > 0
    if not (math.isfinite(seconds) and low_ok and seconds <= maximum):
        low = "0" if allow_zero else "above 0"
        raise ValueError(f"{field} must be a finite number of seconds from {low} to {maximum:g}, not {_short_repr(value)}")
    return seconds


def check_flag(value: Any, field: str) -> bool:
    """Return ``value`` if it is a flag: ``True`` or ``False``.

    Args:
        value: what was given.
        field: the field, for the message.

    Returns:
        ``value``, unchanged.

    Raises:
        ValueError: anything else, naming ``field`` (``"no"``, ``0`` or ``None`` are not flags:
            a truthy string would silently mean True).
    """
    if not isinstance(value, bool):
        raise ValueError(f"{field} must be True or False, not {_short_repr(value)}")  # noqa: TRY004 - callers type it
    return value


def _short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (an int of 400 digits is not a message)."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are the same document once stored. Iterative: any depth is safe.

    Args:
        a: a JSON value (as given, or as a store gave it back).
        b: another.

    Returns:
        True if they are the same document: numbers compare by value (a store may give
        ``1e20`` back as ``100000000000000000000``), a boolean is never a number, a tuple is a
        list and dicts compare by keys whatever their order; False otherwise.
    """
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if isinstance(x, bool) or isinstance(y, bool):
            if not (isinstance(x, bool) and isinstance(y, bool) and x == y):
                return False
        elif isinstance(x, (int, float)) or isinstance(y, (int, float)):
            if not (isinstance(x, (int, float)) and isinstance(y, (int, float)) and x == y):
                return False
        elif isinstance(x, (list, tuple)) or isinstance(y, (list, tuple)):
            if not (isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)) and len(x) == len(y)):
                return False
            stack.extend(zip(x, y))
        elif isinstance(x, dict) or isinstance(y, dict):
            if not (isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys()):
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif x != y:  # strings, None
            return False
    return True
