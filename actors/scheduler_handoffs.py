"""The scheduler actor's hand-off calls: offer, accept, decline, read and await negotiated
hand-offs (``core.handoff``).

Part of ``SchedulerActor`` (``omoi_ray.actors.scheduler``), which composes one class per concept.
Each decision is one synchronous core call; a refusal is raised only after the commit that caused
it, and an accepted attempt is handed to the acceptor's parked ``exchange`` (or its next one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from omoi_ray.core.handoff import Handoff, HandoffStatus, closed_message
from omoi_ray.core.model import Task
from omoi_ray.errors import (
    HandoffClosedError,
    HandoffError,
    HandoffNotFoundError,
    InvalidHandoffError,
)
from omoi_ray.protocol import Assignment
from omoi_ray.specs.handoffs import (
    HandoffInfo,
    OfferRequest,
    check_agent,
    check_offer_id,
    check_reason,
    parse_offer,
)

log = logging.getLogger("omoi_ray.scheduler")

#: the longest one ``await_handoff`` call parks (seconds); callers ask again until their timeout
MAX_HANDOFF_POLL_S = 30.0


class HandoffCalls:
    """The hand-off part of the scheduler actor (offer, accept, decline, get, await)."""

    # ------------------------------------------------------------------ hand-offs

    async def offer_handoff(self, request: OfferRequest) -> HandoffInfo:
        """Open a hand-off offer (``rt.handoffs.offer``, ``ctx.handoffs.offer``), once committed.

        Args:
            request: a checked ``OfferRequest`` (checked again here, whoever sent it).

        Returns:
            The offer's ``HandoffInfo`` (``open``). Repeating an offer id for the same task
            returns that offer as it stands.

        Raises:
            InvalidHandoffError, NotHolderError, HandoffPendingError, AgentNotFoundError: see
                ``core.handoff.Handoffs.offer``; nothing is stored.
        """
        req = _offer_request(request)
        if self.graph.handoffs.get(req.offer_id) is None:
            stored = await self._stored_offer(req.offer_id)
            if stored is not None:
                if stored.task_id != req.task_id:
                    raise InvalidHandoffError(f"offer id '{req.offer_id}' is already used for task '{stored.task_id}'")
                return HandoffInfo.of(stored)
        offer = await self._handoff_call(lambda now: self.graph.handoffs.offer(
            req.offer_id, req.task_id, now, deadline_s=req.deadline, agent_id=req.agent, attempt=req.attempt,
            targets=req.targets, capabilities=req.capabilities, reason=req.reason, context=req.context,
        ))
        return HandoffInfo.of(offer)

    async def accept_handoff(self, offer_id: str, agent_id: str) -> HandoffInfo:
        """``agent_id`` accepts an offer: the task moves to it as a new attempt (delivered to its
        parked ``exchange`` at once, or to its next one), once committed.

        Returns:
            The offer's ``HandoffInfo`` (``accepted``, ``new_attempt`` set).

        Raises:
            HandoffNotFoundError, HandoffClosedError (naming the winner), NotOfferedError,
                AcceptorUnavailableError, InvalidHandoffError: nothing changed (an error about a
                closed offer is raised only once what closed it is committed).
        """
        offer_id, agent_id = check_offer_id(offer_id), check_agent(agent_id)
        await self._offer_in_memory(offer_id)
        offer, task = await self._handoff_call(lambda now: self.graph.handoffs.accept(offer_id, agent_id, now))
        return HandoffInfo.of(offer)

    async def decline_handoff(self, offer_id: str, agent_id: str, reason: str = "") -> HandoffInfo:
        """``agent_id`` declines an offer with ``reason``, once committed; when every target has
        declined the offer closes ``declined`` and the task stays where it is.

        Raises:
            HandoffNotFoundError, HandoffClosedError, NotOfferedError, InvalidHandoffError:
                nothing changed.
        """
        offer_id, agent_id, reason = check_offer_id(offer_id), check_agent(agent_id), check_reason(reason)
        await self._offer_in_memory(offer_id)
        offer = await self._handoff_call(lambda now: self.graph.handoffs.decline(offer_id, agent_id, reason, now))
        return HandoffInfo.of(offer)

    async def handoff(self, offer_id: str) -> HandoffInfo:
        """An offer as it stands once committed (``rt.handoffs.get``).

        Raises:
            HandoffNotFoundError: no such offer, in memory or stored.
        """
        offer_id = check_offer_id(offer_id)
        await self.commit.sync()
        offer = self.graph.handoffs.get(offer_id) or await self._stored_offer(offer_id)
        if offer is None:
            raise HandoffNotFoundError(f"no hand-off offer with id '{offer_id}'", offer_id=offer_id)
        return HandoffInfo.of(offer)

    async def await_handoff(self, offer_id: str, wait: float) -> HandoffInfo:
        """A long poll: the offer once it closes (committed), or as it stands after ``wait``
        seconds (called by ``Offer.outcome``).

        Raises:
            HandoffNotFoundError: no such offer.
        """
        offer_id = check_offer_id(offer_id)
        offer = self.graph.handoffs.get(offer_id)
        if offer is not None and offer.status is HandoffStatus.OPEN and wait > 0:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.handoff_waiters.setdefault(offer_id, []).append(future)
            try:
                await asyncio.wait({future}, timeout=min(wait, MAX_HANDOFF_POLL_S))
            finally:
                waiters = self.handoff_waiters.get(offer_id)
                if waiters and future in waiters:
                    waiters.remove(future)
                    if not waiters:
                        del self.handoff_waiters[offer_id]
        return await self.handoff(offer_id)

    async def _handoff_call(self, decide: Any) -> Any:
        """Run one hand-off decision of the core now (one synchronous call: concurrent answers
        see each other's outcome), deliver a handed-off attempt, commit, and reply; a refusal
        is raised once everything before it is committed (it may name a winner)."""
        try:
            outcome = decide(time.time())
        except HandoffError:
            await self.commit.sync()
            raise
        task = outcome[1] if isinstance(outcome, tuple) else None
        if task is not None:
            self._deliver_handoff(task)
        self._after_change()
        await self.commit.sync()
        return outcome

    def _deliver_handoff(self, task: Task) -> None:
        """Wake the acceptor's parked ``exchange`` with its new attempt (else its next call takes it)."""
        parked = self.parked.pop(task.agent_id or "", None)
        if parked is not None and not parked.future.done():
            parked.future.set_result([task])

    async def _offer_in_memory(self, offer_id: str) -> None:
        """An answer to an offer memory no longer holds: raise as the stored row says."""
        if self.graph.handoffs.get(offer_id) is not None:
            return
        await self.commit.sync()
        stored = await self._stored_offer(offer_id)
        if stored is None:
            raise HandoffNotFoundError(f"no hand-off offer with id '{offer_id}'", offer_id=offer_id)
        raise HandoffClosedError(closed_message(stored), offer_id=offer_id, status=stored.status.value,
                                 winner=stored.accepted_by)

    async def _stored_offer(self, offer_id: str) -> Handoff | None:
        return await self._db(self.store.handoff, offer_id)

    def _assignment(self, task: Task) -> Assignment:
        """The wire form of ``task``'s current attempt, with its hand-off context if it came from one."""
        assignment = Assignment.of(task)
        context = self.graph.handoffs.delivery(task) if task.claim_request_id else None
        return assignment if context is None else assignment._replace(handoff=context)


def _offer_request(request: Any) -> OfferRequest:
    """An offer as sent, checked again whoever sent it (``specs.handoffs.parse_offer``)."""
    if not isinstance(request, OfferRequest):
        raise InvalidHandoffError(f"an offer must be an OfferRequest, not {type(request).__name__}")
    return parse_offer(
        request.task_id, to=request.targets, capabilities=request.capabilities, reason=request.reason,
        context=request.context, deadline=request.deadline, agent=request.agent, attempt=request.attempt,
        offer_id=request.offer_id,
    )
