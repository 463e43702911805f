"""``cancel`` is one decision: all or nothing, the same whatever the order of its ids, and its
arguments are what they say (core, and end to end on SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

import omoi_ray as omoi
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.core.tasks import TaskStatus
from omoi_ray.errors import InvalidCancelError, TaskNotFoundError
from tests import test_task_graph_stateful as _stateful
from tests.graph_harness import Harness, spec

# ------------------------------------------------------------------------------------ core


@st.composite
def _graphs(draw):
    """A DAG of up to 7 tasks (edges point to earlier tasks), how many of its ready tasks an
    agent claims and starts, and the ids one cancel call names, in the order it names them."""
    n = draw(st.integers(2, 7))
    deps = [draw(st.sets(st.integers(0, i - 1), max_size=2)) if i else set() for i in range(n)]
    run = draw(st.integers(0, n))
    named = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    repeat = draw(st.booleans())
    return deps, run, named + named[:1] if repeat else named


def _build(deps, run):
    h = Harness()
    h.submit(*[spec(f"t{i}", *(f"t{d}" for d in sorted(ds))) for i, ds in enumerate(deps)])
    agent = h.agent(capacity=run) if run else None
    if agent is not None:
        for tid in h.claim(agent)[: run // 2]:
            h.start(agent, tid)
    h.drain()
    return h


def _descendants(deps, roots):
    out = set(roots)
    changed = True
    while changed:
        changed = False
        for i, ds in enumerate(deps):
            if i not in out and ds & out:
                out.add(i)
                changed = True
    return out - set(roots)


@settings(max_examples=100, deadline=None)
@given(_graphs())
def test_the_events_of_a_cancel_do_not_depend_on_the_order_of_its_ids(case):
    deps, run, named = case
    ids = [f"t{i}" for i in named]
    outcomes = []
    for order in (ids, ids[::-1]):
        h = _build(deps, run)
        h.graph.cancel_many(order, h.now, "stop it")
        # every entity's final event, with its payload (the upstream a dependent names included)
        outcomes.append({e.entity_id: (e.type, e.payload) for e in h.drain().events if e.entity_type == "task"})
    assert outcomes[0] == outcomes[1]


@settings(max_examples=200, deadline=None)
@given(_graphs())
def test_every_named_task_is_cancelled_and_only_unnamed_dependents_fail_upstream(case):
    deps, run, named = case
    h = _build(deps, run)
    before = {tid: t.status for tid, t in h.graph.tasks.items()}
    ids = [f"t{i}" for i in named]
    result = h.graph.cancel_many(ids, h.now, "stop it")
    assert result == {tid: TaskStatus.CANCELLED for tid in dict.fromkeys(ids)}
    changes = h.drain()
    final = {e.entity_id: (e.type, e.payload) for e in changes.events}
    doomed = {f"t{i}" for i in _descendants(deps, set(named))}
    for tid, status in before.items():
        if tid in result:
            assert final[tid] == ("task.cancelled", {"reason": "stop it"})
            assert tid not in h.graph.tasks
        elif tid in doomed:
            assert final[tid][0] == "task.upstream_failed"
            assert final[tid][1]["upstream"] in result
        else:
            assert tid not in final and h.graph.tasks[tid].status is status
    # the agent is told to stop exactly the named attempts that were under way
    signalled = {s.task_id for s in changes.signals}
    assert signalled == {tid for tid in result if before[tid] in (TaskStatus.CLAIMED, TaskStatus.RUNNING)}


@pytest.mark.parametrize("order", list(itertools.permutations(["a", "b", "c"])))
def test_the_outcome_does_not_depend_on_the_order_of_the_ids(order):
    h = Harness()
    h.submit(spec("a", requires=("nobody",)), spec("b", "a"), spec("c", "b"), spec("d", "c"))
    h.drain()
    assert h.graph.cancel_many(list(order), h.now, "why") == dict.fromkeys(order, TaskStatus.CANCELLED)
    final = {e.entity_id: e.type for e in h.drain().events}
    assert final == {"a": "task.cancelled", "b": "task.cancelled", "c": "task.cancelled",
                     "d": "task.upstream_failed"}


# ------------------------------------------------------------------------------ end to end


def _unclaimable(uid: str, name: str, *deps: str) -> omoi.TaskSpec:
    return omoi.TaskSpec(id=f"{uid}-{name}", type="t", requires=[f"nobody-{uid}"], depends_on=list(deps))


@pytest.mark.ray
@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_cancel_cancels_every_named_task_in_any_order(runtime, uid, order):
    a = _unclaimable(uid, "a")
    b = _unclaimable(uid, "b", a.id)
    c = _unclaimable(uid, "c", b.id)
    runtime.submit([a, b, c])
    ids = [f"{uid}-{x}" for x in order]
    assert runtime.cancel(*ids, reason="no longer needed") == dict.fromkeys(ids, "cancelled")
    infos = {t.id: runtime.get(t.id) for t in (a, b, c)}
    assert [(infos[t.id].status, infos[t.id].reason) for t in (a, b)] == [("cancelled", "no longer needed")] * 2
    assert infos[c.id].status == "upstream_failed"
    assert runtime.cancel(*ids) == dict.fromkeys(ids, "cancelled")  # final tasks stay as they are


@pytest.mark.ray
def test_cancel_with_an_unknown_id_cancels_nothing(runtime, uid):
    a = _unclaimable(uid, "a")
    runtime.submit([a])
    with pytest.raises(TaskNotFoundError, match=f"no task with id '{uid}-nosuch'"):
        runtime.cancel(a.id, f"{uid}-nosuch")
    with pytest.raises(TaskNotFoundError):
        runtime.cancel(f"{uid}-nosuch", a.id)
    assert runtime.get(a.id).status == "ready"
    assert [e.type for e in runtime.events(a.id)] == ["task.created", "task.ready"]
    runtime.cancel(a.id)


@pytest.mark.ray
@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        ((["{a}", "{b}"],), {}, "cancel takes task ids as separate arguments"),
        ((("{a}",),), {}, "cancel takes task ids as separate arguments"),
        (({"{a}"},), {}, "cancel takes task ids as separate arguments"),
        (("{a}", 123), {}, "task id must be"),
        (("{a}", "has space"), {}, "task id must be"),
        (("{a}", ""), {}, "task id must be"),
        (("{a}",), {"reason": "a\x00b"}, "cancel reason holds the control or unstorable character"),
        (("{a}",), {"reason": "bell\x07"}, "cancel reason holds the control or unstorable character"),
        (("{a}",), {"reason": "\ud800"}, "cancel reason holds the control or unstorable character"),
        (("{a}",), {"reason": "x" * 1001}, "over the limit of 1000"),
        (("{a}",), {"reason": 7}, "cancel reason must be a string"),
        (("{a}",), {"reason": None}, "cancel reason must be a string"),
    ],
    ids=["list", "tuple", "set", "int-id", "space-id", "empty-id", "nul-reason", "control-reason",
         "surrogate-reason", "long-reason", "int-reason", "none-reason"],
)
def test_bad_cancel_arguments_are_refused_and_cancel_nothing(runtime, uid, args, kwargs, message):
    a, b = _unclaimable(uid, "a"), _unclaimable(uid, "b")
    runtime.submit([a, b])

    def fill(value):
        if isinstance(value, str):
            return value.format(a=a.id, b=b.id)
        if isinstance(value, (list, tuple, set)):
            return type(value)(fill(v) for v in value)
        return value

    with pytest.raises(InvalidCancelError, match=message):
        runtime.cancel(*fill(args), **kwargs)
    assert [runtime.get(t.id).status for t in (a, b)] == ["ready", "ready"]
    # a reason with tabs and line breaks is fine, and the runtime keeps serving
    assert runtime.cancel(a.id, b.id, reason="line one\n\tline two") == {a.id: "cancelled", b.id: "cancelled"}
    assert runtime.get(b.id).reason == "line one\n\tline two"


# ------------------------------------------------- with every other move of the scheduler core


class _CoreWithCancelAndBackstop(_stateful.SchedulerCore):
    """The scheduler core's state machine (every invariant of ``test_task_graph_stateful``), with
    multi-id cancels in any order and the storage backstop failing live tasks as more moves."""

    @rule(picks=st.lists(st.integers(0, 100), min_size=1, max_size=4))
    def cancel_several(self, picks):
        if self.graph.tasks:
            live = sorted(self.graph.tasks)
            ids = [live[p % len(live)] for p in picks]
            result = self.graph.cancel_many(ids, self.now, "several")
            assert result == dict.fromkeys(dict.fromkeys(ids), TaskStatus.CANCELLED)
            self.commit()
            assert all(self.store.tasks[tid].status is TaskStatus.CANCELLED for tid in ids)

    @rule(pick=st.integers(0, 100))
    def fail_unstorable(self, pick):
        if self.graph.tasks:
            tid = sorted(self.graph.tasks)[pick % len(self.graph.tasks)]
            task = self.graph.tasks[tid]
            self.graph.fail_unstorable(TaskChanges(updated=[task]), {tid: "a test says so"}, self.now)
            self.commit()
            stored = self.store.tasks[tid]
            assert (stored.status, stored.reason) == (TaskStatus.FAILED, "could not be stored: a test says so")
            assert tid not in self.graph.tasks


_CoreWithCancelAndBackstop.TestCase.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)
TestCoreWithCancelAndBackstop = _CoreWithCancelAndBackstop.TestCase
