"""Threads and messages at the edge: what a caller may pass, and the views it gets back.

Rules:
- Thread ids, types, message kinds and agent names are names (``NAME_PATTERN``, matched whole
  with ``re.fullmatch``): no NUL, no control character, at most 128 characters.
- A body or metadata is storable JSON (``omoi_ray.core.storable``); a body's compact JSON is at
  most ``OMOI_MESSAGE_MAX_BYTES`` bytes (``MessageTooLargeError`` above it). Metadata and an
  outcome are JSON objects of at most ``MAX_META_BYTES``. Each is taken in the shape it is stored
  in (a tuple becomes a list, a str or float subclass its plain value), so what a call returns,
  what agents are handed and what a later read gives are the same value.
- A list is a list: a bare string where participants or posts belong is an error.
- Limits are integers from 1 to ``MAX_PAGE``; cursors are the opaque strings a page returned.
- A post's optional ``id`` is a message id: 32 lowercase hex digits (``MESSAGE_ID_PATTERN``,
  ``core.model.new_message_id``), unique within its batch. Clients choose one per post before the first
  try, so the scheduler answers a post made again after its restart with the stored message.
- Every problem raises ``InvalidMessageError`` (or its subclass ``MessageTooLargeError``)
  naming the field; nothing was stored.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from omoi_ray.core.model import Message, Thread, new_message_id
from omoi_ray.core.storable import check_json, storable_json
from omoi_ray.core.threads import Post
from omoi_ray.errors import InvalidMessageError, MessageTooLargeError
from omoi_ray.specs.tasks import check_int, check_list, check_name

#: most participants of one thread
MAX_PARTICIPANTS = 256
#: largest metadata or outcome object (compact JSON, bytes)
MAX_META_BYTES = 64_000
#: most messages one ``send_many`` posts
MAX_BATCH = 10_000
#: most rows one page of threads, messages or unread messages holds
MAX_PAGE = 10_000
#: longest a driver's ``receive`` waits, in seconds
MAX_RECEIVE_S = 3600.0
#: a message id: 32 lowercase hex digits (the scheduler's own ids have the same shape)
MESSAGE_ID_PATTERN = re.compile(r"[0-9a-f]{32}")


class ThreadInfo(BaseModel):
    """A thread as the runtime reports it: ``participants`` in the order given, ``status``
    ``active``/``resolved``/``abandoned``, ``outcome`` once closed."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    status: str
    participants: list[str] = Field(default_factory=list)
    ticket_id: str | None = None
    task_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    outcome: dict[str, Any] | None = None
    created_by: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    closed_at: datetime | None = None


class MessageInfo(BaseModel):
    """A message as the runtime reports it: ``seq`` is its order, ``to`` None for a broadcast."""

    model_config = ConfigDict(frozen=True)

    id: str
    seq: int
    thread_id: str
    sender: str
    to: str | None = None
    kind: str = "message"
    body: Any = None
    created_at: datetime | None = None


class ReceiptInfo(BaseModel):
    """One recipient's copy of a message; ``read_at`` is None until first marked read."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    recipient: str
    thread_id: str
    read_at: datetime | None = None


class Page(BaseModel):
    """One page of a list: ``items`` and ``cursor``, passed back to continue after them.

    Threads: ``cursor`` is None once the list is exhausted. Messages (a thread's, unread,
    received): ``cursor`` is the last message's ``seq`` (the cursor given when the page is
    empty), so a caller can keep asking for what comes next.
    """

    model_config = ConfigDict(frozen=True)

    items: list[Any]
    cursor: str | None = None


def _utc(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


def thread_info(thread: Thread) -> ThreadInfo:
    """The view of a core ``Thread``."""
    return ThreadInfo(
        id=thread.id,
        type=thread.type,
        status=thread.status.value,
        participants=list(thread.participants),
        ticket_id=thread.ticket_id,
        task_id=thread.task_id,
        metadata=dict(thread.metadata),
        outcome=thread.outcome,
        created_by=thread.created_by,
        created_at=_utc(thread.created_at),
        updated_at=_utc(thread.updated_at),
        closed_at=_utc(thread.closed_at),
    )


def thread_info_from_row(r: Mapping[str, Any]) -> ThreadInfo:
    """The view of a stored ``threads`` row."""
    return ThreadInfo(
        id=r["id"],
        type=r["type"],
        status=r["status"],
        participants=list(r["participants"] or ()),
        ticket_id=r["ticket_id"],
        task_id=r["task_id"],
        metadata=dict(r["meta"] or {}),
        outcome=r["outcome"],
        created_by=r["created_by"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        closed_at=r["closed_at"],
    )


def message_info(message: Message) -> MessageInfo:
    """The view of a core ``Message``."""
    return MessageInfo(
        id=message.id,
        seq=message.seq,
        thread_id=message.thread_id,
        sender=message.sender,
        to=message.to,
        kind=message.kind,
        body=message.body,
        created_at=_utc(message.created_at),
    )


def message_info_from_row(r: Mapping[str, Any]) -> MessageInfo:
    """The view of a stored ``messages`` row."""
    return MessageInfo(
        id=r["id"],
        seq=r["seq"],
        thread_id=r["thread_id"],
        sender=r["sender"],
        to=r["to_agent"],
        kind=r["kind"],
        body=r["body"],
        created_at=r["created_at"],
    )


def receipt_info_from_row(r: Mapping[str, Any]) -> ReceiptInfo:
    """The view of a stored ``message_receipts`` row."""
    return ReceiptInfo(message_id=r["message_id"], recipient=r["recipient"], thread_id=r["thread_id"], read_at=r["read_at"])


# ------------------------------------------------------------------------------ checks


def name(value: Any, what: str) -> str:
    """``value`` if it is a name (thread id, type, kind, agent); ``InvalidMessageError`` otherwise."""
    try:
        return check_name(value, what)
    except ValueError as exc:
        raise InvalidMessageError(str(exc)) from None


def optional_name(value: Any, what: str) -> str | None:
    """As ``name``, None passing through."""
    return None if value is None else name(value, what)


def names(value: Any, what: str, *, most: int = MAX_PARTICIPANTS) -> list[str]:
    """A list of names (repeats kept; the core drops them); refuses a bare string."""
    try:
        items = list(check_list(value, what))
    except ValueError as exc:
        raise InvalidMessageError(str(exc)) from None
    if len(items) > most:
        raise InvalidMessageError(f"{what} holds {len(items)} names, over the limit of {most}")
    return [name(v, f"{what}[{i}]") for i, v in enumerate(items)]


def json_object(value: Any, what: str) -> dict[str, Any] | None:
    """``value`` as stored (tuples as lists), if it is None or a storable JSON object of at most
    ``MAX_META_BYTES``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidMessageError(f"{what} must be a JSON object (a dict), not {type(value).__name__}")
    try:
        text = storable_json(dict(value), what, max_bytes=MAX_META_BYTES, setting=f"the {what} limit")
    except (ValueError, RecursionError) as exc:
        raise InvalidMessageError(f"{what}: {exc}") from None
    return json.loads(text)  # as stored


def body(value: Any, max_bytes: int, what: str = "body") -> Any:
    """``value`` as stored (tuples as lists), if it is storable JSON of at most ``max_bytes``
    bytes as compact JSON.

    Raises:
        InvalidMessageError: not storable JSON (a NUL, NaN, a set...).
        MessageTooLargeError: larger than ``max_bytes`` (``OMOI_MESSAGE_MAX_BYTES``).
    """
    try:
        check_json(value, what)
    except (ValueError, RecursionError) as exc:
        raise InvalidMessageError(str(exc)) from None
    try:
        text = storable_json(value, what, max_bytes=max_bytes, setting="OMOI_MESSAGE_MAX_BYTES")
    except ValueError as exc:
        raise MessageTooLargeError(f"{what}: {exc}") from None
    return json.loads(text)


def limit(value: Any, what: str = "limit") -> int:
    """``value`` if it is an int from 1 to ``MAX_PAGE``."""
    try:
        return check_int(value, what, 1, MAX_PAGE)
    except ValueError as exc:
        raise InvalidMessageError(str(exc)) from None


MAX_CURSOR = 2**63 - 1  # a message ``seq`` is a BIGINT


def cursor(value: Any, what: str = "cursor") -> int | None:
    """The position a cursor stands for: a page's ``cursor`` string, or a message's ``seq`` (an
    int, or its digits); None means from the start. Raises ``InvalidMessageError`` naming
    ``what`` for anything else (a bool, a negative or oversized number, other text)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CURSOR:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= MAX_CURSOR:
        return int(value)
    raise InvalidMessageError(
        f"{what} must be a cursor string a previous page returned, or a message's seq (an int "
        f"from 0), not {value!r}"
    )


def new_thread_id() -> str:
    """A fresh thread id: ``th-`` and 16 random hex digits."""
    return f"th-{secrets.token_hex(8)}"


def with_ids(posts: Any) -> Any:
    """Give each post an id before a call's first try, so its retries are known as repeats.

    Args:
        posts: the posts of one send call, as the caller passed them.

    Returns:
        A new list: each mapping without an ``id`` gets a fresh one (``new_message_id``), the
        rest are kept as they are; ``posts`` itself if it is not a list or tuple (a bad shape
        goes on as is, for the scheduler to refuse naming it).
    """
    if not isinstance(posts, (list, tuple)):
        return posts
    return [{**p, "id": new_message_id()} if isinstance(p, Mapping) and "id" not in p else p for p in posts]


def gives_ids(posts: Any) -> bool:
    """Whether the caller gave a post its own ``id``: such a call may repeat one of the caller's
    own, so the scheduler looks its ids up even on its first try (``send_many``'s ``repeat``)."""
    return isinstance(posts, (list, tuple)) and any(isinstance(p, Mapping) and "id" in p for p in posts)


def message_id(value: Any, what: str) -> str:
    """``value`` if it is a message id (``MESSAGE_ID_PATTERN``); ``InvalidMessageError`` otherwise."""
    if not isinstance(value, str) or MESSAGE_ID_PATTERN.fullmatch(value) is None:
        raise InvalidMessageError(f"{what} must be a message id of 32 lowercase hex digits, not {value!r}")
    return value


def parse_post(item: Any, max_bytes: int, index: int | None = None) -> Post:
    """One post of ``send_many`` (a mapping with ``thread``, ``sender``, ``body`` and optional
    ``to`` and ``kind``), checked."""
    where = "post" if index is None else f"posts[{index}]"
    if not isinstance(item, Mapping):
        raise InvalidMessageError(f"{where} must be a mapping with thread, sender and body, not {type(item).__name__}")
    extra = set(item) - {"thread", "sender", "body", "to", "kind", "id"}
    if extra:
        raise InvalidMessageError(f"{where} has unknown field(s) {sorted(map(str, extra))}")
    for key in ("thread", "sender", "body"):
        if key not in item:
            raise InvalidMessageError(f"{where} lacks '{key}'")
    return Post(
        thread_id=name(item["thread"], f"{where}.thread"),
        sender=name(item["sender"], f"{where}.sender"),
        body=body(item["body"], max_bytes, f"{where}.body"),
        to=optional_name(item.get("to"), f"{where}.to"),
        kind=name(item.get("kind", "message"), f"{where}.kind"),
        id=None if item.get("id") is None else message_id(item["id"], f"{where}.id"),
    )


def parse_posts(items: Any, max_bytes: int) -> list[Post]:
    """Every post of a batch, checked whole before anything is sent (all or nothing)."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, (list, tuple)):
        raise InvalidMessageError(f"posts must be a list of mappings, not {type(items).__name__}")
    if len(items) > MAX_BATCH:
        raise InvalidMessageError(f"posts holds {len(items)} messages, over the limit of {MAX_BATCH}")
    posts = [parse_post(item, max_bytes, i) for i, item in enumerate(items)]
    seen: set[str] = set()
    for i, post in enumerate(posts):
        if post.id is not None:
            if post.id in seen:
                raise InvalidMessageError(f"posts[{i}].id '{post.id}' repeats an earlier post's id")
            seen.add(post.id)
    return posts


def receive_timeout(value: Any) -> float:
    """A ``receive`` wait in seconds: a finite, non-boolean number from 0 to ``MAX_RECEIVE_S``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_RECEIVE_S:
        raise InvalidMessageError(f"timeout must be a number of seconds from 0 to {MAX_RECEIVE_S:g}, not {value!r}")
    return float(value)
