"""Every error omoi-ray raises on purpose, in one module.

Rules:
- Each error says what is wrong and, where there is one, what to do about it, naming the
  offending task id, field, agent or cycle.
- Errors cross Ray process boundaries, so each one pickles: it keeps its message as its only
  positional argument and any structured detail as attributes (restored from ``__dict__``).
- Errors raised for bad input are raised before anything is stored.
"""

from __future__ import annotations

from typing import Any


class OmoiError(Exception):
    """Base class of every error omoi-ray raises on purpose."""

    def __init__(self, message: str, **details: Any) -> None:
        """Keep ``message`` as the only positional argument and each of ``details`` as an attribute."""
        super().__init__(message)
        for key, value in details.items():
            setattr(self, key, value)

    @property
    def message(self) -> str:
        """The one-line message ("" if there is none)."""
        return str(self.args[0]) if self.args else ""


# --- bad input (nothing was stored) -------------------------------------------------------


class InvalidSubmissionError(OmoiError, ValueError):
    """A submission was rejected as a whole; nothing from it was stored."""


class InvalidTaskSpecError(InvalidSubmissionError):
    """A task field has a value omoi-ray cannot accept (the message names task and field)."""


class DuplicateTaskError(InvalidSubmissionError):
    """The same task id appears twice in one submission."""


class TaskExistsError(InvalidSubmissionError):
    """A task with this id already exists with a different definition."""


class IdempotencyConflictError(InvalidSubmissionError):
    """An idempotency key was reused for a task with a different definition."""


class UnknownDependencyError(InvalidSubmissionError):
    """A task depends on a task id that is neither in the submission nor stored."""


class CycleError(InvalidSubmissionError):
    """The submitted tasks depend on each other in a cycle (``cycle`` lists it)."""


class InvalidCoordinationError(InvalidSubmissionError):
    """A sync, loop or split is malformed: a quorum out of range, unknown or duplicate members, a
    loop body that does not fit (the message names the node and the field)."""


class InvalidSplitError(InvalidSubmissionError):
    """A handler's split children were refused (a bad field, an id that exists, a cycle): the
    parent's attempt fails for good with this error's text, and none of the children exist."""


class InvalidAgentSpecError(OmoiError, ValueError):
    """An agent's name, capabilities, capacity or handler is not acceptable."""


class InvalidArgumentError(OmoiError, ValueError):
    """A driver call got an argument of the wrong shape or outside its bounds (a task id that is
    not a name, a string where a list belongs, a wait timeout that is NaN); nothing changed."""


class InvalidCancelError(InvalidArgumentError):
    """``cancel`` got a list where separate ids belong, an id that is not a task name, or a
    reason that cannot be stored; nothing was cancelled."""


# --- lookups --------------------------------------------------------------------------------


class TaskNotFoundError(OmoiError, LookupError):
    """No task with that id exists."""


class AgentNotFoundError(OmoiError, LookupError):
    """No agent with that name exists."""


# --- state machine ----------------------------------------------------------------------------


class IllegalTransitionError(OmoiError):
    """A task was asked to move between two statuses the transition table does not connect."""


class StaleAttemptError(OmoiError):
    """A report, heartbeat or result came from an attempt that is no longer the current one."""


# --- locks -----------------------------------------------------------------------------------------


class LockError(OmoiError):
    """Base class of the lock manager's errors."""


class InvalidLockRequestError(LockError, ValueError):
    """A lock request names a bad mode, resource, holder, wait or TTL (nothing changed)."""


class LockUnavailableError(LockError):
    """A try-lock (``wait=0``) found the resource taken."""


class LockTimeoutError(LockError, TimeoutError):
    """Waiting for a lock took longer than ``wait`` (or the wait was dropped); nothing is held."""


class DeadlockError(LockError):
    """Waiting would close a cycle of holders waiting for each other (``cycle`` lists it)."""


class LockUpgradeError(LockError):
    """Shared to exclusive was asked while other holders share the resource."""


class LockNotHeldError(LockError):
    """A release or renew named a grant the caller does not hold (or no longer holds)."""


class LeaseExpiredError(LockNotHeldError):
    """The grant's lease ran out; acquire again (the new grant carries a larger token)."""


class StaleTokenError(LockError):
    """A fenced write carried a token older than one the resource has already seen."""


# --- raised by or for handlers ------------------------------------------------------------------


class PermanentError(OmoiError):
    """Raise this (or a subclass) from a handler to fail the task without retrying."""


class TaskCancelledError(OmoiError):
    """Raised inside a handler by ``ctx.raise_if_cancelled()`` once its attempt is cancelled."""


class ResultNotSerializableError(PermanentError):
    """A handler returned a value that is not JSON-serialisable."""


class HandlerNotFoundError(PermanentError):
    """An agent has no handler for a task's type, or an import path does not resolve."""


# --- runtime and configuration -------------------------------------------------------------------


class ConfigurationError(OmoiError):
    """Settings are invalid or inconsistent with the running runtime."""


class InvalidSettingError(ConfigurationError, ValueError):
    """A setting (``Settings(...)`` or an ``OMOI_*`` variable) has a value omoi-ray cannot use;
    the one-line message names the field, ``field`` is it and ``problems`` lists every
    ``(field, message)``."""


class DatabaseNotMigratedError(ConfigurationError):
    """The database schema is behind the code; run ``omoi-ray db upgrade``."""


class DatabaseOwnedError(ConfigurationError):
    """Another runtime (``owner``: namespace, Ray cluster id, since when) owns the database and
    its lease is live; use another database, or ``omoi-ray db takeover`` if it is gone."""


class OwnershipLostError(ConfigurationError):
    """This writer's owner epoch is no longer the database's: it was replaced (a restart of its
    actor, another runtime's takeover, or ``omoi-ray db takeover``) and must not commit."""


class RuntimeUnavailableError(OmoiError):
    """The runtime's actors could not be reached in time."""


class WaitTimeoutError(OmoiError, TimeoutError):
    """``wait`` gave up before every task reached a final status."""


class PayloadTooLargeError(InvalidSubmissionError):
    """A payload or result is larger than the configured limit."""


# --- threads and messages ------------------------------------------------------------------


class InvalidMessageError(OmoiError, ValueError):
    """A thread or message field is not acceptable (a bad name, type, kind, body, participant
    list or cursor); the message names it, and nothing was stored."""


class MessageTooLargeError(InvalidMessageError):
    """A message body's JSON is larger than ``OMOI_MESSAGE_MAX_BYTES``; nothing was stored."""


class ThreadExistsError(InvalidMessageError):
    """A thread with this id already exists (active or closed)."""


class ThreadNotFoundError(OmoiError, LookupError):
    """No thread with that id exists (``thread_ids`` lists the ids)."""


class MessageNotFoundError(OmoiError, LookupError):
    """No message with that id was addressed to that recipient."""


class ThreadClosedError(OmoiError):
    """The thread is resolved or abandoned: it takes no more posts and cannot be closed again."""


class NotParticipantError(OmoiError, ValueError):
    """The sender or recipient of a message is not a participant of its thread."""


# --- events -----------------------------------------------------------------------------------


class InvalidEventQueryError(OmoiError, ValueError):
    """A bad event position, type pattern or limit was given to ``follow`` or the CLI."""


class EventStreamUnavailableError(OmoiError):
    """Redis is configured but cannot be reached (the relay keeps the backlog in the database)."""


# --- hand-offs -----------------------------------------------------------------------------------


class HandoffError(OmoiError):
    """Base class of the hand-off errors: the call changed nothing."""


class InvalidHandoffError(HandoffError, ValueError):
    """A hand-off offer or answer has a bad field (targets, capabilities, reason, context,
    deadline, offer id); the message names it."""


class HandoffNotFoundError(HandoffError, LookupError):
    """No hand-off offer with that id exists."""


class HandoffClosedError(HandoffError):
    """The offer is no longer open: it was accepted (the message names the winner), declined by
    every target, expired, or withdrawn; or this agent already declined it."""


class NotOfferedError(HandoffError):
    """The agent answering an offer is not one of its targets."""


class NotHolderError(HandoffError):
    """The task is not held (claimed or running) by the agent, or attempt, that offers it."""


class HandoffPendingError(HandoffError):
    """The task already has an open hand-off offer (one open offer per task)."""


class AcceptorUnavailableError(HandoffError):
    """The accepting agent cannot take the task now: it is not alive, its lease is stale, it
    has no free slot, or it (as registered now) lacks a wanted capability or a handler for the
    task's type. Nothing moved; the offer stays open."""


# --- coordination: merges and pattern files ------------------------------------------------


class InvalidMergeError(InvalidTaskSpecError):
    """A task's ``merge`` names an unknown strategy or gives a parameter it cannot take (the
    message names the task and the field)."""


class MergeError(PermanentError):
    """A join's merge could not be computed from its sources (a source is not a mapping, a
    custom function failed or cannot be imported); raised in the handler, so the task fails
    for good: the same sources would fail the same way."""


class MergeQuorumError(MergeError):
    """``majority``: the most common value has fewer votes than the quorum (``counts`` holds the votes)."""


class MergeTieError(MergeError):
    """``majority`` with ``tie: fail``: two or more values share the most votes (``counts`` holds them)."""


class PatternError(OmoiError, ValueError):
    """A pattern file or its parameters are not acceptable; nothing was submitted. The message
    names the file and, where there is one, the step and the field."""


class PatternNotFoundError(PatternError, LookupError):
    """No shipped pattern has this name and no file is at this path."""


class UnknownVariableError(PatternError):
    """A ``${name}`` has no parameter of that name (``missing`` lists every such name)."""


class UnknownStepError(PatternError):
    """A step refers to a step name the pattern does not declare (``step`` names it)."""


class PatternCycleError(PatternError):
    """The pattern's steps depend on each other in a cycle (``cycle`` lists it)."""
# --- tickets and phases (``omoi_ray.core.tickets``) ---------------------------------------


class TicketError(OmoiError):
    """Base class of ticket, phase, gate and artifact errors."""


class InvalidTicketError(TicketError, ValueError):
    """A ticket field, phase set or gate declaration is not acceptable (the message names the
    field); nothing was stored."""


class TicketNotFoundError(TicketError, LookupError):
    """No ticket with that id exists (``ticket_id``)."""


class TicketExistsError(InvalidTicketError):
    """A ticket with this id already exists with a different definition."""


class TicketClosedError(TicketError):
    """The ticket is done or cancelled: it takes no more moves, artifacts or approvals."""


class IllegalPhaseMoveError(TicketError, ValueError):
    """The phase table does not allow this move (``allowed`` lists the legal targets)."""


class GateBlockedError(TicketError):
    """A forward move was refused because the gate of the current phase did not pass
    (``reasons`` lists why; the result is stored in the ticket's gate results)."""


class InvalidArtifactError(TicketError, ValueError):
    """An artifact of unknown type or with malformed content (the message names the ticket,
    the type and the field); nothing was stored."""
