"""Threads and messages between agents: who may post where, who gets a copy, when a thread ends.

``Threads`` is a part of the scheduler core (``TaskGraph.threads``): it records into the
scheduler's one change log, so a message, a thread's outcome and a task's move decided together
are committed in one transaction. It keeps the active threads in memory (restored at start-up);
closed threads, messages and receipts live in the database only.

Rules:
- A thread has a type (``handoff``, ``review``, ``consultation`` or any name), participants
  (known agent names, at least one, kept in the order given without repeats) and a status:
  ``active`` until closed ``resolved`` or ``abandoned``, once (``CLOSE_TO``).
- Only a participant posts, and only in an active thread. A message goes to one other
  participant (``to``) or, broadcast (``to=None``), to every participant but its sender.
- One receipt per recipient: a broadcast in a thread of six participants has five receipts; the
  sender gets none (it has read what it wrote). ``mark_read`` keeps the first read time.
- ``seq`` numbers messages in posting order across all threads (the cursor order); a restart
  continues after the largest stored one.
- A batch of posts (``post_many``) is checked whole before any is recorded: all or nothing.
- A post may carry its message id (the callers' clients choose one per post before the first
  try, so a post made again after a scheduler restart is recognised and not stored twice). A
  stored id answers only the same post: same thread, sender, recipient, kind and body
  (``differs``); any other post under it is refused, never dropped.
- A thread a protocol of the scheduler owns (a hand-off's: type ``handoff`` with an
  ``offer_id`` in its metadata) is written and closed by that protocol only, and message kinds
  under ``PROTOCOL_KIND_PREFIXES`` are the protocols' own: posts and closes by hand
  (``check_by_hand``) are refused, so a thread's record never contradicts its offer.
- Events: ``agent.collab.started`` (open), ``agent.message.sent`` (post; its payload carries the
  body only when the body's compact JSON is at most ``EVENT_BODY_MAX_BYTES``),
  ``agent.collab.ended`` (close). Entity: the thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from omoi_ray.core.changes import ChangeRecorder
from omoi_ray.core.model import Agent, Event, Message, Receipt, Thread, ThreadStatus, new_message_id
from omoi_ray.core.storable import same_json
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.errors import (
    InvalidMessageError,
    NotParticipantError,
    ThreadExistsError,
    ThreadNotFoundError,
)

#: largest body (compact JSON, bytes) an ``agent.message.sent`` event carries; larger bodies are
#: left out of the event (read the message itself)
EVENT_BODY_MAX_BYTES = 1024

#: message kinds only the scheduler's protocols post (hand-off offers and answers)
PROTOCOL_KIND_PREFIXES: tuple[str, ...] = ("handoff.",)

#: the statuses a thread may be closed with
CLOSE_TO = frozenset({ThreadStatus.RESOLVED, ThreadStatus.ABANDONED})


class Post(NamedTuple):
    """One message to post (``Threads.post_many``): as ``Threads.post``'s arguments."""

    thread_id: str
    sender: str
    body: Any
    to: str | None = None
    kind: str = "message"
    id: str | None = None  # chosen by the caller (so a repeated post is recognised), else made here


class Threads:
    """The active threads and the posting rules.

    Args:
        log: the scheduler's change log (``threads``, ``messages``, ``receipts``, ``reads``,
            ``events`` are recorded into it).
        agents: agent name -> agent (``TaskGraph.agents``): participants must be known there.

    Attributes:
        active: thread id -> every active thread.
        next_seq: the ``seq`` the next message gets.
    """

    def __init__(self, log: ChangeRecorder[TaskChanges], agents: Mapping[str, Agent]) -> None:
        self.log = log
        self.agents = agents
        self.active: dict[str, Thread] = {}
        self.next_seq = 1

    def restore(self, threads: Iterable[Thread], next_seq: int) -> None:
        """Hold the stored active threads again; messages continue at ``next_seq`` (at least)."""
        for thread in threads:
            if thread.status is ThreadStatus.ACTIVE:
                self.active[thread.id] = thread
        self.next_seq = max(self.next_seq, next_seq)

    # ---------------------------------------------------------------- threads

    def open(
        self,
        thread_id: str,
        type: str,  # noqa: A002 - the thread's type, named as everywhere else
        participants: Sequence[str],
        now: float,
        *,
        created_by: str | None = None,
        ticket_id: str | None = None,
        task_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Thread:
        """Open an active thread.

        Args:
            thread_id: its id (unique among active threads; the owner checks closed ones).
            type: ``handoff``, ``review``, ``consultation`` or any name.
            participants: known agent names (repeats are dropped, order kept).
            now: the caller's clock reading (seconds).
            created_by: who opened it (an agent name, or None for a driver).
            ticket_id, task_id: what it is about (shown, not enforced).
            metadata: any storable JSON object (checked at the edge).

        Returns:
            The new thread (recorded with an ``agent.collab.started`` event).

        Raises:
            ThreadExistsError: an active thread has this id.
            InvalidMessageError: no participants, or one that is not a known agent.
        """
        if thread_id in self.active:
            raise ThreadExistsError(f"thread '{thread_id}' already exists", thread_id=thread_id)
        members = tuple(dict.fromkeys(participants))
        if not members:
            raise InvalidMessageError(f"thread '{thread_id}' needs at least one participant")
        unknown = [p for p in members if p not in self.agents]
        if unknown:
            raise InvalidMessageError(
                f"thread '{thread_id}': participant '{unknown[0]}' is not a known agent", participants=unknown
            )
        thread = Thread(
            id=thread_id,
            type=type,
            participants=members,
            created_at=now,
            updated_at=now,
            ticket_id=ticket_id,
            task_id=task_id,
            metadata=dict(metadata or {}),
            created_by=created_by,
        )
        self.active[thread_id] = thread
        self.log.threads.add(thread)
        self._emit("agent.collab.started", thread, now, created_by, {
            "type": type,
            "participants": list(members),
            "created_by": created_by,
            "ticket_id": ticket_id,
            "task_id": task_id,
        })
        return thread

    def close(self, thread_id: str, status: ThreadStatus | str, now: float, *, outcome: dict[str, Any] | None = None) -> Thread:
        """Close an active thread as ``resolved`` or ``abandoned``, recording ``outcome``.

        Returns:
            The closed thread (recorded with an ``agent.collab.ended`` event); it leaves memory.

        Raises:
            InvalidMessageError: ``status`` is not ``resolved`` or ``abandoned``.
            ThreadNotFoundError: no active thread has this id (the owner tells a closed one
                from an unknown one: ``ThreadClosedError``).
        """
        try:
            new = ThreadStatus(status)
        except ValueError:
            new = None
        if new not in CLOSE_TO:
            raise InvalidMessageError(f"thread '{thread_id}': close status must be 'resolved' or 'abandoned', not {status!r}")
        thread = self.get(thread_id)
        thread.status = new  # type: ignore[assignment]
        thread.outcome = None if outcome is None else dict(outcome)
        thread.updated_at = thread.closed_at = now
        del self.active[thread_id]
        self.log.threads.add(thread)
        self._emit("agent.collab.ended", thread, now, None, {"status": thread.status.value, "outcome": thread.outcome})
        return thread

    def check_by_hand(self, thread_id: str, kind: str | None = None) -> None:
        """Refuse a post (of ``kind``) or, with ``kind`` None, a close made by hand (a driver or a
        handler, not a protocol of the scheduler) that only a protocol may make.

        Raises:
            InvalidMessageError: the thread belongs to a hand-off offer, or ``kind`` is a
                protocol's (``PROTOCOL_KIND_PREFIXES``). Changes nothing.
        """
        if kind is not None and kind.startswith(PROTOCOL_KIND_PREFIXES):
            raise InvalidMessageError(
                f"message kind '{kind}' is the scheduler's own (hand-off offers and answers); "
                f"answer an offer with accept/decline"
            )
        thread = self.active.get(thread_id)
        if thread is not None and thread.type == "handoff" and "offer_id" in thread.metadata:
            what = "posted to" if kind is not None else "closed"
            raise InvalidMessageError(
                f"thread '{thread_id}' belongs to hand-off offer '{thread.metadata['offer_id']}': it is "
                f"{what} by the hand-off only (answer with accept/decline)"
            )

    def get(self, thread_id: str) -> Thread:
        """The active thread ``thread_id``; ``ThreadNotFoundError`` if none is active."""
        thread = self.active.get(thread_id)
        if thread is None:
            raise ThreadNotFoundError(f"no active thread with id '{thread_id}'", thread_ids=[thread_id])
        return thread

    # ---------------------------------------------------------------- messages

    def check(self, post: Post) -> Thread:
        """Raise the error ``post`` would meet, changing nothing; return its thread.

        Raises:
            ThreadNotFoundError: its thread is not active (the owner tells closed from unknown).
            NotParticipantError: the sender, or the recipient, is not a participant.
            InvalidMessageError: a direct message to its own sender.
        """
        thread = self.get(post.thread_id)
        if post.sender not in thread.participants:
            raise NotParticipantError(
                f"'{post.sender}' is not a participant of thread '{thread.id}'", thread_id=thread.id, agent=post.sender
            )
        if post.to is not None:
            if post.to not in thread.participants:
                raise NotParticipantError(
                    f"recipient '{post.to}' is not a participant of thread '{thread.id}'", thread_id=thread.id, agent=post.to
                )
            if post.to == post.sender:
                raise InvalidMessageError(f"'{post.sender}' cannot send a message to itself (thread '{thread.id}')")
        return thread

    def post(self, thread_id: str, sender: str, body: Any, now: float, *, to: str | None = None, kind: str = "message") -> Message:
        """Post one message (see ``post_many``)."""
        return self.post_many([Post(thread_id, sender, body, to, kind)], now)[0]

    def post_many(self, posts: Sequence[Post], now: float) -> list[Message]:
        """Post messages, all or nothing: every post is checked (``check``) before any is recorded.

        Args:
            posts: the messages, in order (bodies already checked at the edge).
            now: the caller's clock reading (seconds).

        Returns:
            The messages in order, each with its ``seq``; each is recorded with one receipt per
            recipient and an ``agent.message.sent`` event.

        Raises:
            As ``check``, for the first post at fault; nothing is recorded then.
        """
        threads = [self.check(p) for p in posts]
        out = []
        for post, thread in zip(posts, threads, strict=True):
            message = Message(
                id=post.id or new_message_id(),
                seq=self.next_seq,
                thread_id=thread.id,
                sender=post.sender,
                to=post.to,
                body=post.body,
                created_at=now,
                kind=post.kind,
            )
            self.next_seq += 1
            self.log.messages.add(message)
            for recipient in recipients(thread, message):
                self.log.receipts.add(Receipt(message.id, thread.id, recipient, message.seq))
            payload: dict[str, Any] = {
                "thread_id": thread.id,
                "message_id": message.id,
                "sender": message.sender,
                "to": message.to,
                "kind": message.kind,
            }
            if _json_bytes(message.body) <= EVENT_BODY_MAX_BYTES:
                payload["body"] = message.body
            self._emit("agent.message.sent", thread, now, message.sender, payload)
            out.append(message)
        return out

    def mark_read(self, message_ids: Iterable[str], recipient: str, now: float) -> None:
        """Record that ``recipient`` read these messages at ``now`` (the owner checked that each
        was addressed to it; the store keeps the first read time of each receipt)."""
        for message_id in dict.fromkeys(message_ids):
            self.log.reads.add((message_id, recipient, now))

    # ---------------------------------------------------------------- internals

    def _emit(self, type: str, thread: Thread, now: float, agent_id: str | None, payload: dict[str, Any]) -> None:  # noqa: A002
        self.log.events.add(
            Event(type=type, entity_type="thread", entity_id=thread.id, at=now, payload=payload, agent_id=agent_id)
        )


def recipients(thread: Thread, message: Message) -> tuple[str, ...]:
    """Who gets a receipt of ``message``: its ``to``, or every participant but the sender."""
    if message.to is not None:
        return (message.to,)
    return tuple(p for p in thread.participants if p != message.sender)


def differs(post: Post, stored: Post) -> str | None:
    """The first field in which ``post`` differs from ``stored``, the post already stored under
    its message id (None: ``post`` repeats it, and is answered with the stored message). Bodies
    compare as stored JSON (``same_json``)."""
    for field in ("thread_id", "sender", "to", "kind"):
        if getattr(post, field) != getattr(stored, field):
            return field
    if not same_json(post.body, stored.body):
        return "body"
    return None


def _json_bytes(value: Any) -> int:
    """Size of ``value`` as compact JSON, in bytes (values reaching the core are storable JSON)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
