"""``rt.tasks``: submit tasks, wait for them, read their state, results and attempts, cancel them.

    ids = rt.tasks.submit([omoi.TaskSpec(id="a", type="scan", payload={"path": "."})])
    rt.tasks.wait(ids)                       # or: await rt.tasks.wait_async(ids)
    print(rt.tasks.get("a").result)

Rules:
- Each call is defined once (a generator of ``omoi_ray.client.calls.Step``s) and offered
  blocking (``get``) and awaitable (``get_async``); both check their arguments the same way,
  before anything is sent: ids must be task ids, sequences must not be strings, seconds must be
  finite and within ``omoi_ray.core.storable``'s bounds (``InvalidArgumentError``,
  ``InvalidSubmissionError`` naming them).
- Task ids are fixed here, on the driver, before submission: a submission retried while the
  scheduler restarts names the same tasks, so every call is idempotent and rides out restarts
  under the driver's call policy.
- ``wait`` is a long poll: the scheduler answers when tasks become final or after a short
  step, so no call stays open longer than ``MAX_WAIT_S`` and a timeout is exact to a step.
"""

from __future__ import annotations

import pickle
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from omoi_ray.client._args import flag, wait_seconds
from omoi_ray.client.calls import Step, Steps, flavours
from omoi_ray.errors import InvalidSubmissionError, OmoiError, WaitTimeoutError
from omoi_ray.protocol import WaitReply
from omoi_ray.specs.coordination import LoopSpec, SplitSpec, SyncSpec
from omoi_ray.specs.tasks import (
    AttemptInfo,
    TaskInfo,
    TaskSpec,
    check_payload,
    check_task_id,
    submission_list,
    task_id_list,
    task_spec_fields,
)

if TYPE_CHECKING:
    from omoi_ray.client.runtime import Runtime

#: seconds one ``wait`` call parks at the scheduler (shorter with a progress bar, to redraw it)
WAIT_STEP_S = 30.0
PROGRESS_STEP_S = 0.25


class Tasks:
    """The tasks of one runtime (``rt.tasks``); every call also has an ``_async`` flavour."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def __repr__(self) -> str:
        return f"<tasks of {self._rt!r}>"

    def _on_scheduler(self, method: str, *args: Any, **options: Any) -> Step:
        """A step calling the scheduler's ``method`` (read at each try: a refreshed handle counts)."""
        return Step(lambda: getattr(self._rt.scheduler, method).remote(*args), **options)

    def _submit(self, tasks: Iterable[TaskSpec | Mapping[str, Any]]) -> Steps[list[str]]:
        """Submit tasks (a whole DAG at once if you like).

        Args:
            tasks: a list (or other iterable) of ``TaskSpec`` or dicts of its fields; a single
                task, a string or a mapping is refused, asking for a list. Submitting a task
                again with the same id and definition is a no-op. Coordination specs
                (``SyncSpec``, ``LoopSpec``, ``SplitSpec``, or dicts with their ``kind``) may
                be mixed in; a ``SplitSpec`` contributes its children's ids.

        Returns:
            The tasks' ids, in order (ids left out are made here, as uuid4 hex).

        Raises:
            InvalidSubmissionError: a bad field, duplicate id, unknown dependency or cycle (the
                submission is validated as a whole and nothing is stored), or a submission that
                cannot be sent.
        """
        items = [_with_id(item, index) for index, item in enumerate(submission_list(tasks))]
        request_id = uuid.uuid4().hex
        try:
            return (yield self._on_scheduler("submit", items, request_id))
        except (pickle.PicklingError, RecursionError) as exc:  # e.g. a field nested too deep to send
            raise InvalidSubmissionError(
                f"this submission cannot be sent to the scheduler ({type(exc).__name__} while "
                "pickling it); is a field nested too deep?"
            ) from None

    submit, submit_async = flavours(_submit)

    def _run(
        self,
        tasks: Iterable[TaskSpec | Mapping[str, Any]],
        *,
        timeout: float | None = None,
        progress: bool = False,
    ) -> Steps[dict[str, TaskInfo]]:
        """Submit, wait for every task to be final, and return each one's state.

        Args:
            tasks: as for ``submit``.
            timeout: as for ``wait``; checked before anything is submitted.
            progress: show a live progress bar (see ``wait``).

        Returns:
            ``{task id: TaskInfo}`` for every submitted task.

        Raises:
            InvalidSubmissionError, InvalidArgumentError, WaitTimeoutError: as ``submit`` and
                ``wait``.
        """
        wait_seconds(timeout)
        flag(progress, "progress")
        ids = yield from self._submit(tasks)
        yield from self._wait(ids, timeout=timeout, progress=progress)
        return {info.id: info for info in (yield from self._get_many(ids))}

    run, run_async = flavours(_run)

    def _wait(
        self,
        task_ids: Sequence[str],
        *,
        timeout: float | None = None,
        progress: bool = False,
        description: str = "tasks",
    ) -> Steps[dict[str, str]]:
        """Wait until every task is final.

        Args:
            task_ids: a list of ids (a bare string is refused).
            timeout: None (no limit) or seconds from 0 to ``MAX_WAIT_S``.
            progress: show a live bar with counts per status, warning about ready tasks that no
                live agent is able to run.
            description: the bar's label.

        Returns:
            ``{task id: final status}``, in the order of ``task_ids``.

        Raises:
            WaitTimeoutError: after ``timeout`` seconds; its message names the first few tasks not
                final with their status (and reason, if any), its ``pending`` maps every one of
                them to its status and its ``reasons`` to its reason (None if it has none).
            TaskNotFoundError: an unknown id.
            InvalidArgumentError: a bad argument.
        """
        task_ids = task_id_list(task_ids)
        timeout = wait_seconds(timeout)
        flag(progress, "progress")
        pending = list(dict.fromkeys(task_ids))
        finished: dict[str, str] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        tick = PROGRESS_STEP_S if progress else WAIT_STEP_S
        bar = None
        if progress:
            from omoi_ray.client.progress import ProgressBar

            bar = ProgressBar(total=len(pending), description=description)
        try:
            while pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    infos: list[TaskInfo] = yield self._on_scheduler("get", list(pending))
                    finished.update({info.id: info.status for info in infos if info.done})  # final just now
                    left = [info for info in infos if not info.done]
                    if not left:
                        break
                    raise wait_timeout_error(
                        f"{len(left)} of {len(finished) + len(left)} tasks were not final after {timeout:g}s",
                        left,
                    )
                step = tick if remaining is None else max(0.0, min(tick, remaining))
                reply: WaitReply = yield self._on_scheduler("wait", list(pending), step)
                finished.update(reply.finished)
                pending = [tid for tid in pending if tid not in reply.finished]
                if bar is not None:
                    bar.update(finished, reply.live, reply.unclaimable, reply.unhandled, held=reply.held)
        finally:
            if bar is not None:
                bar.close()
        return {tid: finished[tid] for tid in dict.fromkeys(task_ids)}

    wait, wait_async = flavours(_wait)

    def _get(self, task_id: str) -> Steps[TaskInfo]:
        """The state of one task.

        Args:
            task_id: a task id.

        Returns:
            Its ``TaskInfo`` (status, result, error, reason, attempt, agent, times).

        Raises:
            TaskNotFoundError: no such task.
            InvalidArgumentError: ``task_id`` cannot be a task id.
        """
        return (yield from self._get_many([check_task_id(task_id)]))[0]

    get, get_async = flavours(_get)

    def _get_many(self, task_ids: Sequence[str]) -> Steps[list[TaskInfo]]:
        """The state of each task.

        Args:
            task_ids: a list of ids (not a string).

        Returns:
            One ``TaskInfo`` per id, in order.

        Raises:
            TaskNotFoundError: an unknown id.
            InvalidArgumentError: a bad argument.
        """
        ids = task_id_list(task_ids)
        return (yield self._on_scheduler("get", ids))

    get_many, get_many_async = flavours(_get_many)

    def _result(self, task_id: str) -> Steps[Any]:
        """The result of a completed task.

        Args:
            task_id: a task id.

        Returns:
            What its handler returned (JSON data).

        Raises:
            OmoiError: the task is not completed (the message names its status, error and
                reason; the error carries ``task_id`` and ``status``).
            TaskNotFoundError, InvalidArgumentError: as for ``get``.
        """
        info = yield from self._get(task_id)
        if info.status != "completed":
            raise OmoiError(
                f"task '{task_id}' is {info.status}, not completed"
                + (f": {info.error}" if info.error else "")
                + (f" ({info.reason})" if info.reason else ""),
                task_id=task_id,
                status=info.status,
            )
        return info.result

    result, result_async = flavours(_result)

    def _attempts(self, task_id: str) -> Steps[list[AttemptInfo]]:
        """Every attempt of one task.

        Args:
            task_id: a task id.

        Returns:
            Its ``AttemptInfo``s, first to last (``attempt`` counts from 1).

        Raises:
            TaskNotFoundError, InvalidArgumentError: as for ``get``.
        """
        check_task_id(task_id)
        return (yield self._on_scheduler("attempts", task_id))

    attempts, attempts_async = flavours(_attempts)

    def _cancel(self, *task_ids: str, reason: str = "cancelled by request") -> Steps[dict[str, str]]:
        """Cancel tasks, all or nothing: pending and ready ones at once; running ones are told to
        stop and any later result is discarded.

        Args:
            *task_ids: the ids, as separate arguments (``cancel("a", "b")``, ``cancel(*ids)``).
            reason: kept with every task named (at most 1000 characters, no control characters
                but tabs and line breaks). Dependents not named become ``upstream_failed``.

        Returns:
            ``{id: status afterwards}`` (final tasks stay as they are; ``{}`` for no ids).

        Raises:
            InvalidCancelError: a list given as an id, an id that is not a task name, a bad
                reason; nothing is cancelled.
            TaskNotFoundError: an unknown id; nothing is cancelled.
        """
        if not task_ids:
            return {}
        return (yield self._on_scheduler("cancel", list(task_ids), reason))

    cancel, cancel_async = flavours(_cancel)


#: tasks a ``WaitTimeoutError`` message names (all of them are in its ``pending``)
TIMEOUT_NAMED = 3


def wait_timeout_error(head: str, infos: Sequence[TaskInfo]) -> WaitTimeoutError:
    """A one-line ``WaitTimeoutError``: ``head``, then the first ``TIMEOUT_NAMED`` tasks of
    ``infos`` that are not final, with their status and reason.

    Args:
        head: what timed out, and after how long.
        infos: the waited tasks as just read; those final by now (between the last wait step
            and this read) are left out.

    Returns:
        The error; its ``pending`` maps each task not final to its status ({id: status}) and
        ``reasons`` to its reason ({id: reason or None}).
    """
    infos = [info for info in infos if not info.done]
    named = []
    for info in infos[:TIMEOUT_NAMED]:
        text = f"{info.id!r} {info.status}"
        if info.reason:
            reason = " ".join(str(info.reason).split())
            text += f" ({reason[:117] + '...' if len(reason) > 120 else reason})"
        named.append(text)
    more = len(infos) - len(named)
    tail = ", ".join(named) + (f" and {more} more" if more > 0 else "")
    return WaitTimeoutError(
        f"{head}: {tail}" if tail else head,
        pending={info.id: info.status for info in infos},
        reasons={info.id: info.reason for info in infos},
    )


def _with_id(item: TaskSpec | Mapping[str, Any], index: int) -> TaskSpec | dict[str, Any]:
    """Fix each task's id on the driver, so a retried submission names the same tasks, and check
    its payload here, before Ray pickles it (a ``TaskSpec`` travels as its fields: its payload may
    have been changed since it was built, and the scheduler checks every field again)."""
    if isinstance(item, TaskSpec):
        item = task_spec_fields(item, index)
    elif isinstance(item, (SyncSpec, LoopSpec, SplitSpec)):
        return item.model_dump()  # checked again by the scheduler (``specs.coordination``)
    if isinstance(item, Mapping) and item.get("kind") in ("sync", "loop", "split"):
        return dict(item)
    if isinstance(item, Mapping):
        out = dict(item)
        out.setdefault("id", uuid.uuid4().hex)
        check_payload(out, index)
        return out
    return item  # the scheduler rejects it with a message naming its position


__all__ = ["Tasks"]
