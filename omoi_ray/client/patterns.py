"""``rt.patterns``: apply a pattern file as one atomic submission, and read its outcome.

    handle = rt.apply_pattern("majority_vote", params={"question": "Ship it?"})
    rt.wait(handle.all_ids)
    print(rt.pattern_result(handle).outcome)

Rules:
- The pattern is read, checked and expanded on the driver (``omoi_ray.specs.patterns``); all
  its items (tasks, syncs, loops) go to the scheduler in ONE ``submit``: all of them are stored,
  or none (a bad field, a cycle, an unknown kind all refuse the whole pattern).
- A handle names the items by step (``handle.ids[step]``); the pattern's *outcome* is its final
  steps' (the steps no other step refers to): ``completed`` once they all completed, ``failed``
  once one ended otherwise, ``running`` before.
- A result's ``steps`` holds the handle's steps and, after them, the rounds its loops created so
  far, each under its id without the prefix (``"rounds.r2.revise"`` for ``"{prefix}.rounds.r2.revise"``),
  by loop, round and body id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omoi_ray.client.calls import Steps, flavours
from omoi_ray.core.coordination import round_id_loops
from omoi_ray.core.tasks import TaskStatus
from omoi_ray.errors import InvalidArgumentError, TaskExistsError
from omoi_ray.specs.patterns import load_pattern
from omoi_ray.specs.tasks import TaskInfo

if TYPE_CHECKING:
    from omoi_ray.client.runtime import Runtime


@dataclass(frozen=True)
class PatternHandle:
    """An applied pattern: its ``name``, id ``prefix``, ``ticket``, the ids by step name
    (``ids[step]``: one id, or a split's children in order) and its final steps (``finals``)."""

    name: str
    prefix: str
    ticket: str | None
    ids: Mapping[str, list[str]]
    finals: tuple[str, ...]

    @property
    def all_ids(self) -> list[str]:
        """Every submitted id, step by step (a loop's later rounds are created as it runs)."""
        return [i for ids in self.ids.values() for i in ids]


@dataclass(frozen=True)
class PatternResult:
    """An applied pattern's state: ``status`` (``running``, ``completed``, ``failed``), each
    step's ``TaskInfo``s (``steps[step]``; then each task a loop created in a later round, under
    its id without the prefix: ``steps["rounds.r2.review"]``), and ``outcome``: the final step's
    result (with several final steps, ``{step: result}``; None until completed)."""

    status: str
    steps: Mapping[str, list[TaskInfo]]
    outcome: Any


@dataclass(frozen=True)
class PatternProgress:
    """Where an applied pattern stands: ``statuses`` maps every task under its prefix (its items
    and the rounds its loops created so far) to its status, by id; ``finished`` says whether its
    final steps are all final; ``unclaimable`` and ``unhandled`` are the pattern's ready tasks
    nobody alive can run (as in ``rt.status()``); ``held`` counts its tasks their ticket holds
    back until it reaches their phase (or leaves BLOCKED)."""

    statuses: Mapping[str, str]
    finished: bool
    unclaimable: list[tuple[list[str], int]]
    unhandled: list[tuple[str, list[str], int]]
    held: int = 0


class Patterns:
    """Pattern files applied to one runtime (``rt.patterns``); each call has an ``_async`` flavour."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def __repr__(self) -> str:
        return f"<patterns of {self._rt!r}>"

    def _apply(
        self, name_or_path: str | Path, ticket: str | None = None, params: Mapping[str, Any] | None = None,
        prefix: str | None = None,
    ) -> Steps[PatternHandle]:
        """Apply a pattern: expand it and submit every item in one atomic submission.

        Args:
            name_or_path: a shipped pattern's name (``"majority_vote"``) or a YAML file's path.
            ticket: a ticket id every item carries, or None.
            params: parameter name -> value (types as the file declares; defaults fill the rest).
            prefix: the ids' prefix (``"{prefix}.{step}"``); None: the pattern's name and 8 random
                hex digits. Applying again with the same prefix and parameters is a no-op.

        Returns:
            A ``PatternHandle``.

        Raises:
            PatternNotFoundError, PatternError, UnknownVariableError, UnknownStepError,
                PatternCycleError: the file, its parameters or its steps (named); nothing submitted.
            InvalidSubmissionError: the scheduler refused the submission as a whole
                (``TaskExistsError`` naming the prefix: it was applied before with other
                parameters or another pattern).
        """
        head, expansion = load_pattern(name_or_path, params, prefix=prefix, ticket=ticket)
        try:
            yield from self._rt.tasks._submit(expansion.items)
        except TaskExistsError as exc:
            raise TaskExistsError(
                f"pattern {head.name!r}: prefix {expansion.prefix!r} was applied before with other parameters "
                f"or another pattern ({exc.message.split(';')[0]}); choose another prefix",
                task_id=getattr(exc, "task_id", None), prefix=expansion.prefix,
            ) from None
        return PatternHandle(head.name, expansion.prefix, ticket, dict(expansion.ids), expansion.finals)

    apply, apply_async = flavours(_apply)

    def _result(self, handle: PatternHandle) -> Steps[PatternResult]:
        """The state of an applied pattern and, once it completed, its outcome.

        Args:
            handle: what ``apply`` returned.

        Returns:
            A ``PatternResult``.

        Raises:
            InvalidArgumentError: ``handle`` is not a ``PatternHandle``.
            TaskNotFoundError: its items are not stored (another database?).
        """
        if not isinstance(handle, PatternHandle):
            raise InvalidArgumentError(f"pattern_result takes the PatternHandle apply returned, not {type(handle).__name__}")
        rounds = yield from self._round_ids(handle)
        infos = yield from self._rt.tasks._get_many(handle.all_ids + rounds)
        by_id = {info.id: info for info in infos}
        steps = {step: [by_id[i] for i in ids] for step, ids in handle.ids.items()}
        cut = len(handle.prefix) + 1
        steps.update((tid[cut:], [by_id[tid]]) for tid in rounds)
        finals = [info for step in handle.finals for info in steps[step]]
        done = TaskStatus.COMPLETED.value
        if all(info.status == done for info in finals):
            status = "completed"
            results = {step: _one([i.result for i in steps[step]]) for step in handle.finals}
            outcome = results[handle.finals[0]] if len(results) == 1 else results
        else:
            failed = any(info.done and info.status != done for info in finals)
            status, outcome = ("failed" if failed else "running"), None
        return PatternResult(status, steps, outcome)

    result, result_async = flavours(_result)

    def _progress(self, handle: PatternHandle, wait: float = 0.0) -> Steps[PatternProgress]:
        """Where an applied pattern stands (``omoi-ray run`` draws its progress bar from this).

        Args:
            handle: what ``apply`` returned.
            wait: seconds (0 to 60) to wait first for its final steps to be final.

        Returns:
            ``PatternProgress``: the status of every task under its prefix, whether its final
            steps are all final, and its ready tasks nobody alive can run.

        Raises:
            InvalidArgumentError: ``handle`` is not a ``PatternHandle``, or a bad ``wait``.
            TaskNotFoundError: its final steps are not in this runtime (applied elsewhere).
        """
        if not isinstance(handle, PatternHandle):
            raise InvalidArgumentError(f"patterns.progress takes the PatternHandle apply returned, not {type(handle).__name__}")
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 60:
            raise InvalidArgumentError(f"patterns.progress: wait must be seconds from 0 to 60, not {wait!r:.40}")
        finals = [i for step in handle.finals for i in handle.ids[step]]
        reply = yield self._rt.tasks._on_scheduler("wait", finals, float(wait), handle.prefix)
        statuses = yield self._rt.tasks._on_scheduler("group_status", handle.prefix)
        return PatternProgress(statuses, len(reply.finished) == len(set(finals)), reply.unclaimable, reply.unhandled,
                               reply.held)

    progress, progress_async = flavours(_progress)

    def _round_ids(self, handle: PatternHandle) -> Steps[list[str]]:
        """The ids of the tasks the handle's loops created in later rounds, by loop, round, body id."""
        statuses = yield self._rt.tasks._on_scheduler("group_status", handle.prefix)
        own = set(handle.all_ids)
        found = []
        for tid in statuses:
            if tid in own:
                continue
            for loop in round_id_loops(tid):
                if loop in own:
                    round_, _, body = tid[len(loop) + 2:].partition(".")
                    found.append((loop, int(round_), body, tid))
                    break
        return [tid for *_, tid in sorted(found)]

    def _cancel(self, handle: PatternHandle, reason: str = "cancelled by request") -> Steps[dict[str, str]]:
        """Cancel an applied pattern: every unfinished task, sync and loop of it, including the
        rounds its loops created so far, in one decision (nothing of it runs afterwards).

        Args:
            handle: what ``apply`` returned.
            reason: stored as each cancelled task's reason.

        Returns:
            ``{id: "cancelled"}`` for each item cancelled (empty when all had finished).

        Raises:
            InvalidArgumentError: ``handle`` is not a ``PatternHandle``.
            InvalidCancelError: a reason that cannot be stored.
        """
        if not isinstance(handle, PatternHandle):
            raise InvalidArgumentError(f"patterns.cancel takes the PatternHandle apply returned, not {type(handle).__name__}")
        return (yield self._rt.tasks._on_scheduler("cancel_group", handle.prefix, reason))

    cancel, cancel_async = flavours(_cancel)


def _one(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


__all__ = ["PatternHandle", "PatternProgress", "PatternResult", "Patterns"]
