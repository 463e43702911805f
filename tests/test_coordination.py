"""Coordination end to end on Ray, SQLite and PostgreSQL: syncs k of n (quorum, unreachable,
timeout, a scheduler kill), handlers' splits (atomic under a scheduler kill), review loops, and
submission errors. No-op handlers decide by their payload (``tests/coordination_handlers.py``)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import ray

import omoi_ray as omoi
from omoi_ray.core.storable import NODE_RESULT_ALLOWANCE_BYTES
from omoi_ray.errors import InvalidCoordinationError, InvalidSubmissionError, UnknownDependencyError
from tests.handlers import gate

pytestmark = [pytest.mark.ray]
M = "tests.coordination_handlers"
HANDLERS = {name: f"{M}:{name}" for name in ("answer", "review", "split")}
CAP = "coord"


def answer(tid, result=None, fail=False, gate_key=None, **kw):
    return omoi.TaskSpec(id=tid, type="answer", requires=[CAP], max_retries=0,
                         payload={"result": result, "fail": fail, "gate": gate_key}, **kw)


@pytest.fixture(scope="module")
def rt(runtime):
    runtime.spawn_agent(f"coord-{id(runtime) % 10_000}", capabilities=[CAP], capacity=4, handlers=HANDLERS)
    return runtime


def _types(rt, entity: str) -> list[str]:
    return [e.type for e in rt.events(entity) if e.type.startswith("coordination.")]


def test_sync_k_of_n_completes_with_member_results_and_its_dependent_runs(rt, uid):
    a, b, c, s, after = (f"{uid}-{x}" for x in "abcsz")
    ids = rt.submit([
        answer(a, {"v": "A"}), answer(b, fail=True), answer(c, {"v": "C"}),
        omoi.SyncSpec(id=s, members=[c, b, a], k=2),
        answer(after, "ran", depends_on=[s]),
    ])
    assert rt.wait(ids, timeout=60) == {a: "completed", b: "failed", c: "completed", s: "completed", after: "completed"}
    assert rt.get(s).result == {c: {"v": "C"}, a: {"v": "A"}}
    assert rt.get(s).kind == "sync"
    assert _types(rt, s) == ["coordination.sync.created", "coordination.sync.ready"]


def test_a_sync_over_members_that_already_completed_takes_their_stored_results(rt, uid):
    a, b, s = f"{uid}-a", f"{uid}-b", f"{uid}-s"
    rt.submit([answer(a, {"n": 1}), answer(b, fail=True)])
    assert rt.wait([a, b], timeout=60) == {a: "completed", b: "failed"}
    rt.submit([omoi.SyncSpec(id=s, members=[a, b], k=1)])
    assert rt.wait([s], timeout=60) == {s: "completed"}
    assert rt.get(s).result == {a: {"n": 1}}


def test_sync_fails_at_once_when_k_is_unreachable_naming_the_failed_members(rt, uid):
    a, b, c, s, after = (f"{uid}-{x}" for x in "abcsz")
    go = f"{uid}-go"
    ids = rt.submit([
        answer(a, fail=True), answer(b, fail=True), answer(c, "late", gate_key=go),
        omoi.SyncSpec(id=s, members=[a, b, c], k=2), answer(after, depends_on=[s]),
    ])
    assert rt.wait([s, after], timeout=60) == {s: "failed", after: "upstream_failed"}
    assert rt.get(s).reason == f"sync '{s}' cannot reach 2 of 3: members '{a}', '{b}' failed"
    assert rt.get(c).status in ("ready", "claimed", "running")  # not waited for: k was out of reach
    ray.get(gate().open.remote(go))
    assert rt.wait(ids, timeout=60)[c] == "completed"  # a late member still completes
    assert _types(rt, s) == ["coordination.sync.created", "coordination.sync.failed"]


def test_a_sync_whose_combined_result_is_over_the_result_cap_fails_and_stores_no_oversized_result(rt, uid):
    a, b, s, after = (f"{uid}-{x}" for x in "absz")
    cap = rt.settings.result_max_bytes
    fill = cap * 6 // 10  # each member's result fits the cap; both together do not
    big = [omoi.TaskSpec(id=tid, type="answer", requires=[CAP], max_retries=0, payload={"fill": fill})
           for tid in (a, b)]
    ids = rt.submit([*big, omoi.SyncSpec(id=s, members=[a, b]), answer(after, depends_on=[s])])
    assert rt.wait(ids, timeout=60) == {a: "completed", b: "completed", s: "failed", after: "upstream_failed"}
    info = rt.get(s)
    assert info.result is None
    assert info.reason.startswith(f"sync '{s}' result cannot be stored: ")
    limit = cap + sum(NODE_RESULT_ALLOWANCE_BYTES + len(json.dumps(m)) for m in (a, b))
    assert info.reason.endswith(f"bytes of JSON, over the limit of {limit} (OMOI_RESULT_MAX_BYTES {cap}, plus"
                                f" {NODE_RESULT_ALLOWANCE_BYTES} bytes and the key for each of 2 wrapped results)")
    assert _types(rt, s) == ["coordination.sync.created", "coordination.sync.failed"]


def test_sync_timeout_fails_it(rt, uid):
    a, s = f"{uid}-a", f"{uid}-s"
    go = f"{uid}-go"
    rt.submit([answer(a, "x", gate_key=go), omoi.SyncSpec(id=s, members=[a], timeout=0.5)])
    assert rt.wait([s], timeout=60) == {s: "failed"}
    assert rt.get(s).reason == f"sync '{s}' timed out after 0.5s with 0 of 1 members completed"
    ray.get(gate().open.remote(go))
    assert rt.wait([a], timeout=60) == {a: "completed"}
    assert rt.get(s).status == "failed"  # its outcome was fixed when it failed


def test_review_loop_takes_two_rounds_and_ends_approved(rt, uid):
    impl, rev, loop, ship = (f"{uid}-{x}" for x in ("impl", "rev", "L", "ship"))
    verdicts = {"verdicts": ["changes", "approve", "approve"]}
    body = [{"id": "fix", "type": "answer", "requires": [CAP]},
            {"id": "rev", "type": "review", "requires": [CAP], "depends_on": ["fix"], "payload": verdicts}]
    rt.submit([
        answer(impl, "v1"),
        omoi.TaskSpec(id=rev, type="review", requires=[CAP], depends_on=[impl], payload=verdicts),
        omoi.LoopSpec(id=loop, check=rev, until={"key": "verdict", "equals": "approve"}, max_rounds=3, body=body),
        answer(ship, "shipped", depends_on=[loop]),
    ])
    assert rt.wait([loop, ship], timeout=60) == {loop: "completed", ship: "completed"}
    assert rt.get(loop).result == {"outcome": "approved", "rounds": 2, "last": {"verdict": "approve", "round": 2}}
    assert rt.get(f"{loop}.r2.rev").status == "completed"
    with pytest.raises(omoi.TaskNotFoundError):
        rt.get(f"{loop}.r3.fix")


def test_review_loop_that_never_approves_exhausts_its_rounds(rt, uid):
    rev, loop = f"{uid}-rev", f"{uid}-L"
    verdicts = {"verdicts": ["changes"] * 3}
    body = [{"id": "rev", "type": "review", "requires": [CAP], "payload": verdicts}]
    rt.submit([
        omoi.TaskSpec(id=rev, type="review", requires=[CAP], payload=verdicts),
        {"kind": "loop", "id": loop, "check": rev, "until": {"key": "verdict", "equals": "approve"},
         "max_rounds": 3, "body": body},
    ])
    assert rt.wait([loop], timeout=60) == {loop: "completed"}
    assert rt.get(loop).result == {"outcome": "rounds_exhausted", "rounds": 3, "last": {"verdict": "changes", "round": 3}}


def test_a_loop_whose_rounds_would_reuse_a_stored_id_is_refused_and_the_runtime_goes_on(rt, uid):
    loop, check, taken = f"{uid}-L", f"{uid}-c", f"{uid}-L.r2.b"
    rt.submit([answer(taken, "original")])
    assert rt.wait([taken], timeout=60) == {taken: "completed"}
    body = [{"id": "b", "type": "answer", "requires": [CAP], "payload": {"result": {"v": 1}}}]
    with pytest.raises(InvalidCoordinationError, match=f"loop '{loop}': round id '{taken}' already names a stored task"):
        rt.submit([answer(check, {"v": 0}),
                   omoi.LoopSpec(id=loop, check=check, until={"key": "v", "equals": 1}, max_rounds=3, body=body)])
    with pytest.raises(omoi.TaskNotFoundError):
        rt.get(check)  # all or nothing
    rt.submit([answer(check, {"v": 1})])
    assert rt.wait([check], timeout=60) == {check: "completed"}


def test_a_loop_over_a_check_that_already_completed_settles(rt, uid):
    loop, check, after = f"{uid}-L", f"{uid}-c", f"{uid}-after"
    rt.submit([answer(check, {"v": 1})])
    assert rt.wait([check], timeout=60) == {check: "completed"}
    body = [{"id": "b", "type": "answer", "requires": [CAP]}]
    rt.submit([omoi.LoopSpec(id=loop, check=check, until={"key": "v", "equals": 1}, max_rounds=3, body=body),
               answer(after, "ran", depends_on=[loop])])
    assert rt.wait([loop, after], timeout=60) == {loop: "completed", after: "completed"}
    assert rt.get(loop).result == {"outcome": "approved", "rounds": 1, "last": {"v": 1}}


def test_a_handler_split_is_waited_for_by_the_parents_dependents(rt, uid):
    p, cont = f"{uid}-p", f"{uid}-cont"
    children = [answer(f"{uid}-c{i}", i).model_dump() for i in range(3)]
    ids = rt.submit([
        omoi.TaskSpec(id=p, type="split", requires=[CAP], payload={"children": children, "return_split": True}),
        answer(cont, "after", depends_on=[p]),
    ])
    assert rt.wait(ids, timeout=60) == {p: "completed", cont: "completed"}
    assert rt.get(p).result == {"parts": 3}
    finished = [rt.get(f"{uid}-c{i}").finished_at for i in range(3)]
    assert all(f <= rt.get(cont).started_at for f in finished)
    assert sorted(rt.get(cont).depends_on) == sorted([p, *(f"{uid}-c{i}" for i in range(3))])
    assert _types(rt, p) == ["coordination.split.created"]


def test_a_bad_split_fails_the_parent_and_creates_nothing(rt, uid):
    p, other = f"{uid}-p", f"{uid}-other"
    rt.submit([answer(other, 1)])
    rt.wait([other], timeout=60)
    children = [answer(f"{uid}-new", 1).model_dump(), answer(other, 1).model_dump()]
    rt.submit([omoi.TaskSpec(id=p, type="split", requires=[CAP], max_retries=0, payload={"children": children})])
    assert rt.wait([p], timeout=60) == {p: "failed"}
    assert rt.get(p).error.startswith(f"InvalidSplitError: split of task '{p}' refused")
    with pytest.raises(omoi.TaskNotFoundError):
        rt.get(f"{uid}-new")


@pytest.mark.parametrize(
    "item, error, match",
    [
        ({"kind": "sync", "id": "s", "members": ["m1", "m2"], "k": 3}, InvalidCoordinationError, "k is 3, more than its 2"),
        ({"kind": "sync", "id": "s", "members": ["m1"], "k": 0}, InvalidCoordinationError, "k must be an integer"),
        ({"kind": "sync", "id": "s", "members": ["m1", "m1"]}, InvalidCoordinationError, "m1' appears more than once"),
        ({"kind": "sync", "id": "s", "members": ["m1", "ghost"]}, UnknownDependencyError, "unknown task 'ghost'"),
        ({"kind": "loop", "id": "l", "check": "m1", "until": {"key": "v"}, "max_rounds": 0, "body": [{"id": "b", "type": "t"}]},
         InvalidCoordinationError, "max_rounds"),
        ({"kind": "loop", "id": "l", "check": "m1", "until": {"key": "v"}, "max_rounds": 2, "body": []},
         InvalidCoordinationError, "body must hold at least one task"),
        ({"kind": "loop", "id": "l", "check": "m1", "until": {"key": "v"}, "max_rounds": 2,
          "body": [{"id": "b", "type": "t", "depends_on": ["m1"]}]}, InvalidCoordinationError, "not in the body"),
        ({"kind": "merge", "id": "x"}, InvalidCoordinationError, "kind 'merge'"),
    ],
)
def test_bad_coordination_specs_are_refused_whole(rt, uid, item, error, match):
    m1 = f"{uid}-m1"
    item = {k: ([m1 if m == "m1" else m for m in v] if k == "members" else m1 if v == "m1" else v) for k, v in item.items()}
    with pytest.raises(error, match=match):
        rt.submit([answer(m1, 1), item])
    with pytest.raises(omoi.TaskNotFoundError):
        rt.get(m1)
    assert issubclass(error, InvalidSubmissionError)


# ------------------------------------------------------------------ scheduler kills


def test_a_sync_survives_a_scheduler_kill(own_runtime, uid):
    rt = own_runtime
    rt.spawn_agent("coord-k", capabilities=[CAP], capacity=4, handlers=HANDLERS)
    a, b, s = f"{uid}-a", f"{uid}-b", f"{uid}-s"
    go = f"{uid}-go"
    rt.submit([answer(a, "A"), answer(b, "B", gate_key=go), omoi.SyncSpec(id=s, members=[a, b], timeout=600)])
    assert rt.wait([a], timeout=60) == {a: "completed"}
    ray.kill(rt.scheduler, no_restart=False)
    ray.get(gate().open.remote(go))
    assert rt.wait([s], timeout=120) == {s: "completed"}
    assert rt.get(s).result == {a: "A", b: "B"}
    assert Counter(_types(rt, s)) == {"coordination.sync.created": 1, "coordination.sync.ready": 1}


def test_handler_splits_are_all_or_nothing_across_scheduler_kills(own_runtime, uid):
    rt = own_runtime
    rt.spawn_agent("coord-s", capabilities=[CAP], capacity=4, handlers=HANDLERS)
    n, parts = 30, 4
    parents = [f"{uid}-p{i}" for i in range(n)]
    cont = f"{uid}-cont"
    rt.submit([
        *(omoi.TaskSpec(id=p, type="split", requires=[CAP],
                        payload={"children": [answer(f"{p}-c{j}", j).model_dump() for j in range(parts)]})
          for p in parents),
        answer(cont, "end", depends_on=parents),
    ])
    for upto in (n // 3, 2 * n // 3):
        rt.wait(parents[:upto], timeout=120)
        ray.kill(rt.scheduler, no_restart=False)
    assert rt.wait([cont], timeout=180) == {cont: "completed"}
    children = [f"{p}-c{j}" for p in parents for j in range(parts)]
    assert Counter(rt.wait(children, timeout=60).values()) == {"completed": n * parts}
    assert sorted(rt.get(cont).depends_on) == sorted(parents + children)
    started = rt.get(cont).started_at
    assert all(rt.get(c).finished_at <= started for c in children)
    for p in parents:
        assert _types(rt, p) == ["coordination.split.created"]
