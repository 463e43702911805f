"""``rt.messages``: threads between agents, their messages and read receipts, from a driver.

    th = rt.messages.create_thread("review", ["writer", "reviewer"], task_id="draft")
    rt.messages.send(th.id, "writer", {"text": "please review"}, to="reviewer")
    for m in rt.messages.unread("reviewer").items: ...
    async for m in rt.messages.follow(agent="reviewer"): ...   # live, as messages commit

Rules:
- Every call goes to the scheduler, the one writer of threads and messages; it answers once its
  change is committed. Arguments are checked there (``omoi_ray.specs.messages``), before
  anything is stored; errors arrive as their typed ``omoi_ray.errors`` classes.
- A driver posts on an agent's behalf: ``sender`` must be a participant of the thread.
- ``receive`` is a long poll on the scheduler, woken by commits; ``follow`` is an async iterator
  over it. Neither polls the database.
- Each call is defined once and offered blocking and awaitable (``_async``).
- Calls made again after a scheduler restart do not act twice: each post gets a message id
  here, before the first try (a repeated batch is answered with the stored messages); a new
  thread gets its id here too, and a repeated create or close that finds its own work done
  (``ThreadExistsError``, ``ThreadClosedError``) reads the thread and answers with it (its
  metadata or outcome compared as stored JSON: a tuple given is the list stored).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from omoi_ray.client.calls import Repeated, Step, Steps, drive_async, flavours, telling_repeats
from omoi_ray.core.storable import same_json
from omoi_ray.errors import InvalidMessageError, ThreadClosedError, ThreadExistsError
from omoi_ray.specs.messages import MessageInfo, Page, ReceiptInfo, ThreadInfo, gives_ids, new_thread_id, with_ids

if TYPE_CHECKING:
    from omoi_ray.client.runtime import Runtime

#: seconds one ``receive`` parks at the scheduler inside ``follow``
FOLLOW_STEP_S = 30.0


class Messages:
    """The threads and messages of one runtime (``rt.messages``); every call also has an
    ``_async`` flavour."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def __repr__(self) -> str:
        return f"<messages of {self._rt!r}>"

    def _on_scheduler(self, method: str, *args: Any, if_repeated: Any = None, **kwargs: Any) -> Step:
        return Step(lambda: getattr(self._rt.scheduler, method).remote(*args, **kwargs), if_repeated=if_repeated)

    def _thread_if_done(self, thread_id: str, method: str, *args: Any, error: type[Exception],
                        done: Any) -> Steps[ThreadInfo]:
        """A call on thread ``thread_id`` that, made again after a restart, may find its own work
        done (``error``): then the thread is read, and if ``done(thread)`` it is the answer; else
        ``error`` stands."""
        answer = yield self._on_scheduler(method, *args, if_repeated=lambda exc: Repeated.of(exc, error))
        if not isinstance(answer, Repeated):
            return answer
        thread = yield self._on_scheduler("get_thread", thread_id)
        if done(thread):
            return thread
        raise answer.error

    def _create_thread(
        self,
        type: str,  # noqa: A002 - the thread's type
        participants: Sequence[str],
        *,
        thread_id: str | None = None,
        created_by: str | None = None,
        ticket_id: str | None = None,
        task_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Steps[ThreadInfo]:
        """Open a thread.

        Args:
            type: ``"handoff"``, ``"review"``, ``"consultation"`` or any name.
            participants: a list of known agent names (repeats are dropped).
            thread_id: its id (None: a fresh ``th-<16 hex>``).
            created_by, ticket_id, task_id: names, shown (not enforced).
            metadata: a JSON object (at most 64 kB).

        Returns:
            Its ``ThreadInfo`` (``status`` ``"active"``).

        Raises:
            InvalidMessageError: a bad field, or a participant that is not a known agent.
            ThreadExistsError: the id is taken.
        """
        if thread_id is None:
            if isinstance(participants, (list, tuple)) and not participants:
                raise InvalidMessageError("a new thread needs at least one participant")
            thread_id = new_thread_id()

        def done(th: ThreadInfo) -> bool:
            asked = list(dict.fromkeys(participants)) if isinstance(participants, (list, tuple)) else None
            return (th.type, th.participants, th.created_by, th.ticket_id, th.task_id) == (
                type, asked, created_by, ticket_id, task_id) and same_json(th.metadata, metadata or {})

        return (yield from self._thread_if_done(
            thread_id, "create_thread", type, participants, thread_id, created_by, ticket_id, task_id, metadata,
            error=ThreadExistsError, done=done,
        ))

    create_thread, create_thread_async = flavours(_create_thread)

    def _close_thread(self, thread_id: str, status: str = "resolved", *, outcome: dict[str, Any] | None = None) -> Steps[ThreadInfo]:
        """Close a thread as ``"resolved"`` or ``"abandoned"``, recording ``outcome`` (a JSON object).

        Raises:
            InvalidMessageError: a bad status or outcome; ThreadClosedError: already closed;
                ThreadNotFoundError: unknown id.
        """
        return (yield from self._thread_if_done(
            thread_id, "close_thread", thread_id, status, outcome, error=ThreadClosedError,
            done=lambda th: th.status == status and same_json(th.outcome, outcome),  # as stored
        ))

    close_thread, close_thread_async = flavours(_close_thread)

    def _thread(self, thread_id: str) -> Steps[ThreadInfo]:
        """One thread's ``ThreadInfo`` (``ThreadNotFoundError`` if unknown)."""
        return (yield self._on_scheduler("get_thread", thread_id))

    thread, thread_async = flavours(_thread)

    def _threads(
        self,
        *,
        participant: str | None = None,
        ticket_id: str | None = None,
        task_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Steps[Page]:
        """Threads matching every filter given, newest first.

        Returns:
            A ``Page``: ``items`` (``ThreadInfo``s, at most ``limit``, 1-10000) and ``cursor``
            (pass it back for the next page; None after the last).
        """
        return (yield self._on_scheduler("list_threads", participant, ticket_id, task_id, status, limit, cursor))

    threads, threads_async = flavours(_threads)

    def _send(self, thread: str, sender: str, body: Any, *, to: str | None = None, kind: str = "message") -> Steps[MessageInfo]:
        """Post a message in ``thread`` as ``sender`` (a participant).

        Args:
            thread: the thread's id.
            sender: a participant (the driver posts on its behalf).
            body: any JSON value, at most ``OMOI_MESSAGE_MAX_BYTES`` as compact JSON.
            to: one other participant, or None to broadcast to every other participant.
            kind: ``"message"`` unless a protocol says otherwise (a name).

        Returns:
            The committed ``MessageInfo`` (``seq`` is its order).

        Raises:
            InvalidMessageError, MessageTooLargeError: a bad field or body.
            NotParticipantError: ``sender`` or ``to`` is not a participant.
            ThreadClosedError, ThreadNotFoundError: the thread is closed, or unknown.
        """
        posts = [{"thread": thread, "sender": sender, "body": body, "to": to, "kind": kind}]
        return (yield self._posting(posts))[0]

    send, send_async = flavours(_send)

    def _send_many(self, posts: Sequence[dict[str, Any]]) -> Steps[list[MessageInfo]]:
        """Post several messages, all or nothing.

        Args:
            posts: a list of ``{"thread", "sender", "body", "to" (optional), "kind" (optional)}``
                (at most 10000).

        Returns:
            Their ``MessageInfo``s, in order.

        Raises:
            As ``send``, for the first post at fault; nothing is stored then.
        """
        return (yield self._posting(posts))

    send_many, send_many_async = flavours(_send_many)

    def _posting(self, posts: Any) -> Step:
        """The ``send_many`` call of ``posts``, each with a message id chosen here, before its
        first try: the scheduler looks the ids up only when the call may repeat an earlier one
        (a later try, or ids the caller gave), so a first post does not read the database."""
        given, posts = gives_ids(posts), with_ids(posts)
        return Step(telling_repeats(lambda again: self._rt.scheduler.send_many.remote(posts, again or given)))

    def _mark_read(self, agent: str, message_ids: Sequence[str]) -> Steps[int]:
        """Mark messages read by ``agent``; the first read time is kept (idempotent).

        Returns:
            How many messages were named.

        Raises:
            MessageNotFoundError: a message that was not addressed to ``agent`` (nothing marked).
        """
        return (yield self._on_scheduler("mark_read", agent, message_ids))

    mark_read, mark_read_async = flavours(_mark_read)

    def _messages(self, thread_id: str, *, cursor: str | None = None, limit: int = 100) -> Steps[Page]:
        """A thread's messages oldest first, after ``cursor``.

        Returns:
            A ``Page`` of ``MessageInfo``s; its ``cursor`` continues after the last one.

        Raises:
            ThreadNotFoundError: unknown thread.
        """
        return (yield self._on_scheduler("messages", thread_id, cursor, limit))

    messages, messages_async = flavours(_messages)

    def _unread(self, agent: str, *, limit: int = 100, cursor: str | None = None) -> Steps[Page]:
        """Messages addressed to ``agent`` and not marked read, across threads, oldest first.

        Returns:
            A ``Page`` of ``MessageInfo``s; its ``cursor`` continues after the last one.

        Raises:
            AgentNotFoundError: unknown agent.
        """
        return (yield self._on_scheduler("unread", agent, limit, cursor))

    unread, unread_async = flavours(_unread)

    def _receipts(self, message_id: str) -> Steps[list[ReceiptInfo]]:
        """A message's receipts, one per recipient (``read_at`` None while unread).

        Raises:
            MessageNotFoundError: unknown message.
        """
        return (yield self._on_scheduler("receipts", message_id))

    receipts, receipts_async = flavours(_receipts)

    def _receive(self, agent: str, *, cursor: str | None = None, timeout: float = 30.0, limit: int = 1000) -> Steps[Page]:
        """Wait up to ``timeout`` seconds (0-3600) for messages addressed to ``agent`` after
        ``cursor`` (None: from now on), read or not.

        Returns:
            A ``Page`` of ``MessageInfo``s (empty if none came in time); pass its ``cursor`` to
            the next call.

        Raises:
            AgentNotFoundError: unknown agent; InvalidMessageError: a bad argument.
        """
        return (yield Step(
            lambda: self._rt.scheduler.receive.remote(agent, cursor, timeout, limit),
            timeout=None,
        ))

    receive, receive_async = flavours(_receive)

    async def follow(self, agent: str, *, cursor: str | None = None) -> AsyncIterator[MessageInfo]:
        """Messages addressed to ``agent`` as they commit, forever (until the caller stops).

        Args:
            agent: a known agent name.
            cursor: continue after this cursor (None: only messages committed from now on).

        Yields:
            ``MessageInfo``s in ``seq`` order, each once.

        Raises:
            AgentNotFoundError, InvalidMessageError: at the first iteration.
        """
        page = await drive_async(self._receive(agent, cursor=cursor, timeout=0))
        cursor = page.cursor
        for message in page.items:
            yield message
        while True:
            page = await drive_async(self._receive(agent, cursor=cursor, timeout=FOLLOW_STEP_S))
            cursor = page.cursor
            for message in page.items:
                yield message
