"""Coordination nodes: syncs, loops and splits, settled by the core itself (no agent runs them).

A *node* is a live task whose ``kind`` is not ``"task"``. It never enters the ready index and no
agent claims it; it stays ``pending`` until the rules below complete or fail it. Its state is
JSON in ``task.coordination``, stored with the task row, so a restarted scheduler rebuilds it.

Rules:
- ``NODE_KINDS`` is the table of node kinds; every other kind is refused.
- **sync** (k of n): its members are its ``depends_on``, its k is ``quorum``. A member completing
  records its result in the sync's state (``results``); when k members have completed, the sync
  completes at once with result ``{member: result}`` of its completed members in declared member
  order, and emits ``coordination.sync.ready`` (once: a completed sync has left memory). A member
  failing for good (failed, timed out, cancelled, upstream failed) is recorded in ``failed``; the
  sync fails only when k can no longer be reached (``n - failed < k``), at once, its reason naming
  the failed members (``coordination.sync.failed``). Members that finish after the sync completed
  still run and complete; the sync's result stays what it was at readiness. The combined result
  is capped like a handler's (``result_max_bytes``, the owner's ``OMOI_RESULT_MAX_BYTES``): a
  sync whose ``{member: result}`` would be larger fails at once, its reason naming the size and
  the setting. A loop's result (the last check's result and two small fields) is capped the same
  way. The one rule for both (``_too_big``): such a result may be ``result_max_bytes`` plus, for
  each result it wraps (a sync's completed members, a loop's ``last``), that result's key as JSON
  and ``NODE_RESULT_ALLOWANCE_BYTES`` (1 KiB: the wrapper's room, as each wrapped result already
  fit the cap). So a loop fails only if its fields take more than 1 KiB, and a sync of members
  whose results together are over the cap by more than 1 KiB each may still be refused.
- A sync with a ``timeout`` fails when it passes (seconds from submission; ``deadline`` is stored,
  and the timer is set again on restore).
- **loop**: depends on its current check task only. When the check completes and its result (a
  mapping) has ``result[key] == equals``, the loop completes with ``{"outcome": "approved",
  "rounds": r, "last": <check result>}``. Otherwise, while ``r < max_rounds``, round ``r + 1`` is
  created in the same change set (a dynamic split of the loop): copies of ``body`` with ids
  ``"{loop}.r{r+1}.{body id}"`` (deterministic), body tasks without a dependency inside the body
  depending on the previous check, the last body task being the new check; the loop now depends
  on it. At ``max_rounds`` it completes with outcome ``"rounds_exhausted"``. Round 1 is the
  ``check`` task the loop was submitted with; a check already completed in storage when the
  loop is submitted is judged at once as round 1. A check failing for good dooms the loop as any
  dependency would. The decision is in the change set of the check's completion, so a restart
  finds either both or neither; a restored pending loop whose current check is already final
  (rows of older code) is judged at restore the same way (``restored``). Round ids are reserved: while a loop is live, a new task (submitted or split
  off) whose id has the form ``"{loop}.r{n}.{x}"`` is refused (``refuse_round_ids``); the owner
  refuses a loop whose round ids already name stored tasks (a duplicate id could never be
  stored; should one reach the commit anyway, ``repair_unstorable`` drops the round and fails
  the loop, ``TaskGraph.drop_created``).
- **split**: a handler's children (``Claims`` hands them over with the completion report) are
  judged as a submission of their own (ids new, dependencies among themselves or on live tasks,
  no cycle, none on a task at or downstream of a dependent that will wait on them); then they are created, each existing *plain* dependent of the parent gets an edge to
  every child, and the parent completes, all in one change set. Refused children fail the
  parent's attempt for good with an ``InvalidSplitError`` text and create nothing. A node
  dependent (sync, loop) keeps the parent as its member: it sees the parent complete.
- A split, static (``SplitSpec``: tasks that carry ``coordination={"split_of": parent}``) or
  dynamic, emits ``coordination.split.created`` for its parent, naming the children.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from omoi_ray.core.dag import LiveTasks, validate_submission
from omoi_ray.core.model import TASK_KIND, Event, NewTask, Task
from omoi_ray.core.storable import NODE_RESULT_ALLOWANCE_BYTES, storable_json
from omoi_ray.core.submission import StoredTask, check_new, create_tasks
from omoi_ray.core.tasks import FAILED_FOR_GOOD, TaskStatus
from omoi_ray.core.timers import Timers
from omoi_ray.errors import InvalidSplitError, InvalidSubmissionError, TaskExistsError

S = TaskStatus
TASK = TASK_KIND
SYNC = "sync"
LOOP = "loop"
#: node kind -> what it is (every kind a task row may carry; ``TASK`` is run by agents)
NODE_KINDS: dict[str, str] = {
    TASK: "run by an agent's handler",
    SYNC: "completes when k of its n members completed (members: its depends_on)",
    LOOP: "re-runs its body until its check's result says done, or max_rounds",
}
SYNC_CREATED, SYNC_READY, SYNC_FAILED = "coordination.sync.created", "coordination.sync.ready", "coordination.sync.failed"
SPLIT_CREATED = "coordination.split.created"
APPROVED, EXHAUSTED = "approved", "rounds_exhausted"

#: spec dicts (a loop's stored body) -> validated core tasks; the owner injects the edge's parser
ReadSpecs = Callable[[Sequence[Mapping[str, Any]]], list[NewTask]]


def round_id(loop_id: str, round_: int, body_id: str) -> str:
    """The id of body task ``body_id`` in round ``round_`` of loop ``loop_id`` (deterministic)."""
    return f"{loop_id}.r{round_}.{body_id}"


#: where a round id's loop prefix may end: ``.r<digits>.`` (loop ids may hold dots themselves)
_ROUND_MARK = re.compile(r"\.(?=r[0-9]+\.)")


def round_id_loops(task_id: str) -> list[str]:
    """Every loop id ``task_id`` could be a round id of (``round_id``'s form), shortest first."""
    return [task_id[: m.start()] for m in _ROUND_MARK.finditer(task_id) if m.start() > 0]


def loop_round_ids(loop_id: str, max_rounds: int, body_ids: Sequence[str]) -> list[str]:
    """Every id rounds 2..``max_rounds`` of loop ``loop_id`` may create (round 1 is its check)."""
    return [round_id(loop_id, r, b) for r in range(2, max_rounds + 1) for b in body_ids]


def loop_check(loop: Task) -> str | None:
    """The id of the current check of loop ``loop`` (the task whose result judges its current
    round): ``coordination["check"]``, else its first dependency; None if it has neither."""
    check = (loop.coordination or {}).get("check")
    return check or (loop.depends_on[0] if loop.depends_on else None)


def pending_loop_checks(tasks: Iterable[Task]) -> set[str]:
    """The current checks of the pending loops among ``tasks``: the tasks whose stored results a
    restore needs (``Coordination.restored`` judges a loop whose check already completed).

    Args:
        tasks: live tasks, of any kind.

    Returns:
        The ``loop_check`` ids of those of kind ``loop`` and status ``pending``.
    """
    return {
        check for task in tasks
        if task.kind == LOOP and task.status is S.PENDING and (check := loop_check(task)) is not None
    }


class Coordination:
    """The rules of the node kinds, driven by ``LiveTasks`` (as its ``nodes``) and the timers.

    Args:
        live: the live tasks (its ``nodes`` is set to this object).
        timers: the shared deadlines (kind ``"sync"``, key: the sync's id).
        read_specs: turns a loop's stored body (spec dicts) into ``NewTask``s; without one, a
            loop that needs a new round fails saying so.
        result_max_bytes: the largest result (as JSON) a node may complete with (the owner's
            ``OMOI_RESULT_MAX_BYTES``); None: no cap.
    """

    def __init__(
        self, live: LiveTasks, timers: Timers, read_specs: ReadSpecs | None = None, result_max_bytes: int | None = None
    ) -> None:
        self.live = live
        self.timers = timers
        self.read_specs = read_specs
        self.result_max_bytes = result_max_bytes
        live.nodes = self

    # ---------------------------------------------------------------- created / restored

    def created(self, task: Task, now: float) -> None:
        """A node (or a static split's child) was just created by a submission."""
        if task.kind == SYNC:
            task.coordination = {"members": list(task.depends_on), "results": {}, "failed": []}
            if task.timeout is not None:
                task.deadline = now + task.timeout
                self.timers.add(task.deadline, "sync", task.id)
            self._emit(SYNC_CREATED, task, now, members=list(task.depends_on), k=task.quorum, timeout=task.timeout)
        elif task.kind == LOOP:
            task.coordination = {**(task.coordination or {}), "round": 1, "check": task.depends_on[0]}

    def split_created(self, parent: str, children: Sequence[str], now: float, ticket_id: str | None) -> None:
        """Record ``coordination.split.created`` for ``parent`` and its ``children``."""
        self.live.log.events.add(Event(
            type=SPLIT_CREATED, entity_type="coordination", entity_id=parent, at=now,
            payload={"children": list(children)}, task_id=parent, ticket_id=ticket_id,
        ))

    def restored(
        self, task: Task, now: float, ended: Mapping[str, TaskStatus] | None = None,
        results: Mapping[str, Any] | None = None,
    ) -> None:
        """A node came back from storage: set its timer, and settle it if its members say so.

        ``ended`` holds its dependencies that are no longer live (id -> stored status) and
        ``results`` the stored results of completed ones: a pending loop whose current check
        already ended is judged now (rows written before loops were judged in the check's own
        change set), as at submission: a completed check is round ``round``'s verdict, a check
        failed for good dooms the loop.
        """
        if task.kind == SYNC and task.status is S.PENDING:
            if task.deadline is not None:
                self.timers.add(task.deadline, "sync", task.id)
            self._judge_sync(task, now)
        elif task.kind == LOOP and task.status is S.PENDING and task.waiting_on == 0:
            check = loop_check(task)
            status = (ended or {}).get(check or "")
            if status is S.COMPLETED:
                self._loop_check_done(task, check, (results or {}).get(check), now)
            elif status in FAILED_FOR_GOOD:
                self.live.doom(task, check, f"upstream task '{check}' {status.value}", now,
                               cancelled=status is S.CANCELLED)

    def refuse_round_ids(self, new: Sequence[NewTask]) -> None:
        """Refuse new tasks (a submission, a split's children) whose id has the form of a round id
        of a loop that is live or in ``new`` itself: that loop's later round would collide.

        Raises:
            InvalidSubmissionError: naming the task id and the loop.
        """
        loops = {t.id for t in new if t.kind == LOOP}
        for task in new:
            for loop_id in round_id_loops(task.id):
                live = self.live.tasks.get(loop_id)
                if loop_id in loops or (live is not None and live.kind == LOOP):
                    raise InvalidSubmissionError(
                        f"task id '{task.id}' is reserved for a round of loop '{loop_id}'"
                    )

    # ---------------------------------------------------------------- dependencies settle

    def upstream_completed(self, node: Task, upstream: Task, now: float) -> None:
        """``upstream`` (a member of a sync, the check of a loop) completed."""
        if node.kind == SYNC:
            node.coordination["results"][upstream.id] = upstream.result
            self._touch(node)
            self._judge_sync(node, now)
        elif node.kind == LOOP:
            self._loop_check_done(node, upstream.id, upstream.result, now)

    def upstream_failed(self, node: Task, upstream: Task, now: float) -> bool:
        """``upstream`` failed for good. Return True if the node took it (a sync, while k is still
        in reach or failing on its own terms); False to doom it as any dependent."""
        if node.kind != SYNC:
            return False
        failed = node.coordination["failed"]
        if upstream.id not in failed:
            failed.append(upstream.id)
            self._touch(node)
        self._judge_sync(node, now)
        return True

    def stored_upstream(self, node: Task, dep_id: str, status: TaskStatus, result: Any, now: float) -> bool:
        """At submission, a node's dependency is already final in storage; return True if the node
        took it (a sync records it; a loop its completed check, judged by ``submitted``), False to
        treat it as any dependent does (a check failed for good dooms its loop)."""
        if node.kind == LOOP and status is S.COMPLETED:
            node.coordination["stored_check"] = {"result": result}
            return True
        if node.kind != SYNC:
            return False
        if status is S.COMPLETED:
            node.coordination["results"][dep_id] = result
        elif dep_id not in node.coordination["failed"]:
            node.coordination["failed"].append(dep_id)
        return True

    def submitted(self, created: Sequence[Task], now: float) -> None:
        """A submission's tasks are in: settle its syncs whose members are already final, and
        record a static split (children marked ``{"split_of": parent}``) per parent."""
        splits: dict[str, list[str]] = {}
        for task in created:
            if task.kind == SYNC and task.status is S.PENDING:
                self._judge_sync(task, now)
            elif task.kind == LOOP and task.status is S.PENDING and "stored_check" in task.coordination:
                stored = task.coordination.pop("stored_check")
                self._loop_check_done(task, task.depends_on[0], stored["result"], now)
            elif task.kind == TASK and isinstance(task.coordination, dict) and "split_of" in task.coordination:
                splits.setdefault(task.coordination["split_of"], []).append(task.id)
        for parent, children in splits.items():
            self.split_created(parent, children, now, None)

    # ---------------------------------------------------------------- sync

    def _judge_sync(self, sync: Task, now: float) -> None:
        state = sync.coordination
        members = state["members"]  # in declared order (restored edges come in any order)
        k = sync.quorum or len(members)
        done = [m for m in members if m in state["results"]]
        if len(done) >= k:
            result = {m: state["results"][m] for m in done}
            too_big = self._too_big(result, done)
            if too_big is not None:
                self._fail(sync, f"sync '{sync.id}' result cannot be stored: {too_big}", now, completed=done)
                return
            sync.result = result
            sync.deadline = None
            self._emit(SYNC_READY, sync, now, completed=done, k=k, n=len(members))
            self.live.move(sync, S.COMPLETED, now)
            return
        failed = [m for m in members if m in state["failed"]]
        if len(members) - len(failed) < k:
            names = ", ".join(f"'{m}'" for m in failed)
            reason = f"sync '{sync.id}' cannot reach {k} of {len(members)}: members {names} failed"
            self._fail(sync, reason, now, failed=failed)

    def sync_due(self, sync_id: Any, now: float) -> None:
        """A sync's timeout passed: it fails if it still waits."""
        sync = self.live.tasks.get(sync_id)
        if sync is None or sync.kind != SYNC or sync.status is not S.PENDING:
            return
        if sync.deadline is None or sync.deadline > now:
            return
        k = sync.quorum or len(sync.coordination["members"])
        have = len(sync.coordination["results"])
        reason = f"sync '{sync.id}' timed out after {sync.timeout:g}s with {have} of {k} members completed"
        self._fail(sync, reason, now, timeout=sync.timeout)

    def _fail(self, sync: Task, reason: str, now: float, **payload: Any) -> None:
        sync.error = sync.reason = reason
        sync.deadline = None
        self._emit(SYNC_FAILED, sync, now, reason=reason, **payload)
        self.live.move(sync, S.FAILED, now, error=reason, reason=reason)

    # ---------------------------------------------------------------- loop

    def _loop_check_done(self, loop: Task, check_id: str, result: Any, now: float) -> None:
        state = loop.coordination
        round_ = state["round"]
        until = state["until"]
        if isinstance(result, Mapping) and until["key"] in result and result[until["key"]] == until["equals"]:
            self._loop_end(loop, APPROVED, round_, result, now)
        elif round_ >= state["max_rounds"]:
            self._loop_end(loop, EXHAUSTED, round_, result, now)
        else:
            try:
                body = self._round(loop, round_ + 1, check_id)
                self.create(body, now, done=(check_id,))
            except (InvalidSubmissionError, ValueError) as exc:
                reason = f"loop '{loop.id}' could not start round {round_ + 1}: {exc}"
                loop.error = loop.reason = reason
                self.live.move(loop, S.FAILED, now, error=reason, reason=reason)
                return
            new_check = body[-1].id
            state["round"], state["check"] = round_ + 1, new_check
            loop.depends_on = (new_check,)
            self.live.log.dependencies.add((loop.id, new_check))
            self.live.link(loop, new_check)
            self._touch(loop)
            self.split_created(loop.id, [t.id for t in body], now, loop.ticket_id)
            self.make_ready(body, now)

    def _round(self, loop: Task, round_: int, previous_check: str) -> list[NewTask]:
        if self.read_specs is None:
            raise InvalidSubmissionError("this scheduler cannot read loop bodies")
        body = self.read_specs(loop.coordination["body"])
        ids = {t.id: round_id(loop.id, round_, t.id) for t in body}
        taken = sorted(i for i in ids.values() if i in self.live.tasks)
        if taken:
            raise TaskExistsError(f"task '{taken[0]}' already exists", task_id=taken[0])
        return [
            replace(
                t,
                id=ids[t.id],
                depends_on=tuple(ids[d] for d in t.depends_on) or (previous_check,),
                ticket_id=t.ticket_id or loop.ticket_id,
                idempotency_key=None,
            )
            for t in body
        ]

    def _loop_end(self, loop: Task, outcome: str, rounds: int, last: Any, now: float) -> None:
        result = {"outcome": outcome, "rounds": rounds, "last": last}
        too_big = self._too_big(result, ("last",))
        if too_big is not None:
            reason = f"loop '{loop.id}' result cannot be stored: {too_big}"
            loop.error = loop.reason = reason
            self.live.move(loop, S.FAILED, now, error=reason, reason=reason)
            return
        loop.result = result
        self.live.move(loop, S.COMPLETED, now, outcome=outcome, rounds=rounds)

    # ---------------------------------------------------------------- split

    def split(self, parent: Task, children: Sequence[NewTask], now: float, complete: Callable[[], None]) -> None:
        """Create ``children`` of the completing ``parent``, wire its plain dependents to them,
        ``complete()`` the parent, then make the children that wait on nothing ready: one change
        set.

        Raises:
            InvalidSplitError: the children break a submission rule (nothing was created).
        """
        try:
            for child in children:
                if child.id in self.live.tasks:
                    raise TaskExistsError(f"task '{child.id}' already exists", task_id=child.id)
                if child.kind != TASK:
                    raise InvalidSubmissionError(f"child '{child.id}' is a {child.kind}: only tasks split off")
            validate_submission(children, lambda tid: tid in self.live.tasks)
            check_new(self.live, children)
            self.refuse_round_ids(children)
            self._refuse_downstream(parent, children)
        except InvalidSubmissionError as exc:
            raise InvalidSplitError(f"split of task '{parent.id}' refused: {exc}", task_id=parent.id) from None
        self.create(children, now)
        child_ids = [c.id for c in children]
        for dep_id in self._rewired(parent, children):  # a child depending on the parent waits for it
            dep = self.live.tasks[dep_id]
            dep.depends_on = (*dep.depends_on, *child_ids)
            for cid in child_ids:
                self.live.log.dependencies.add((dep.id, cid))
                self.live.link(dep, cid)
        self.split_created(parent.id, child_ids, now, parent.ticket_id)
        complete()
        self.make_ready(children, now)

    def _refuse_downstream(self, parent: Task, children: Sequence[NewTask]) -> None:
        """Refuse children depending on a live task at or downstream of one of ``parent``'s plain
        dependents: those get an edge to every child, so they would wait on each other (a cycle).
        Breadth-first over live dependents: O(tasks downstream)."""
        wanted = {d for c in children for d in c.depends_on if d in self.live.tasks}
        if not wanted:
            return
        queue = deque(self._rewired(parent, children))
        seen = set(queue)
        while queue:
            tid = queue.popleft()
            if tid in wanted:
                child = next(c.id for c in children if tid in c.depends_on)
                raise InvalidSubmissionError(
                    f"child '{child}' depends on '{tid}', which will wait on the children of '{parent.id}': a cycle"
                )
            for dep_id in self.live.dependents.get(tid, ()):
                if dep_id not in seen:
                    seen.add(dep_id)
                    queue.append(dep_id)

    def _rewired(self, parent: Task, children: Sequence[NewTask]) -> list[str]:
        """The dependents of ``parent`` that get an edge to each of its split's children."""
        child_ids = {c.id for c in children}
        out = []
        for dep_id in self.live.dependents.get(parent.id, ()):
            dep = self.live.tasks.get(dep_id)
            if dep is not None and dep.kind == TASK and dep.status is S.PENDING and dep_id not in child_ids:
                out.append(dep_id)
        return out

    # ---------------------------------------------------------------- shared

    def _too_big(self, result: Any, wrapped: Sequence[str]) -> str | None:
        """Why a node's ``result``, wrapping one stored result under each key of ``wrapped``,
        cannot be stored, or None. Its limit is ``result_max_bytes`` plus, for each wrapped
        result, its key as JSON and ``NODE_RESULT_ALLOWANCE_BYTES`` (the module rules); the
        message names the size, the limit and ``OMOI_RESULT_MAX_BYTES``. Its parts came from
        stored results: only size is judged."""
        if self.result_max_bytes is None:
            return None
        room = sum(NODE_RESULT_ALLOWANCE_BYTES + len(json.dumps(key).encode()) for key in wrapped)
        setting = (f"OMOI_RESULT_MAX_BYTES {self.result_max_bytes}, plus {NODE_RESULT_ALLOWANCE_BYTES} bytes"
                   f" and the key for each of {len(wrapped)} wrapped results")
        try:
            storable_json(result, "result", max_bytes=self.result_max_bytes + room, setting=setting)
        except (ValueError, RecursionError) as exc:
            return str(exc)
        return None

    def create(self, new: Sequence[NewTask], now: float, done: Sequence[str] = ()) -> list[Task]:
        """Create already-judged tasks (a round, a split's children) as a submission does, without
        making any ready yet (``make_ready`` does, once the change set is wired); ``done`` names
        completed tasks that left memory in this change set which some of them depend on."""
        stored = {tid: StoredTask(tid, S.COMPLETED, "") for tid in done}
        return create_tasks(self.live, new, now, stored, None)

    def make_ready(self, new: Sequence[NewTask], now: float) -> None:
        """Make the created tasks of ``new`` whose dependencies are all done ready."""
        for spec in new:
            task = self.live.tasks.get(spec.id)
            if task is not None and task.status is S.PENDING and task.waiting_on == 0 and task.kind == TASK:
                self.live.make_ready(task, now)

    def _touch(self, node: Task) -> None:
        if node.id not in self.live.log.created:
            self.live.log.updated.add(node)

    def _emit(self, event_type: str, node: Task, now: float, **payload: Any) -> None:
        self.live.log.events.add(Event(
            type=event_type, entity_type="coordination", entity_id=node.id, at=now,
            payload={k: v for k, v in payload.items() if v is not None}, task_id=node.id,
            ticket_id=node.ticket_id,
        ))
