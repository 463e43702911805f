"""Negotiated hand-offs: an agent offers the task it holds to others; the first valid acceptance
moves the task to the acceptor as a new attempt.

``Handoffs`` is a part of ``TaskGraph`` (like ``Claims`` and ``AgentRegistry``): it records into
the scheduler's one change log, so an offer, the task's move, the thread's outcome and their
events commit in one transaction.

An offer's states are one table, ``ACTIONS`` (state, action) -> (new state, event)::

    open --accept--------> accepted    (the task moved to the acceptor's new attempt)
    open --decline-------> open        (one target declined; the others may still accept)
    open --decline_last--> declined    (every target declined: nothing moves)
    open --expire--------> expired     (the deadline passed: nothing moves)
    open --withdraw------> withdrawn   (the offering attempt ended first: completed, failed,
                                        lost, cancelled, timed out)

Rules:
- Only the agent holding the task's current attempt (``claimed`` or ``running``) offers it, to a
  list of alive agents (not itself), or to every healthy agent other than itself whose
  capabilities include the asked ones, at offer time, in the registry's ranking order
  (``core.ranking.search``: the order a search would list them). Every target must also have the capabilities the task
  requires and handle its type (``Agent.can_run``). One open offer per task.
- While the offer is open the offering attempt keeps running; when it ends, the offer is
  withdrawn (``attempt_ended``, called by ``Claims.end_attempt``).
- The first valid acceptance wins, in one synchronous call: the offering attempt ends
  ``handed_off`` (not charged to ``max_retries``; its handler is told to stop and its later
  result is stale), its locks are let go (``TaskChanges.abandoned``), and the acceptor claims
  the task as a new attempt (claim request id ``handoff:<offer id>``, so it is delivered to the
  acceptor by its next ``exchange`` even after a scheduler restart).
- An acceptor must be a target, alive and healthy (not ``stale``: a stale agent gets no new
  work), with a lease that has not run out, and a free slot, and, as registered at accept time
  (it may have re-registered or changed its capabilities since the offer), have the offer's and
  the task's capabilities and handle the task's type;
  otherwise a typed error and nothing changes (the offer stays open).
- When every target declined, or the deadline passed, the task stays with the offering attempt
  (nothing moves); if that attempt is gone, the offer was withdrawn when it ended and the task is
  wherever the usual rules put it.
- Misuse raises a typed error (``omoi_ray.errors``: ``HandoffNotFoundError``,
  ``HandoffClosedError`` naming the winner / expiry / declines, ``NotOfferedError``,
  ``NotHolderError``, ``HandoffPendingError``, ``AcceptorUnavailableError``,
  ``InvalidHandoffError``) and changes nothing.
- With a threads part (``threads``), each offer opens a thread of type ``handoff`` (participants:
  the offerer and the targets) with an offer message (kind ``handoff.offer``); answers are posted
  to it (``handoff.accepted``, ``handoff.declined``) and the thread is closed with the outcome:
  ``resolved`` when accepted or declined, ``abandoned`` when expired or withdrawn.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from omoi_ray.core.changes import ChangeRecorder
from omoi_ray.core.health import AgentHealth
from omoi_ray.core.model import Agent, AgentStatus, AttemptOutcome, Event, Task
from omoi_ray.core.ranking import Query, search
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.core.tasks import ACTIVE, TaskStatus
from omoi_ray.core.timers import Timers
from omoi_ray.errors import (
    AcceptorUnavailableError,
    AgentNotFoundError,
    HandoffClosedError,
    HandoffNotFoundError,
    HandoffPendingError,
    InvalidHandoffError,
    NotHolderError,
    NotOfferedError,
)

#: the claim request id of an attempt that came from a hand-off (its prefix, then the offer id)
REQUEST_PREFIX = "handoff:"
#: closed offers remembered in memory (answers to them name the outcome without a database read)
RECENTLY_CLOSED = 4096
#: the thread type of hand-off threads, and the kinds of the messages posted in them
THREAD_TYPE = "handoff"
OFFER_KIND, ACCEPTED_KIND, DECLINED_KIND = "handoff.offer", "handoff.accepted", "handoff.declined"


class HandoffStatus(str, Enum):
    """Where an offer stands (its stored value)."""

    OPEN = "open"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


H = HandoffStatus

#: (state, action) -> (new state, event type): the only moves an offer makes
ACTIONS: dict[tuple[HandoffStatus, str], tuple[HandoffStatus, str]] = {
    (H.OPEN, "accept"): (H.ACCEPTED, "agent.handoff.accepted"),
    (H.OPEN, "decline"): (H.OPEN, "agent.handoff.declined"),
    (H.OPEN, "decline_last"): (H.DECLINED, "agent.handoff.declined"),
    (H.OPEN, "expire"): (H.EXPIRED, "agent.handoff.expired"),
    (H.OPEN, "withdraw"): (H.WITHDRAWN, "agent.handoff.withdrawn"),
}
#: the thread status each closed offer leaves its thread in
THREAD_STATUS: dict[HandoffStatus, str] = {
    H.ACCEPTED: "resolved", H.DECLINED: "resolved", H.EXPIRED: "abandoned", H.WITHDRAWN: "abandoned",
}
CLOSED: frozenset[HandoffStatus] = frozenset(s for s in HandoffStatus if s is not H.OPEN)


class HandoffContext(NamedTuple):
    """What the acceptor's handler sees as ``ctx.handoff``: the offer it accepted (a tuple: it
    crosses Ray with the ``Assignment``)."""

    offer_id: str
    from_agent: str
    reason: str
    context: Any
    thread_id: str | None = None


@dataclass(slots=True)
class Handoff:
    """One offer of one task by the agent holding its attempt ``attempt``.

    Times are seconds since the epoch (``deadline`` absolute). ``targets`` are agent names (for
    an offer by capabilities, the alive agents that had them at offer time); ``declines`` maps
    each target that declined to its reason; ``accepted_by`` and ``new_attempt`` are set once
    accepted; ``closed_reason`` says why it closed.
    """

    id: str
    task_id: str
    attempt: int
    from_agent: str
    from_incarnation: str
    targets: tuple[str, ...]
    reason: str
    context: Any
    deadline: float
    created_at: float
    capabilities: tuple[str, ...] | None = None
    status: HandoffStatus = H.OPEN
    thread_id: str | None = None
    declines: dict[str, str] = field(default_factory=dict)
    accepted_by: str | None = None
    new_attempt: int | None = None
    closed_at: float | None = None
    closed_reason: str | None = None
    updated_at: float = 0.0

    def context_for_acceptor(self) -> HandoffContext:
        """The ``HandoffContext`` the acceptor's handler gets."""
        return HandoffContext(self.id, self.from_agent, self.reason, self.context, self.thread_id)


def next_status(offer: Handoff, action: str) -> tuple[HandoffStatus, str]:
    """The table's answer for ``action`` on ``offer``: ``(new status, event type)``.

    Raises:
        HandoffClosedError: the table has no such move (the offer is closed); the message says
            how it closed.
    """
    move = ACTIONS.get((offer.status, action))
    if move is None:
        raise HandoffClosedError(closed_message(offer), offer_id=offer.id, status=offer.status.value)
    return move


def closed_message(offer: Handoff) -> str:
    """One line saying how ``offer`` closed (naming the winner when accepted)."""
    if offer.status is H.ACCEPTED:
        return f"offer '{offer.id}' of task '{offer.task_id}' was already accepted by agent '{offer.accepted_by}'"
    if offer.status is H.DECLINED:
        return f"offer '{offer.id}' of task '{offer.task_id}' was declined by every target"
    if offer.status is H.EXPIRED:
        return f"offer '{offer.id}' of task '{offer.task_id}' expired at its deadline"
    if offer.status is H.WITHDRAWN:
        return f"offer '{offer.id}' of task '{offer.task_id}' was withdrawn: {offer.closed_reason or 'its attempt ended'}"
    return f"offer '{offer.id}' of task '{offer.task_id}' is open"


def offer_id_of(request_id: str | None) -> str | None:
    """The offer id behind a claim request id ``handoff:<offer id>``, or None."""
    if request_id and request_id.startswith(REQUEST_PREFIX):
        return request_id[len(REQUEST_PREFIX):]
    return None


class Handoffs:
    """The open offers (and the recently closed ones), and every decision about them.

    Args:
        log: the scheduler's change log.
        timers: the scheduler's timers (kind ``"handoff"``, key the offer id).
        live: the live tasks (``LiveTasks``).
        claims: the claims part (ends the offering attempt, claims the acceptor's).
        agents: agent id -> agent (the registry's dict).
        threads: the threads part, or None (no thread is opened).

    Attributes:
        offers: offer id -> offer, open ones and the last ``RECENTLY_CLOSED`` closed ones.
        open_by_task: task id -> id of its open offer.
    """

    def __init__(
        self, log: ChangeRecorder[TaskChanges], timers: Timers, live: Any, claims: Any,
        agents: dict[str, Agent], threads: Any = None,
    ) -> None:
        self.log = log
        self.timers = timers
        self.live = live
        self.claims = claims
        self.agents = agents
        self.threads = threads
        self.offers: dict[str, Handoff] = {}
        self.open_by_task: dict[str, str] = {}
        self._closed: deque[str] = deque()  # closed offer ids, oldest first (forgotten past the cap)

    # ---------------------------------------------------------------- restoring

    def restore(self, offers: list[Handoff]) -> None:
        """Hold stored offers again: open ones (their deadline timers re-armed) and accepted ones
        whose new attempt is still to be delivered. Call before the graph settles what the
        restart left unfinished, so an offering attempt lost meanwhile withdraws its offer."""
        for offer in offers:
            self.offers[offer.id] = offer
            if offer.status is H.OPEN:
                self.open_by_task[offer.task_id] = offer.id
                self.timers.add(offer.deadline, "handoff", offer.id)
            else:
                self._closed.append(offer.id)

    def settle_restored(self, now: float) -> None:
        """Withdraw open offers whose offering attempt is no longer the task's current one (it
        ended while the scheduler was away)."""
        for task_id, offer_id in list(self.open_by_task.items()):
            task = self.live.tasks.get(task_id)
            offer = self.offers[offer_id]
            if task is None or task.attempt != offer.attempt or task.status not in ACTIVE:
                self._close(offer, "withdraw", now, "the offering attempt ended while the scheduler restarted")

    # ---------------------------------------------------------------- lookups

    def get(self, offer_id: str) -> Handoff | None:
        """The offer if memory holds it (open, or closed recently), else None."""
        return self.offers.get(offer_id)

    def delivery(self, task: Task) -> HandoffContext | None:
        """The hand-off context of ``task``'s current attempt if it came from an accepted offer."""
        offer_id = offer_id_of(task.claim_request_id)
        offer = self.offers.get(offer_id) if offer_id else None
        if offer is None or offer.new_attempt != task.attempt:
            return None
        return offer.context_for_acceptor()

    def undelivered(self, agent: Agent, held: set[tuple[str, int]]) -> list[Task]:
        """Attempts handed to ``agent`` by accepted offers that it does not hold yet (to be sent
        with its next ``exchange`` reply)."""
        out = []
        for key in agent.busy:
            if key in held:
                continue
            task = self.live.tasks.get(key[0])
            if (
                task is not None and task.attempt == key[1] and task.agent_id == agent.id
                and task.status is TaskStatus.CLAIMED and offer_id_of(task.claim_request_id)
            ):
                out.append(task)
        return out

    # ---------------------------------------------------------------- offering

    def offer(
        self,
        offer_id: str,
        task_id: str,
        now: float,
        *,
        deadline_s: float,
        agent_id: str | None = None,
        attempt: int | None = None,
        targets: tuple[str, ...] | None = None,
        capabilities: tuple[str, ...] | None = None,
        reason: str = "",
        context: Any = None,
    ) -> Handoff:
        """Open an offer of ``task_id`` by the agent holding it.

        Args:
            offer_id: the offer's id, chosen by the caller; repeating an offer with the same id
                for the same task returns the first one unchanged.
            task_id: the task offered.
            now: the caller's clock reading (seconds).
            deadline_s: seconds the offer stays open (checked at the edge: finite, bounded).
            agent_id: the offering agent (None: whoever holds the task; a driver acting for it).
            attempt: the offering attempt (None: the current one).
            targets: agent names (exactly one of ``targets`` and ``capabilities``).
            capabilities: offer to every healthy agent (not the offerer) having all of them, in
                ranking order.
            reason, context: text and JSON for the targets (checked at the edge).

        Returns:
            The open offer.

        Raises:
            NotHolderError: the task is not claimed or running, or not by ``agent_id`` /
                ``attempt``.
            HandoffPendingError: the task already has an open offer.
            AgentNotFoundError: a target is not a known agent.
            InvalidHandoffError: the offer id is taken by another task; a target is the offerer,
                not alive, or lacks the task's required capabilities; no agent matches
                ``capabilities``.
        """
        known = self.offers.get(offer_id)
        if known is not None:
            if known.task_id == task_id:
                return known
            raise InvalidHandoffError(f"offer id '{offer_id}' is already used for task '{known.task_id}'")
        task = self.live.tasks.get(task_id)
        if task is None or task.status not in ACTIVE:
            where = "not live" if task is None else task.status.value
            raise NotHolderError(f"task '{task_id}' is not held by any agent (it is {where})", task_id=task_id)
        holder = task.agent_id or ""
        if agent_id is not None and agent_id != holder:
            raise NotHolderError(
                f"agent '{agent_id}' does not hold task '{task_id}' (agent '{holder}' does)", task_id=task_id
            )
        if attempt is not None and attempt != task.attempt:
            raise NotHolderError(
                f"attempt {attempt} of task '{task_id}' is stale; the current attempt is {task.attempt}",
                task_id=task_id,
            )
        pending = self.open_by_task.get(task_id)
        if pending is not None:
            raise HandoffPendingError(f"task '{task_id}' already has the open offer '{pending}'", offer_id=pending)
        chosen = self._targets(task, holder, targets, capabilities)
        offer = Handoff(
            id=offer_id,
            task_id=task_id,
            attempt=task.attempt,
            from_agent=holder,
            from_incarnation=task.agent_incarnation or "",
            targets=chosen,
            reason=reason,
            context=context,
            deadline=now + deadline_s,
            created_at=now,
            capabilities=capabilities,
            updated_at=now,
        )
        if self.threads is not None:  # first: a thread that cannot open leaves nothing behind
            offer.thread_id = f"handoff.{offer_id}"
            self.threads.open(
                offer.thread_id, THREAD_TYPE, (holder, *chosen), now, created_by=holder,
                ticket_id=task.ticket_id, task_id=task_id, metadata={"offer_id": offer_id},
            )
            self.threads.post(
                offer.thread_id, holder, {
                    "offer_id": offer_id, "task_id": task_id, "reason": reason, "context": context,
                    "deadline": offer.deadline,
                }, now, kind=OFFER_KIND,
            )
        self.offers[offer_id] = offer
        self.open_by_task[task_id] = offer_id
        self.timers.add(offer.deadline, "handoff", offer_id)
        self.log.handoffs.add(offer)
        self._event("agent.handoff.requested", offer, task, now, {
            "offer_id": offer_id, "attempt": offer.attempt, "from": holder, "targets": list(chosen),
            "capabilities": list(capabilities) if capabilities is not None else None,
            "reason": reason, "deadline": offer.deadline, "thread_id": offer.thread_id,
        })
        return offer

    def _targets(
        self, task: Task, holder: str, targets: tuple[str, ...] | None, capabilities: tuple[str, ...] | None
    ) -> tuple[str, ...]:
        if targets is not None:
            for name in targets:
                agent = self.agents.get(name)
                if agent is None:
                    raise AgentNotFoundError(f"no agent named '{name}' (a target of the offer of task '{task.id}')")
                if name == holder:
                    raise InvalidHandoffError(f"agent '{name}' cannot offer task '{task.id}' to itself")
                if agent.status is not AgentStatus.ALIVE:
                    raise InvalidHandoffError(f"target agent '{name}' is {agent.status.value}, not alive")
                missing = task.requires - agent.capabilities
                if missing:
                    raise InvalidHandoffError(
                        f"target agent '{name}' lacks {sorted(missing)}, required by task '{task.id}'"
                    )
                if not agent.can_run(task.requires, task.type):
                    raise InvalidHandoffError(
                        f"target agent '{name}' has no handler for type '{task.type}' of task '{task.id}'"
                    )
            return tuple(dict.fromkeys(targets))
        wanted = frozenset(capabilities or ()) | task.requires
        # the registry's one ranking (``core.ranking``): healthy agents having every wanted
        # capability, best first; a stale agent gets no new work, so it is not offered any
        ranked = search(self.agents.values(), Query(capabilities=wanted, limit=len(self.agents) or 1))
        found = tuple(
            m.agent_id for m in ranked
            if m.agent_id != holder and wanted <= self.agents[m.agent_id].capabilities
            and self.agents[m.agent_id].can_run(task.requires, task.type)
        )
        if not found:
            raise InvalidHandoffError(
                f"no healthy agent other than '{holder}' has the capabilities {sorted(wanted)} and a handler"
                f" for type '{task.type}' (offer of task '{task.id}')"
            )
        return found

    # ---------------------------------------------------------------- answering

    def accept(self, offer_id: str, agent_id: str, now: float) -> tuple[Handoff, Task]:
        """``agent_id`` accepts: the task moves to it as a new attempt (see the module rules).

        Returns:
            ``(offer, task)``: the accepted offer, and the task now claimed by the acceptor.

        Raises:
            HandoffNotFoundError, HandoffClosedError, NotOfferedError: see ``_answerable``.
            AcceptorUnavailableError: the acceptor is not alive, its lease ran out, it has no
                free slot, or its current registration (it may have re-registered or changed its
                capabilities since the offer) lacks a capability the offer wants or a handler for
                the task's type (the offer stays open).
        """
        offer = self._answerable(offer_id, agent_id, now)
        task = self.live.tasks.get(offer.task_id)
        if task is None or task.attempt != offer.attempt or task.status not in ACTIVE:  # withdrawn already
            raise HandoffClosedError(f"offer '{offer_id}' was withdrawn: its attempt ended", offer_id=offer_id)
        acceptor = self.agents.get(agent_id)
        why = None
        if acceptor is None or acceptor.status is not AgentStatus.ALIVE:
            why = "is not alive"
        elif acceptor.lease_expires_at <= now:
            why = "has a lease that ran out (no call from it for a lease)"
        elif acceptor.health is AgentHealth.STALE:
            why = "is stale (silent past OMOI_AGENT_STALE_AFTER): it gets no new work until it calls again"
        elif acceptor.free_slots <= 0:
            why = "has no free slot"
        else:  # its registration now, not at offer time: it may have re-registered or changed since
            missing = (frozenset(offer.capabilities or ()) | task.requires) - acceptor.capabilities
            if missing:
                why = f"lacks {sorted(missing)} as registered now (wanted by the offer or the task)"
            elif not acceptor.can_run(task.requires, task.type):
                why = f"has no handler for type '{task.type}' as registered now"
        if why is not None or acceptor is None:
            raise AcceptorUnavailableError(
                f"agent '{agent_id}' {why}: it cannot take task '{task.id}' (offer '{offer_id}' stays open)",
                offer_id=offer_id, agent_id=agent_id,
            )
        old_attempt = task.attempt
        offer.accepted_by = agent_id
        self._close(offer, "accept", now, f"accepted by agent '{agent_id}'", post_thread=False)
        why_ended = f"handed off to agent '{agent_id}' (offer '{offer_id}')"
        self.claims.end_attempt(task, AttemptOutcome.HANDED_OFF, why_ended, now)
        self.claims.signal(task, why_ended)
        self.log.abandoned.add((task.id, old_attempt))  # its locks go now; the new attempt takes them
        task.uncharged += 1  # OUTCOME_RULES[HANDED_OFF]: not charged
        self.claims.hand_over(task, acceptor, now, REQUEST_PREFIX + offer_id, handoff=offer_id, handed_from=offer.from_agent)
        offer.new_attempt = task.attempt
        self.log.handoffs.add(offer)
        self._thread_outcome(offer, agent_id, ACCEPTED_KIND, {"offer_id": offer_id, "attempt": task.attempt}, now)
        return offer, task

    def decline(self, offer_id: str, agent_id: str, reason: str, now: float) -> Handoff:
        """``agent_id`` declines with ``reason``; when every target has declined the offer closes
        ``declined`` and nothing moves.

        Raises:
            HandoffNotFoundError, HandoffClosedError, NotOfferedError: see ``_answerable``.
        """
        offer = self._answerable(offer_id, agent_id, now)
        offer.declines[agent_id] = reason
        last = set(offer.declines) >= set(offer.targets)
        task = self.live.tasks.get(offer.task_id)
        payload = {"offer_id": offer_id, "agent": agent_id, "reason": reason, "closed": last}
        if last:
            self._close(offer, "decline_last", now, "every target declined", payload=payload, post_thread=False)
        else:
            self._step(offer, "decline", now, task, payload)
        self._thread_post(offer, agent_id, DECLINED_KIND, {"offer_id": offer_id, "reason": reason}, now)
        if last:
            self._thread_close(offer, now)
        return offer

    def _answerable(self, offer_id: str, agent_id: str, now: float) -> Handoff:
        """The open offer ``agent_id`` may answer now.

        Raises:
            HandoffNotFoundError: no such offer in memory (the caller may look in the database).
            HandoffClosedError: it is closed, its deadline has passed, or the agent declined it.
            NotOfferedError: the agent is not one of its targets.
        """
        offer = self.offers.get(offer_id)
        if offer is None:
            raise HandoffNotFoundError(f"no hand-off offer with id '{offer_id}'", offer_id=offer_id)
        if offer.status is not H.OPEN:
            raise HandoffClosedError(closed_message(offer), offer_id=offer_id, status=offer.status.value,
                                     winner=offer.accepted_by)
        if agent_id not in offer.targets:
            raise NotOfferedError(
                f"offer '{offer_id}' of task '{offer.task_id}' was not made to agent '{agent_id}'",
                offer_id=offer_id, agent_id=agent_id,
            )
        if now >= offer.deadline:
            raise HandoffClosedError(f"offer '{offer_id}' of task '{offer.task_id}' expired at its deadline",
                                     offer_id=offer_id, status=H.EXPIRED.value)
        if agent_id in offer.declines:
            raise HandoffClosedError(f"agent '{agent_id}' already declined offer '{offer_id}'",
                                     offer_id=offer_id, status=offer.status.value)
        return offer

    # ---------------------------------------------------------------- ends that nobody asked for

    def expire_due(self, offer_id: str, now: float) -> None:
        """A deadline timer fired: the offer expires if it is still open (nothing moves)."""
        offer = self.offers.get(offer_id)
        if offer is not None and offer.status is H.OPEN and offer.deadline <= now:
            self._close(offer, "expire", now, "no target accepted before the deadline")

    def attempt_ended(self, task: Task, now: float) -> None:
        """``task``'s current attempt ended (``Claims.end_attempt``): its open offer is withdrawn."""
        offer_id = self.open_by_task.get(task.id)
        if offer_id is None:
            return
        offer = self.offers[offer_id]
        if offer.attempt == task.attempt:
            self._close(offer, "withdraw", now, f"attempt {offer.attempt} of task '{task.id}' ended first")

    # ---------------------------------------------------------------- moves

    def _close(
        self, offer: Handoff, action: str, now: float, why: str, *,
        payload: dict[str, Any] | None = None, post_thread: bool = True,
    ) -> None:
        task = self.live.tasks.get(offer.task_id)
        self.open_by_task.pop(offer.task_id, None)
        offer.closed_at = now
        offer.closed_reason = why
        self._step(offer, action, now, task, payload or {
            "offer_id": offer.id, "agent": offer.accepted_by, "reason": why,
        })
        self._closed.append(offer.id)
        while len(self._closed) > RECENTLY_CLOSED:
            self.offers.pop(self._closed.popleft(), None)
        if post_thread:
            self._thread_close(offer, now)

    def _step(self, offer: Handoff, action: str, now: float, task: Task | None, payload: dict[str, Any]) -> None:
        status, event_type = next_status(offer, action)
        offer.status = status
        offer.updated_at = now
        self.log.handoffs.add(offer)
        self._event(event_type, offer, task, now, payload)

    def _event(self, event_type: str, offer: Handoff, task: Task | None, now: float, payload: dict[str, Any]) -> None:
        self.log.events.add(Event(
            type=event_type,
            entity_type="task",
            entity_id=offer.task_id,
            at=now,
            payload={k: v for k, v in payload.items() if v is not None},
            task_id=offer.task_id,
            agent_id=offer.from_agent,
            ticket_id=task.ticket_id if task is not None else None,
        ))

    def _thread_active(self, offer: Handoff) -> bool:
        """Whether the offer's thread is still active (someone may have closed it by hand)."""
        return self.threads is not None and offer.thread_id is not None and offer.thread_id in self.threads.active

    def _thread_post(self, offer: Handoff, sender: str, kind: str, body: Any, now: float) -> None:
        if self._thread_active(offer):
            self.threads.post(offer.thread_id, sender, body, now, kind=kind)

    def _thread_outcome(self, offer: Handoff, sender: str, kind: str, body: Any, now: float) -> None:
        self._thread_post(offer, sender, kind, body, now)
        self._thread_close(offer, now)

    def _thread_close(self, offer: Handoff, now: float) -> None:
        if self._thread_active(offer):
            self.threads.close(offer.thread_id, THREAD_STATUS[offer.status], now, outcome={
                "status": offer.status.value, "accepted_by": offer.accepted_by, "attempt": offer.new_attempt,
                "declines": dict(offer.declines), "reason": offer.closed_reason,
            })
