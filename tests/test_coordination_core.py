"""The coordination rules in the pure core (``omoi_ray/core/coordination.py``): syncs k of n,
loops, splits; driven through ``TaskGraph`` with a fake clock, restored from a ``MemoryStore``."""

from __future__ import annotations

import json
import random

import pytest

from omoi_ray.core.model import AttemptOutcome
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.core.storable import NODE_RESULT_ALLOWANCE_BYTES
from omoi_ray.errors import InvalidCoordinationError, InvalidSubmissionError, UnknownDependencyError
from omoi_ray.specs.coordination import LoopSpec, SyncSpec, parse_submission, read_specs
from omoi_ray.store.memory import MemoryStore
from tests.graph_harness import Harness, spec

FAIL = AttemptOutcome.PERMANENT_FAILURE


def rows(changes) -> dict:
    """The tasks of a change set by id (created or updated: both are the latest state)."""
    return {t.id: t for t in [*changes.created, *changes.updated]}


def harness() -> Harness:
    h = Harness()
    h.graph = TaskGraph(lease_ttl=30.0, rng=random.Random(7), read_specs=read_specs(10_000))
    return h


def sync(sid: str, members: list[str], k: int | None = None, timeout: float | None = None):
    return SyncSpec(id=sid, members=members, k=k, timeout=timeout).to_new_tasks()[0]


def review_loop(max_rounds: int = 3):
    return LoopSpec(
        id="L", check="review", until={"key": "verdict", "equals": "approve"}, max_rounds=max_rounds,
        body=[{"id": "revise", "type": "t"}, {"id": "review", "type": "t", "depends_on": ["revise"]}],
    ).to_new_tasks()[0]


def test_sync_completes_at_k_with_member_results_in_member_order():
    h = harness()
    w = h.agent("w", capacity=8)
    h.submit(spec("a"), spec("b"), spec("c"), sync("s", ["c", "a", "b"], k=2), spec("after", "s"))
    h.claim(w)
    h.run(w, "a", result={"v": 1})
    assert h.status("s") == "pending"
    h.run(w, "c", result={"v": 3})
    assert h.status("s") is None  # completed and left memory
    changes = h.drain()
    done = rows(changes)
    assert done["s"].status.value == "completed"
    assert done["s"].result == {"c": {"v": 3}, "a": {"v": 1}}
    assert h.status("after") == "ready"
    assert [e.type for e in h.events if e.entity_id == "s" and e.type.startswith("coordination")] == [
        "coordination.sync.created", "coordination.sync.ready",
    ]
    h.run(w, "b", result={"v": 2})  # a late member still completes; the sync's result is fixed
    assert h.status("b") is None


def test_sync_survives_a_failed_member_while_k_is_reachable_and_fails_at_once_when_not():
    h = harness()
    w = h.agent("w", capacity=8)
    h.submit(spec("a", max_retries=0), spec("b", max_retries=0), spec("c"), sync("s", ["a", "b", "c"], k=2),
             spec("after", "s"))
    h.claim(w)
    h.run(w, "a", outcome=FAIL, error="no")
    assert h.status("s") == "pending" and h.status("after") == "pending"
    h.run(w, "b", outcome=FAIL, error="no")
    assert h.status("s") is None and h.status("after") is None
    changes = h.drain()
    failed = rows(changes)
    assert failed["s"].status.value == "failed"
    assert failed["s"].reason == "sync 's' cannot reach 2 of 3: members 'a', 'b' failed"
    assert failed["after"].status.value == "upstream_failed" and failed["after"].upstream == "s"
    assert "c" in h.graph.tasks  # the last member is left to run
    assert "coordination.sync.failed" in h.event_types("s")


def test_an_upstream_failed_member_counts_as_failed():
    h = harness()
    w = h.agent("w", capacity=8)
    h.submit(spec("root", max_retries=0), spec("a", "root"), spec("b"), sync("s", ["a", "b"]))
    h.claim(w)
    h.run(w, "root", outcome=FAIL, error="no")
    h.drain()
    assert h.status("s") is None
    assert "'a' failed" in next(e for e in h.events if e.type == "coordination.sync.failed").payload["reason"]


def test_sync_timeout_fails_it_and_is_restored_after_a_restart():
    h = harness()
    store = MemoryStore()
    w = h.agent("w")
    h.submit(spec("a"), spec("b"), sync("s", ["a", "b"], timeout=60.0))
    h.claim(w)
    h.run(w, "a", result=1)
    store.apply(h.graph.take_changes())
    # the scheduler restarts: memory is rebuilt from what was stored
    snap = store.load()
    g = TaskGraph(lease_ttl=30.0, rng=random.Random(1), read_specs=read_specs(10_000))
    g.restore(snap.tasks, snap.dependencies, snap.agents, snap.open_attempts, snap.next_seq, h.now + 1)
    assert g.tasks["s"].coordination["results"] == {"a": 1}
    g.advance(h.now + 59)
    assert "s" in g.tasks
    g.advance(h.now + 61)
    assert "s" not in g.tasks
    changes = g.take_changes()
    s = rows(changes)["s"]
    assert s.status.value == "failed"
    assert s.reason == "sync 's' timed out after 60s with 1 of 2 members completed"


def test_sync_of_members_already_finished_settles_at_submission():
    h = harness()
    w = h.agent("w")
    h.submit(spec("a"))
    h.claim(w)
    h.run(w, "a", result="A")
    from omoi_ray.core.submission import StoredTask
    from omoi_ray.core.tasks import TaskStatus

    stored = {"a": StoredTask("a", TaskStatus.COMPLETED, "fp-a", result="A")}
    h.submit(sync("s", ["a"]), stored=stored)
    changes = h.drain()
    assert {t.id: t.result for t in changes.created}["s"] == {"a": "A"}


@pytest.mark.parametrize(("fill", "fits"), [(3519, True), (3520, False)])
def test_a_sync_result_may_pass_the_cap_by_1_kib_and_its_key_per_member_and_no_more(fill, fits):
    h = harness()
    h.graph = TaskGraph(lease_ttl=30.0, read_specs=read_specs(10_000), result_max_bytes=5000)
    w = h.agent("w")
    h.submit(spec("a"), spec("b"), sync("s", ["a", "b"]), spec("after", "s"))
    h.claim(w)
    h.run(w, "a", result="x" * 3520)  # each member's result fits the cap
    h.run(w, "b", result="y" * fill)
    changes = h.drain()
    s = rows(changes)["s"]
    size = len('{"a":"' + "x" * 3520 + '","b":"' + "y" * fill + '"}')
    limit = 5000 + 2 * (NODE_RESULT_ALLOWANCE_BYTES + len('"a"'))  # 7054: the cap, then 1 KiB and the key each
    assert size == limit + (0 if fits else 1)
    if fits:
        assert (s.status.value, s.result) == ("completed", {"a": "x" * 3520, "b": "y" * fill})
        assert h.status("after") == "ready"
        return
    assert (s.status.value, s.result) == ("failed", None)
    assert s.reason == s.error == (
        f"sync 's' result cannot be stored: {size} bytes of JSON, over the limit of {limit} (OMOI_RESULT_MAX_BYTES"
        f" 5000, plus {NODE_RESULT_ALLOWANCE_BYTES} bytes and the key for each of 2 wrapped results)"
    )
    assert rows(changes)["after"].status.value == "upstream_failed"
    assert [e.type for e in h.events if e.entity_id == "s" and e.type.startswith("coordination")] == [
        "coordination.sync.created", "coordination.sync.failed",
    ]


def test_a_loop_whose_last_check_result_fits_the_cap_completes_its_fields_are_allowed():
    h = harness()
    h.graph = TaskGraph(lease_ttl=30.0, read_specs=read_specs(10_000), result_max_bytes=100)
    w = h.agent("w")
    h.submit(spec("impl"), spec("review", "impl"), review_loop(1), spec("after", "L"))
    h.claim(w)
    h.run(w, "impl")
    h.claim(w)
    last = {"verdict": "approve", "note": "n" * 69}  # exactly the cap: 100 bytes
    assert len(json.dumps(last, separators=(",", ":"))) == 100
    h.run(w, "review", result=last)
    loop = rows(h.drain())["L"]
    assert (loop.status.value, loop.result) == ("completed", {"outcome": "approved", "rounds": 1, "last": last})
    assert h.status("after") == "ready"


def test_unknown_member_is_refused_and_nothing_is_created():
    h = harness()
    with pytest.raises(UnknownDependencyError, match="'ghost'"):
        h.submit(spec("a"), sync("s", ["a", "ghost"]))
    assert h.graph.tasks == {}


def test_nodes_are_never_in_the_ready_index():
    h = harness()
    w = h.agent("w")
    h.submit(spec("a"), sync("s", ["a"]))
    assert h.claim(w) == ["a"]
    assert "s" not in h.graph.ready


def _run_loop(verdicts: list[str], max_rounds: int = 3) -> Harness:
    h = harness()
    w = h.agent("w", capacity=8)
    h.submit(spec("impl"), spec("review", "impl"), review_loop(max_rounds), spec("ship", "L"))
    h.claim(w)
    h.run(w, "impl")
    h.claim(w)
    h.run(w, "review", result={"verdict": verdicts[0]})
    for r, verdict in enumerate(verdicts[1:], start=2):
        assert h.claim(w) == [f"L.r{r}.revise"]
        h.run(w, f"L.r{r}.revise")
        assert h.claim(w) == [f"L.r{r}.review"]
        h.run(w, f"L.r{r}.review", result={"verdict": verdict})
    return h


def test_loop_takes_two_rounds_and_ends_approved():
    h = _run_loop(["changes", "approve"])
    changes = h.drain()
    loop = rows(changes)["L"]
    assert loop.result == {"outcome": "approved", "rounds": 2, "last": {"verdict": "approve"}}
    assert h.status("ship") == "ready"
    split = next(e for e in h.events if e.type == "coordination.split.created")
    assert split.entity_id == "L" and split.payload["children"] == ["L.r2.revise", "L.r2.review"]


def test_loop_exhausts_its_rounds():
    h = _run_loop(["changes", "changes"], max_rounds=2)
    loop = rows(h.drain())["L"]
    assert loop.result == {"outcome": "rounds_exhausted", "rounds": 2, "last": {"verdict": "changes"}}


def test_loop_round_survives_a_restart():
    h = _run_loop(["changes"])
    store = MemoryStore()
    store.apply(h.graph.take_changes())
    snap = store.load()
    g = TaskGraph(lease_ttl=30.0, rng=random.Random(1), read_specs=read_specs(10_000))
    g.restore(snap.tasks, snap.dependencies, snap.agents, snap.open_attempts, snap.next_seq, h.now)
    assert g.tasks["L"].coordination["round"] == 2 and g.tasks["L"].waiting_on == 1
    assert g.tasks["L.r2.revise"].status.value == "ready"


def _loop_whose_check_ended_in_storage_only(verdict_or_failure) -> tuple[Harness, MemoryStore]:
    """A pending loop whose round-1 check is final in storage, the loop not judged: what rows
    written before loops were judged with their check's completion (or at submission) hold."""
    from omoi_ray.core.tasks import TaskStatus

    h = harness()
    w = h.agent("w", capacity=8)
    h.submit(spec("impl"), spec("review", "impl"), review_loop(3), spec("ship", "L"))
    h.claim(w)
    h.run(w, "impl")
    store = MemoryStore()
    store.apply(h.graph.take_changes())
    check = store.tasks["review"]
    if verdict_or_failure == "failed":
        check.status, check.error = TaskStatus.FAILED, "no"
    else:
        check.status, check.result = TaskStatus.COMPLETED, {"verdict": verdict_or_failure}
    assert store.tasks["L"].status is TaskStatus.PENDING
    return h, store


def _restart(h: Harness, store: MemoryStore) -> TaskGraph:
    snap = store.load()
    g = TaskGraph(lease_ttl=30.0, rng=random.Random(1), read_specs=read_specs(10_000))
    g.restore(snap.tasks, snap.dependencies, snap.agents, snap.open_attempts, snap.next_seq, h.now,
              stored_results=snap.node_results)
    return g


def test_a_restored_loop_whose_check_already_completed_starts_its_next_round():
    h, store = _loop_whose_check_ended_in_storage_only("changes")
    g = _restart(h, store)
    assert g.tasks["L"].coordination["round"] == 2 and g.tasks["L"].waiting_on == 1
    assert g.tasks["L.r2.revise"].status.value == "ready" and g.tasks["L.r2.review"].status.value == "pending"
    changes = g.take_changes()
    assert {t.id for t in changes.created} == {"L.r2.revise", "L.r2.review"}
    assert ("L", "L.r2.review") in changes.dependencies


def test_a_restored_loop_whose_check_already_approved_completes_and_its_dependent_runs():
    h, store = _loop_whose_check_ended_in_storage_only("approve")
    g = _restart(h, store)
    loop = rows(g.take_changes())["L"]
    assert (loop.status.value, loop.result) == ("completed", {"outcome": "approved", "rounds": 1,
                                                              "last": {"verdict": "approve"}})
    assert g.tasks["ship"].status.value == "ready"


def test_a_restored_loop_whose_check_already_failed_is_doomed():
    h, store = _loop_whose_check_ended_in_storage_only("failed")
    g = _restart(h, store)
    changes = rows(g.take_changes())
    assert (changes["L"].status.value, changes["L"].reason) == ("upstream_failed", "upstream task 'review' failed")
    assert changes["ship"].status.value == "upstream_failed"
    assert "L" not in g.tasks and "ship" not in g.tasks


def test_a_restored_loop_is_judged_by_its_current_check_not_an_earlier_round():
    h = _run_loop(["changes"])  # round 2 under way: round 1's check completed, the loop waits on L.r2.review
    store = MemoryStore()
    store.apply(h.graph.take_changes())
    g = _restart(h, store)
    assert g.tasks["L"].status.value == "pending" and g.tasks["L"].coordination["round"] == 2
    assert not g.take_changes().created  # nothing judged twice


def test_dynamic_split_creates_children_and_wires_dependents_in_one_change_set():
    h = harness()
    w = h.agent("w", capacity=8)
    h.submit(spec("p"), spec("cont", "p"))
    h.claim(w)
    h.start(w, "p")
    h.drain()
    children = parse_submission([{"id": "c1", "type": "t"}, {"id": "c2", "type": "t", "depends_on": ["c1"]}], 1000)
    from omoi_ray.core.claims import Report

    h.graph.apply_report(w, Report("finished", "p", 1, AttemptOutcome.COMPLETED, {"n": 2}, None, children), h.now)
    changes = h.drain()
    assert [t.id for t in changes.created] == ["c1", "c2"]
    assert ("cont", "c1") in changes.dependencies and ("cont", "c2") in changes.dependencies
    assert h.status("c1") == "ready" and h.status("c2") == "pending" and h.status("cont") == "pending"
    assert h.graph.tasks["cont"].waiting_on == 2
    h.claim(w)
    h.run(w, "c1")
    h.claim(w)
    h.run(w, "c2")
    assert h.status("cont") == "ready"


def test_bad_split_children_fail_the_parent_and_create_nothing():
    h = harness()
    w = h.agent("w", capacity=8)
    h.submit(spec("p", max_retries=3), spec("other"))
    h.claim(w)
    h.start(w, "p")
    h.drain()
    children = parse_submission([{"id": "other", "type": "t"}], 1000)
    from omoi_ray.core.claims import Report

    h.graph.apply_report(w, Report("finished", "p", 1, AttemptOutcome.COMPLETED, None, None, children), h.now)
    changes = h.drain()
    assert changes.created == []
    p = rows(changes)["p"]
    assert p.status.value == "failed" and p.error.startswith("InvalidSplitError: split of task 'p' refused")


def test_static_split_emits_split_created():
    h = harness()
    h.submit(*parse_submission(
        [{"id": "p", "type": "t"}, {"kind": "split", "parent": "p", "children": [{"id": "c1", "type": "t"}]}], 1000
    ))
    h.drain()
    event = next(e for e in h.events if e.type == "coordination.split.created")
    assert event.entity_id == "p" and event.payload == {"children": ["c1"]}
    assert h.graph.tasks["c1"].depends_on == ("p",)


def test_split_children_may_depend_on_their_parent_and_on_each_other():
    h = harness()
    w = h.agent("w", capacity=8)
    h.submit(spec("p"), spec("cont", "p"))
    h.claim(w)
    h.start(w, "p")
    children = parse_submission([{"id": "c1", "type": "t", "depends_on": ["p"]},
                                 {"id": "c2", "type": "t", "depends_on": ["p", "c1"]}], 1000)
    from omoi_ray.core.claims import Report

    h.graph.apply_report(w, Report("finished", "p", 1, AttemptOutcome.COMPLETED, None, None, children), h.now)
    assert h.status("c1") == "ready" and h.status("c2") == "pending"
    assert h.graph.tasks["c1"].depends_on == ("p",)  # no edge to itself
    assert sorted(h.graph.tasks["cont"].depends_on) == ["c1", "c2", "p"]


def test_a_split_with_a_cycle_is_refused():
    h = harness()
    w = h.agent("w", capacity=8)
    h.submit(spec("p"))
    h.claim(w)
    h.start(w, "p")
    h.drain()
    children = parse_submission([{"id": "c1", "type": "t", "depends_on": ["c2"]},
                                 {"id": "c2", "type": "t", "depends_on": ["c1"]}], 1000)
    from omoi_ray.core.claims import Report

    h.graph.apply_report(w, Report("finished", "p", 1, AttemptOutcome.COMPLETED, None, None, children), h.now)
    changes = h.drain()
    assert changes.created == [] and "cycle: c1 -> c2 -> c1" in rows(changes)["p"].error


def _split(h: Harness, w, parent: str, children: list[dict]):
    from omoi_ray.core.claims import Report

    h.start(w, parent)
    kids = parse_submission(children, 1000)
    h.graph.apply_report(w, Report("finished", parent, 1, AttemptOutcome.COMPLETED, None, None, kids), h.now)
    return rows(h.drain())


@pytest.mark.parametrize("depends_on", [["after"], ["later"]])
def test_a_split_child_depending_on_a_task_downstream_of_its_parent_is_refused(depends_on):
    h = harness()
    w = h.agent("w", capacity=8)
    h.submit(spec("p"), spec("after", "p"), spec("later", "after"))
    h.claim(w)
    changed = _split(h, w, "p", [{"id": "kid", "type": "t", "depends_on": depends_on}])
    assert "kid" not in changed and "kid" not in h.graph.tasks
    p = changed["p"]
    assert p.status.value == "failed" and p.error.startswith("InvalidSplitError: split of task 'p' refused")
    assert f"child 'kid' depends on '{depends_on[0]}'" in p.error and "a cycle" in p.error


def test_a_split_child_may_depend_on_a_sync_of_its_parent():
    h = harness()
    w = h.agent("w", capacity=8)
    h.submit(spec("p"), sync("s", ["p"]))
    h.claim(w)
    _split(h, w, "p", [{"id": "kid", "type": "t", "depends_on": ["s"]}])
    assert h.status("kid") == "ready"  # the sync saw its member complete; no edge back to kid


def test_a_new_task_with_a_live_loops_round_id_is_refused():
    h = harness()
    w = h.agent("w", capacity=8)
    h.submit(spec("impl"), spec("review", "impl"), review_loop())
    with pytest.raises(InvalidSubmissionError, match="task id 'L.r2.revise' is reserved for a round of loop 'L'"):
        h.submit(spec("L.r2.revise"))
    with pytest.raises(InvalidSubmissionError, match="reserved for a round of loop 'L'"):
        h.submit(spec("L.r7.anything.else"))
    h.claim(w)
    changed = _split(h, w, "impl", [{"id": "L.r3.review", "type": "t"}])
    assert "reserved for a round of loop 'L'" in changed["impl"].error
    h2 = harness()
    with pytest.raises(InvalidSubmissionError, match="'L.r2.revise' is reserved"):  # same submission
        h2.submit(spec("review"), spec("L.r2.revise"), review_loop())
    h2.submit(spec("Lx.r2.revise"), spec("L.r2"))  # not a round id of any loop: fine


def test_a_loop_whose_check_already_completed_is_judged_at_submission():
    from omoi_ray.core.submission import StoredTask
    from omoi_ray.core.tasks import TaskStatus

    h = harness()
    stored = {"review": StoredTask("review", TaskStatus.COMPLETED, "", result={"verdict": "approve"})}
    h.submit(review_loop(), spec("ship", "L"), stored=stored)
    loop = rows(h.drain())["L"]
    assert loop.result == {"outcome": "approved", "rounds": 1, "last": {"verdict": "approve"}}
    assert h.status("ship") == "ready"
    h = harness()
    stored = {"review": StoredTask("review", TaskStatus.COMPLETED, "", result={"verdict": "changes"})}
    h.submit(review_loop(), stored=stored)
    assert h.status("L.r2.revise") == "ready" and h.graph.tasks["L"].depends_on == ("L.r2.review",)


def test_a_loop_whose_check_already_failed_is_doomed():
    from omoi_ray.core.submission import StoredTask
    from omoi_ray.core.tasks import TaskStatus

    h = harness()
    h.submit(review_loop(), spec("ship", "L"), stored={"review": StoredTask("review", TaskStatus.FAILED, "")})
    changed = rows(h.drain())
    assert changed["L"].status.value == "upstream_failed" and changed["ship"].status.value == "upstream_failed"


@pytest.mark.parametrize(
    ("body", "cycle"),
    [
        ([{"id": "a", "type": "t", "depends_on": ["b"]}, {"id": "b", "type": "t", "depends_on": ["a"]}], "'a' -> 'b' -> 'a'"),
        ([{"id": "a", "type": "t", "depends_on": ["a"]}], "'a' -> 'a'"),
    ],
)
def test_a_loop_body_with_a_cycle_is_refused(body, cycle):
    with pytest.raises(InvalidCoordinationError, match=f"loop 'L': body: body tasks form a cycle: {cycle}"):
        LoopSpec(id="L", check="c", until={"key": "v", "equals": 1}, max_rounds=3, body=body)


@pytest.mark.parametrize("kind", [["sync"], None, 3])
def test_a_kind_that_is_not_a_string_is_a_typed_error(kind):
    with pytest.raises(InvalidCoordinationError, match="submission item 0: kind must be a string"):
        parse_submission([{"kind": kind, "id": "s", "members": ["a"]}], 1000)
