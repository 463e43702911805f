"""``rt.handoffs`` and ``ctx.handoffs``: offer a held task to other agents, accept or decline an
offer, read one, wait for its outcome.

    offer = rt.handoffs.offer("review.42", to=["reviewer-a", "reviewer-b"], reason="needs a second look",
                              context={"notes": "..."}, deadline=60)
    rt.handoffs.accept(offer.id, agent="reviewer-a")   # the task moves to reviewer-a as a new attempt
    print(offer.outcome(timeout=5).status)             # "accepted"

In a handler (``ctx.handoffs``) the calls act for the handler's own agent and attempt:

    offer = await ctx.handoffs.offer_async(capabilities=["review"], reason="out of my depth", deadline=30)
    info = await offer.outcome_async(timeout=30)       # cancelled here if another agent accepts

Rules:
- Each call is defined once and offered blocking and awaitable (``_async``), through
  ``omoi_ray.client.calls.flavours``; arguments are checked here first (``specs.handoffs``), and
  again by the scheduler.
- Offer ids are made here (uuid4 hex) before the first try, so an offer retried while the
  scheduler restarts names the same offer and is made once.
- An accept or decline made again after a restart (the first try may have been committed
  before the scheduler died) that finds the offer closed, or already declined by this agent,
  reads the offer: if it shows this agent's own answer, that is the call's answer; otherwise
  the refusal stands.
- A driver offers on behalf of whichever agent holds the task (or ``agent=`` to insist on one);
  a handler offers its own attempt and answers for its own agent.
- Errors are the scheduler's typed ones (``HandoffError`` and its subclasses, ``AgentNotFoundError``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from omoi_ray.client._args import wait_seconds
from omoi_ray.client.calls import Policy, Repeated, Step, Steps, flavours
from omoi_ray.errors import HandoffClosedError, InvalidHandoffError
from omoi_ray.specs.handoffs import HandoffInfo, check_agent, check_offer_id, check_reason, parse_offer

#: seconds one ``outcome`` call parks at the scheduler before asking again
OUTCOME_STEP_S = 30.0


class Offer:
    """An offer just made: its ``id`` and ``info`` (as it stood when made); ``outcome`` waits
    for it to close."""

    def __init__(self, client: HandoffClient, info: HandoffInfo) -> None:
        self._client = client
        self.info = info
        self.id = info.id

    def __repr__(self) -> str:
        return f"Offer({self.id!r}, task={self.info.task_id!r}, targets={list(self.info.targets)})"

    def _outcome(self, timeout: float | None = None) -> Steps[HandoffInfo]:
        """Wait until the offer closes (``accepted``, ``declined``, ``expired``, ``withdrawn``),
        at most ``timeout`` seconds (None: until its deadline passes; it always closes by then).

        Returns:
            The offer's ``HandoffInfo``: closed, or ``open`` if ``timeout`` ran out first.

        Raises:
            InvalidArgumentError: a bad timeout.
        """
        return (yield from self._client._wait_closed(self.id, timeout))

    outcome, outcome_async = flavours(_outcome)


class HandoffClient:
    """Hand-off calls to the scheduler (``rt.handoffs``; a handler's ``ctx.handoffs``).

    Args:
        scheduler: returns the scheduler's handle (read at every try).
        agent: the agent this client answers for by default (a handler's own; None for a driver).
        task_id, attempt: the attempt this client offers by default (a handler's own).
        policy: the callers' budget across scheduler restarts (None: a driver's).
        check: runs before each retry and may raise to stop retrying (a handler's cancellation).
    """

    def __init__(
        self, scheduler: Callable[[], Any], *, agent: str | None = None, task_id: str | None = None,
        attempt: int | None = None, policy: Policy | None = None, check: Callable[[], None] | None = None,
    ) -> None:
        self._scheduler = scheduler
        self.agent = agent
        self.task_id = task_id
        self.attempt = attempt
        self.policy = policy
        self.check = check

    def __repr__(self) -> str:
        return f"HandoffClient(agent={self.agent!r}, task={self.task_id!r})"

    def _step(self, method: str, *args: Any, if_repeated: Callable[[BaseException], Any] | None = None) -> Step:
        return Step(lambda: getattr(self._scheduler(), method).remote(*args), policy=self.policy,
                    what="the scheduler" if self.policy is not None else None, check=self.check,
                    if_repeated=if_repeated)

    def _answer(self, method: str, offer_id: str, *args: Any, done: Callable[[HandoffInfo], bool]) -> Steps[HandoffInfo]:
        """An answer (accept or decline) to ``offer_id``. Made again after a restart, a
        ``HandoffClosedError`` may only mean that the first try went through: the offer is read,
        and if ``done`` says it holds this answer, it is the call's answer."""
        answer = yield self._step(method, offer_id, *args, if_repeated=lambda exc: Repeated.of(exc, HandoffClosedError))
        if not isinstance(answer, Repeated):
            return answer
        info = yield self._step("handoff", offer_id)
        if done(info):
            return info
        raise answer.error

    def _agent(self, agent: str | None) -> str:
        name = agent if agent is not None else self.agent
        if name is None:
            raise InvalidHandoffError("name the answering agent: agent='<agent name>'")
        return check_agent(name)

    def _offer(
        self,
        task_id: str | None = None,
        *,
        to: Any = None,
        capabilities: Any = None,
        reason: str = "",
        context: Any = None,
        deadline: float = 60.0,
        agent: str | None = None,
    ) -> Steps[Offer]:
        """Offer a claimed or running task to other agents.

        Args:
            task_id: the task (a handler's own by default).
            to: a list of agent names; or
            capabilities: a list of capability names: every alive agent having them all (and
                the task's required ones), except the offerer, at offer time.
            reason: why, for the targets (text, at most 1000 characters).
            context: anything the acceptor should know (JSON, at most 64 KiB); the acceptor's
                handler reads it as ``ctx.handoff.context``.
            deadline: seconds the offer stays open (at most 7 days).
            agent: the offering agent (a handler's own; a driver: None, whoever holds the task).

        Returns:
            An ``Offer`` (``.id``, ``.info``, ``.outcome(timeout)``).

        Raises:
            InvalidHandoffError: a bad field, a target that is the offerer, not alive or unable
                to run the task, no agent with the capabilities.
            NotHolderError: the task is not claimed or running (by that agent / attempt).
            HandoffPendingError: the task already has an open offer.
            AgentNotFoundError: a target is not a known agent.
        """
        own = task_id is None or task_id == self.task_id
        request = parse_offer(
            task_id if task_id is not None else self.task_id, to=to, capabilities=capabilities, reason=reason,
            context=context, deadline=deadline, agent=agent if agent is not None else self.agent,
            attempt=self.attempt if own else None,
        )
        info = yield self._step("offer_handoff", request)
        return Offer(self, info)

    offer, offer_async = flavours(_offer)

    def _accept(self, offer_id: str, *, agent: str | None = None) -> Steps[HandoffInfo]:
        """Accept an offer for ``agent`` (a handler's own by default): the task moves to it as a
        new attempt, handed to it at once, not charged to the task's ``max_retries``.

        Returns:
            The offer's ``HandoffInfo`` (``accepted``; ``new_attempt`` is the task's attempt number).

        Raises:
            HandoffNotFoundError: no such offer.
            HandoffClosedError: already accepted (the message names the winner), declined,
                expired, withdrawn, or declined by this agent.
            NotOfferedError: the offer was not made to this agent.
            AcceptorUnavailableError: the agent is not alive, stale, or has no free slot.
        """
        offer_id, name = check_offer_id(offer_id), self._agent(agent)
        return (yield from self._answer("accept_handoff", offer_id, name, done=lambda info: info.accepted_by == name))

    accept, accept_async = flavours(_accept)

    def _decline(self, offer_id: str, *, agent: str | None = None, reason: str = "") -> Steps[HandoffInfo]:
        """Decline an offer for ``agent`` (a handler's own by default), saying why.

        Returns:
            The offer's ``HandoffInfo`` (``declined`` once every target has declined, else ``open``).

        Raises:
            HandoffNotFoundError, HandoffClosedError, NotOfferedError: as ``accept``.
        """
        offer_id, name, reason = check_offer_id(offer_id), self._agent(agent), check_reason(reason)
        return (yield from self._answer("decline_handoff", offer_id, name, reason,
                                        done=lambda info: info.declines.get(name) == reason))

    decline, decline_async = flavours(_decline)

    def _get(self, offer_id: str) -> Steps[HandoffInfo]:
        """An offer as it stands.

        Raises:
            HandoffNotFoundError: no such offer.
        """
        return (yield self._step("handoff", check_offer_id(offer_id)))

    get, get_async = flavours(_get)

    def _wait(self, offer_id: str, timeout: float | None = None) -> Steps[HandoffInfo]:
        """Wait until an offer closes, at most ``timeout`` seconds (see ``Offer.outcome``)."""
        return (yield from self._wait_closed(check_offer_id(offer_id), timeout))

    wait, wait_async = flavours(_wait)

    def _wait_closed(self, offer_id: str, timeout: float | None) -> Steps[HandoffInfo]:
        limit = wait_seconds(timeout)
        end = None if limit is None else time.monotonic() + limit
        while True:
            left = OUTCOME_STEP_S if end is None else max(0.0, min(OUTCOME_STEP_S, end - time.monotonic()))
            info = yield self._step("await_handoff", offer_id, left)
            if not info.open or (end is not None and time.monotonic() >= end):
                return info
