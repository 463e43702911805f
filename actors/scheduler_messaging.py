"""The scheduler actor's messaging calls: threads, messages, read receipts, live delivery and
retention (``core.threads``).

Part of ``SchedulerActor`` (``omoi_ray.actors.scheduler``), which composes one class per concept.
Messaging shares the scheduler's one change log, so a handoff's task move and its thread outcome
commit together. Once a batch commits, each recipient agent gets its messages in one ``deliver``
call (fire and forget), and drivers parked in ``receive`` wake; nothing polls the database for
messages. ``receive`` reads the database only when a message addressed to its agent may have
committed after its cursor (memory knows each agent's latest since start-up). Closed threads
are pruned with their messages every ``PRUNE_EVERY`` seconds, once older than
``OMOI_THREAD_RETENTION`` (from the deadline timer, on the database thread).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from omoi_ray.actors.durable import exit_replaced, fire_and_forget

from omoi_ray.core.model import AgentStatus
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.core.threads import Post, differs
from omoi_ray.errors import (
    AgentNotFoundError,
    InvalidMessageError,
    MessageNotFoundError,
    OwnershipLostError,
    ThreadClosedError,
    ThreadExistsError,
    ThreadNotFoundError,
)
from omoi_ray.specs import messages as msg
from omoi_ray.specs.messages import MessageInfo, Page, ReceiptInfo, ThreadInfo

log = logging.getLogger("omoi_ray.scheduler")

#: how often closed threads past retention are pruned (seconds)
PRUNE_EVERY = 60.0


class MessagingCalls:
    """The messaging part of the scheduler actor (threads, messages, receipts, delivery)."""

    # ------------------------------------------------------------------ messaging API

    async def create_thread(
        self,
        type: str,  # noqa: A002 - the thread's type, named as everywhere else
        participants: Sequence[str],
        thread_id: str | None = None,
        created_by: str | None = None,
        ticket_id: str | None = None,
        task_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ThreadInfo:
        """Open a thread; called by the driver (``rt.messages.create_thread``) and handlers.

        Args:
            type: ``handoff``, ``review``, ``consultation`` or any name.
            participants: known agent names.
            thread_id: its id (None: a fresh ``th-...`` id).
            created_by, ticket_id, task_id: names, shown (not enforced).
            metadata: a JSON object.

        Returns:
            The thread's ``ThreadInfo``, once committed.

        Raises:
            InvalidMessageError: a bad field or an unknown participant; ThreadExistsError: the
                id is taken (active or closed). Nothing is stored then.
        """
        thread_id = msg.new_thread_id() if thread_id is None else msg.name(thread_id, "thread_id")
        kind = msg.name(type, "type")
        members = msg.names(participants, "participants")
        created_by = msg.optional_name(created_by, "created_by")
        ticket_id = msg.optional_name(ticket_id, "ticket_id")
        task_id = msg.optional_name(task_id, "task_id")
        metadata = msg.json_object(metadata, "metadata")
        if thread_id not in self.graph.threads.active:
            await self.commit.sync()
            if await self._db(self.store.thread_rows, [thread_id]):
                raise ThreadExistsError(f"thread '{thread_id}' already exists", thread_id=thread_id)
        thread = self.graph.threads.open(
            thread_id, kind, members, time.time(),
            created_by=created_by, ticket_id=ticket_id, task_id=task_id, metadata=metadata,
        )
        info = msg.thread_info(thread)
        self._after_change()
        await self.commit.sync()
        return info

    async def close_thread(self, thread_id: str, status: str = "resolved", outcome: dict[str, Any] | None = None) -> ThreadInfo:
        """Close an active thread as ``resolved`` or ``abandoned`` with an optional outcome
        (a JSON object); return its ``ThreadInfo`` once committed.

        Raises:
            InvalidMessageError: a bad id, status or outcome; ThreadClosedError: it is already
                closed; ThreadNotFoundError: no such thread.
        """
        thread_id = msg.name(thread_id, "thread_id")
        outcome = msg.json_object(outcome, "outcome")
        if thread_id not in self.graph.threads.active:
            await self._closed_or_unknown([thread_id])
        self.graph.threads.check_by_hand(thread_id)
        thread = self.graph.threads.close(thread_id, status, time.time(), outcome=outcome)
        info = msg.thread_info(thread)
        self._after_change()
        await self.commit.sync()
        return info

    async def send(
        self, thread: str, sender: str, body: Any, to: str | None = None, kind: str = "message"
    ) -> MessageInfo:
        """Post one message in a thread as ``sender``; return it once committed (its recipients'
        agents are handed it right after). See ``send_many``."""
        return (await self.send_many([{"thread": thread, "sender": sender, "body": body, "to": to, "kind": kind}]))[0]

    async def send_many(self, posts: Sequence[Any], repeat: bool = True) -> list[MessageInfo]:
        """Post messages, all or nothing; called by the driver (``rt.messages.send_many``) and
        handlers (``ctx.send_many``).

        Args:
            posts: mappings ``{"thread", "sender", "body", "to" (optional: None broadcasts),
                "kind" (optional), "id" (optional message id)}``.
            repeat: whether an earlier call may have stored these ids: then they are looked up
                once the earlier commits are done. The clients pass False on a call's first try
                when they chose every id themselves just now (none can be stored), so a first
                post neither waits for a commit nor reads the database; a later try, or ids the
                caller gave, pass True (the default).

        Returns:
            The ``MessageInfo`` of each, in order, once committed. A batch whose ids are already
            stored (the same call made again after a restart) is answered with the stored
            messages, and nothing is posted again.

        Raises:
            InvalidMessageError / MessageTooLargeError: a bad field or body, or ids another
                stored batch used; a ``repeat`` that is not a bool;
            NotParticipantError: a sender or recipient outside its thread;
            ThreadClosedError / ThreadNotFoundError: a thread that is closed or unknown.
            Nothing is stored then.
        """
        if not isinstance(repeat, bool):
            raise InvalidMessageError(f"repeat must be True or False, not {type(repeat).__name__}")
        checked = msg.parse_posts(posts, self.settings.message_max_bytes)
        ids = [p.id for p in checked if p.id is not None]
        if not ids:
            return await self._post(checked)
        # One call at a time per message id, from the stored-id check until its commit: two
        # calls with one id (a repeat racing its first try) must not both find it unstored.
        busy = [self.posting[i] for i in ids if i in self.posting]
        while busy:
            repeat = True  # another call holds one of these ids: it may store it first
            await asyncio.wait(set(busy))
            busy = [self.posting[i] for i in ids if i in self.posting]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for i in ids:
            self.posting[i] = done
        try:
            if repeat:
                await self.commit.sync()
                stored = await self._db(self.store.message_rows_by_id, ids)
                if stored:
                    return _posted_before(checked, stored)
            return await self._post(checked)
        finally:
            for i in ids:
                if self.posting.get(i) is done:
                    del self.posting[i]
            done.set_result(None)

    async def _post(self, checked: list[Post]) -> list[MessageInfo]:
        """Post checked posts whose ids are not stored (``send_many``); return them once committed."""
        elsewhere = [p.thread_id for p in checked if p.thread_id not in self.graph.threads.active]
        if elsewhere:
            await self._closed_or_unknown(elsewhere)
        for post in checked:
            self.graph.threads.check_by_hand(post.thread_id, post.kind)
        try:
            messages = self.graph.threads.post_many(checked, time.time())
        except ThreadNotFoundError:  # closed while this call awaited
            await self._closed_or_unknown([p.thread_id for p in checked if p.thread_id not in self.graph.threads.active])
            raise
        infos = [msg.message_info(m) for m in messages]
        self._after_change()
        await self.commit.sync()
        return infos

    async def mark_read(self, agent: str, message_ids: Sequence[str]) -> int:
        """Mark messages read by ``agent`` (idempotent: the first read time is kept); return how
        many were named.

        Raises:
            InvalidMessageError: a bad name or list; MessageNotFoundError: a message that was not
                addressed to ``agent`` (nothing is marked then).
        """
        agent = msg.name(agent, "agent")
        ids = list(dict.fromkeys(msg.names(message_ids, "message_ids", most=msg.MAX_BATCH)))
        await self.commit.sync()
        found = await self._db(self.store.addressed, ids, agent)
        missing = [i for i in ids if i not in found]
        if missing:
            raise MessageNotFoundError(
                f"no message '{missing[0]}' was addressed to '{agent}'", message_ids=missing, agent=agent
            )
        self.graph.threads.mark_read(ids, agent, time.time())
        self._after_change()
        await self.commit.sync()
        return len(ids)

    async def list_threads(
        self,
        participant: str | None = None,
        ticket_id: str | None = None,
        task_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Threads matching every filter given, newest first, a page at a time (``Page`` of
        ``ThreadInfo``; pass its ``cursor`` back for the next page)."""
        participant = msg.optional_name(participant, "participant")
        ticket_id = msg.optional_name(ticket_id, "ticket_id")
        task_id = msg.optional_name(task_id, "task_id")
        if status is not None and status not in ("active", "resolved", "abandoned"):
            raise msg.InvalidMessageError(f"status must be 'active', 'resolved' or 'abandoned', not {status!r}")
        limit = msg.limit(limit)
        before = msg.cursor(cursor)
        await self.commit.sync()
        rows = await self._db(
            functools.partial(
                self.store.list_threads, participant=participant, ticket_id=ticket_id, task_id=task_id,
                status=status, limit=limit, before=before,
            )
        )
        next_cursor = str(rows[-1]["pos"]) if len(rows) == limit else None
        return Page(items=[msg.thread_info_from_row(r) for r in rows], cursor=next_cursor)

    async def get_thread(self, thread_id: str) -> ThreadInfo:
        """One thread (``ThreadNotFoundError`` if unknown)."""
        thread_id = msg.name(thread_id, "thread_id")
        thread = self.graph.threads.active.get(thread_id)
        if thread is not None:
            return msg.thread_info(thread)
        await self.commit.sync()
        rows = await self._db(self.store.thread_rows, [thread_id])
        if not rows:
            raise ThreadNotFoundError(f"no thread with id '{thread_id}'", thread_ids=[thread_id])
        return msg.thread_info_from_row(rows[thread_id])

    async def messages(self, thread_id: str, cursor: str | None = None, limit: int = 100) -> Page:
        """A thread's messages oldest first, after ``cursor`` (``Page`` of ``MessageInfo``).

        Raises:
            ThreadNotFoundError: no such thread; InvalidMessageError: a bad id, cursor or limit.
        """
        thread_id = msg.name(thread_id, "thread_id")
        after = msg.cursor(cursor) or 0
        limit = msg.limit(limit)
        await self.commit.sync()
        if thread_id not in self.graph.threads.active and not await self._db(self.store.thread_rows, [thread_id]):
            raise ThreadNotFoundError(f"no thread with id '{thread_id}'", thread_ids=[thread_id])
        rows = await self._db(self.store.message_rows, thread_id, after, limit)
        return _message_page(rows, limit)

    async def unread(self, agent: str, limit: int = 100, cursor: str | None = None) -> Page:
        """Messages addressed to ``agent`` it has not marked read, across threads, oldest first
        (``Page`` of ``MessageInfo``). Raises ``AgentNotFoundError`` for an unknown agent."""
        agent = msg.name(agent, "agent")
        after = msg.cursor(cursor) or 0
        limit = msg.limit(limit)
        self._known_agent(agent)  # after the arguments: a bad argument is named whoever is asked for
        await self.commit.sync()
        rows = await self._db(functools.partial(self.store.unread_rows, agent, after, limit))
        return _message_page(rows, limit)

    async def receipts(self, message_id: str) -> list[ReceiptInfo]:
        """The receipts of one message, one per recipient (``MessageNotFoundError`` if none:
        no such message)."""
        message_id = msg.name(message_id, "message_id")
        await self.commit.sync()
        rows = await self._db(self.store.receipt_rows, [message_id])
        if not rows:
            raise MessageNotFoundError(f"no message with id '{message_id}'", message_ids=[message_id])
        return [msg.receipt_info_from_row(r) for r in rows]

    async def receive(self, agent: str, cursor: str | None = None, timeout: float = 30.0, limit: int = 1000) -> Page:
        """Long poll for messages addressed to ``agent`` (read or not) with ``seq`` after
        ``cursor`` (None: from now on), waiting up to ``timeout`` seconds for one to commit.

        Returns:
            A ``Page`` of ``MessageInfo`` (empty if none came in time) whose ``cursor`` is where
            the next call continues. Woken by commits, never by polling; the database is read
            only when a message for ``agent`` may lie after ``cursor`` (``_nothing_after``).
        """
        agent = msg.name(agent, "agent")
        timeout = msg.receive_timeout(timeout)
        limit = msg.limit(limit)
        after = msg.cursor(cursor)
        self._known_agent(agent)  # after the arguments: a bad argument is named whoever is asked for
        if after is None:
            after = self.graph.threads.next_seq - 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            woken: asyncio.Future[None] = loop.create_future()
            self.receivers.setdefault(agent, set()).add(woken)
            try:
                await self.commit.sync()
                rows = []
                if not self._nothing_after(agent, after):
                    rows = await self._db(functools.partial(self.store.unread_rows, agent, after, limit, unread_only=False))
                left = deadline - loop.time()
                if rows or left <= 0:
                    return _message_page(rows, limit, str(after))
                await asyncio.wait({woken}, timeout=left)
            finally:
                waiting = self.receivers.get(agent)
                if waiting is not None:
                    waiting.discard(woken)
                    if not waiting:
                        del self.receivers[agent]

    async def prune_threads(self) -> int:
        """Prune closed threads past ``OMOI_THREAD_RETENTION`` now; return how many went."""
        retention = self.settings.thread_retention
        if retention <= 0:
            return 0
        await self.commit.sync()
        return await self._db(self.store.prune_threads, time.time() - retention)

    def _nothing_after(self, agent: str, after: int) -> bool:
        """Whether memory proves that no committed message addressed to ``agent`` has a ``seq``
        above ``after`` (then ``receive`` parks without reading the database). Call right after
        ``commit.sync``: every commit so far has passed ``_deliver``, which notes its recipients."""
        return after >= self.stored_before and after >= self.addressed_up_to.get(agent, 0)

    def _known_agent(self, agent: Any) -> str:
        agent = msg.name(agent, "agent")
        if agent not in self.graph.agents:
            raise AgentNotFoundError(f"no agent named '{agent}'", agent=agent)
        return agent

    async def _closed_or_unknown(self, thread_ids: Sequence[str]) -> None:
        """Raise for the first of ``thread_ids`` not active: ``ThreadClosedError`` if stored
        closed, ``ThreadNotFoundError`` if unknown (after a commit sync: the database is current)."""
        await self.commit.sync()
        ids = [i for i in dict.fromkeys(thread_ids) if i not in self.graph.threads.active]
        if not ids:
            return
        rows = await self._db(self.store.thread_rows, ids)
        for thread_id in ids:
            if thread_id in self.graph.threads.active:
                continue
            row = rows.get(thread_id)
            if row is None:
                raise ThreadNotFoundError(f"no thread with id '{thread_id}'", thread_ids=[thread_id])
            raise ThreadClosedError(f"thread '{thread_id}' is {row['status']}", thread_id=thread_id, status=row["status"])

    def _deliver(self, batch: TaskChanges) -> None:
        """One ``deliver`` call per recipient agent with its committed messages, in ``seq``
        order (fire and forget: an agent that is gone reads them later from ``unread``)."""
        to: dict[str, list[str]] = {}
        up_to = self.addressed_up_to
        for receipt in batch.receipts:
            to.setdefault(receipt.message_id, []).append(receipt.recipient)
            if receipt.seq > up_to.get(receipt.recipient, 0):
                up_to[receipt.recipient] = receipt.seq
        by_agent: dict[str, list[MessageInfo]] = {}
        for message in batch.messages:
            info = None
            for agent_id in to.get(message.id, ()):
                info = info or msg.message_info(message)
                by_agent.setdefault(agent_id, []).append(info)
        loop = asyncio.get_running_loop()
        for agent_id, infos in by_agent.items():
            handle = self.handles.get(agent_id)
            agent = self.graph.agents.get(agent_id)
            if handle is not None and agent is not None and agent.status is AgentStatus.ALIVE:
                loop.create_task(fire_and_forget(handle.deliver.remote(infos)))
            for woken in self.receivers.get(agent_id, ()):
                if not woken.done():
                    woken.set_result(None)

    async def _prune(self) -> None:
        try:
            pruned = await self.prune_threads()
            if pruned:
                log.info("pruned %d closed thread(s) past retention", pruned)
        except OwnershipLostError as exc:  # replaced: this process may write nothing more
            exit_replaced(exc)
        except Exception as exc:  # noqa: BLE001 - tried again at the next round
            log.warning("could not prune closed threads (%s: %s)", type(exc).__name__, exc)


def _posted_before(posts: Sequence[Post], stored: dict[str, dict[str, Any]]) -> list[MessageInfo]:
    """The answer to a batch of posts made again (its ids are stored: its first try committed,
    then the scheduler restarted before answering): the stored messages, in order. A batch whose
    ids are only partly stored, or whose posts differ from the stored ones (``threads.differs``),
    is refused: its ids were reused for other posts, which are never silently dropped."""
    infos = []
    for i, post in enumerate(posts):
        row = stored.get(post.id) if post.id is not None else None
        if row is None:
            used = next(p.id for p in posts if p.id in stored)
            raise InvalidMessageError(
                f"posts[{i}] does not repeat the stored batch: message id '{used}' is already used; "
                "give every post a new id (or none)"
            )
        field = differs(post, Post(row["thread_id"], row["sender"], row["body"], row["to_agent"], row["kind"], row["id"]))
        if field is not None:
            raise InvalidMessageError(
                f"posts[{i}].id: message id '{post.id}' is already used for a different post (its {_FIELD[field]} "
                "differs); give every post a new id (or none)"
            )
        infos.append(msg.message_info_from_row(row))
    return infos


#: a post's fields as a caller names them
_FIELD = {"thread_id": "thread", "sender": "sender", "to": "recipient", "kind": "kind", "body": "body"}


def _message_page(rows: Sequence[Any], limit: int, cursor: str | None = None) -> Page:
    """A page of message rows: the cursor is the last row's ``seq`` (or ``cursor`` when empty)."""
    items = [msg.message_info_from_row(r) for r in rows]
    if items:
        cursor = str(items[-1].seq)
    return Page(items=items, cursor=cursor)
