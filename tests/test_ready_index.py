"""The ready index returns exactly what a full scan would, for any capability set."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from omoi_ray.core.ready import ReadyIndex

CAPS = ["a", "b", "c"]
TYPES = ["x", "y", "z"]
#: what an agent handles: None (a default handler) or some types
HANDLES = st.one_of(st.none(), st.frozensets(st.sampled_from(TYPES), min_size=1))


def test_priority_then_submission_order():
    idx = ReadyIndex()
    idx.push("low", frozenset(), 1, seq=1, task_type="x")
    idx.push("high-late", frozenset(), 3, seq=5, task_type="x")
    idx.push("high-early", frozenset(), 3, seq=2, task_type="x")
    idx.push("crit", frozenset(), 4, seq=9, task_type="x")
    assert idx.pop_for(frozenset(), 10, handles=None) == ["crit", "high-early", "high-late", "low"]
    assert len(idx) == 0


def test_capabilities_filter_and_unclaimable():
    idx = ReadyIndex()
    idx.push("gpu", frozenset({"gpu"}), 4, seq=1, task_type="x")
    idx.push("plain", frozenset(), 1, seq=2, task_type="x")
    assert idx.pop_for(frozenset({"cpu"}), 10, handles=None) == ["plain"]
    assert idx.unclaimable([frozenset({"cpu"})]) == {frozenset({"gpu"}): 1}
    assert idx.unclaimable([frozenset({"cpu", "gpu"})]) == {}
    assert idx.pop_for(frozenset({"gpu"}), 10, handles=None) == ["gpu"]


def test_an_agent_is_handed_only_the_types_it_handles():
    idx = ReadyIndex()
    idx.push("b1", frozenset(), 4, seq=1, task_type="b")
    idx.push("a1", frozenset(), 1, seq=2, task_type="a")
    idx.push("b2", frozenset(), 1, seq=3, task_type="b")
    # an agent handling only "a" never gets "b", even of higher priority
    assert idx.pop_for(frozenset(), 10, handles=frozenset({"a"})) == ["a1"]
    assert idx.pop_for(frozenset(), 10, handles=frozenset({"a"})) == []
    # nobody alive handles "b" (the agent that has the capabilities handles only "a")
    assert idx.unhandled([(frozenset(), frozenset({"a"}))]) == {("b", frozenset()): 2}
    assert idx.unclaimable([frozenset()]) == {}
    # a default handler (handles None) takes every type
    assert idx.unhandled([(frozenset(), frozenset({"a"})), (frozenset(), None)]) == {}
    assert idx.pop_for(frozenset(), 10, handles=None) == ["b1", "b2"]


def test_type_and_capabilities_both_count():
    idx = ReadyIndex()
    idx.push("gpu-a", frozenset({"gpu"}), 2, seq=1, task_type="a")
    idx.push("cpu-b", frozenset(), 2, seq=2, task_type="b")
    profiles = [(frozenset(), frozenset({"a"}))]
    # gpu-a lacks capabilities (unclaimable); cpu-b lacks a handler among capable agents (unhandled)
    assert idx.unclaimable(caps for caps, _ in profiles) == {frozenset({"gpu"}): 1}
    assert idx.unhandled(profiles) == {("b", frozenset()): 1}
    assert idx.counts_by_requirement() == {frozenset({"gpu"}): 1, frozenset(): 1}
    assert idx.pop_for(frozenset({"gpu"}), 10, handles=frozenset({"b"})) == ["cpu-b"]
    assert idx.pop_for(frozenset({"gpu"}), 10, handles=frozenset({"a", "b"})) == ["gpu-a"]


def test_discarded_tasks_are_never_returned_and_can_come_back():
    idx = ReadyIndex()
    for i in range(5):
        idx.push(f"t{i}", frozenset(), 2, seq=i, task_type="x")
    assert idx.discard("t1") and not idx.discard("t1")
    idx.push("t1", frozenset(), 2, seq=1, task_type="x")
    idx.discard("t3")
    assert idx.pop_for(frozenset(), 10, handles=None) == ["t0", "t1", "t2", "t4"]


def test_limit_is_respected():
    idx = ReadyIndex()
    for i in range(10):
        idx.push(f"t{i}", frozenset(), 2, seq=i, task_type="x")
    assert idx.pop_for(frozenset(), 3, handles=None) == ["t0", "t1", "t2"]
    assert len(idx) == 7


def test_many_discards_trigger_compaction_without_losing_members():
    idx = ReadyIndex()
    for i in range(3000):
        idx.push(f"t{i}", frozenset(), 2, seq=i, task_type="x")
    for i in range(0, 3000, 3):
        idx.discard(f"t{i}")
    expected = [f"t{i}" for i in range(3000) if i % 3]
    assert idx.pop_for(frozenset(), 5000, handles=None) == expected


def test_a_group_that_empties_is_dropped_and_can_come_back():
    idx = ReadyIndex()
    for i in range(50):  # many short-lived task types, e.g. one per submitted pattern
        idx.push(f"t{i}", frozenset(), 2, seq=i, task_type=f"type{i}")
        assert idx.pop_for(frozenset(), 10, handles=None) == [f"t{i}"]
    idx.push("gone", frozenset(), 2, seq=60, task_type="late")
    assert idx.discard("gone")
    # claiming visits only the groups holding tasks now, not every type ever seen
    assert idx._heaps == {} and idx._sizes == {}  # noqa: SLF001 - the cost this test is about
    # a profile whose eligible groups were cached before the group went still sees it come back
    idx.push("back", frozenset(), 2, seq=61, task_type="type0")
    assert idx.pop_for(frozenset(), 10, handles=frozenset({"type0"})) == ["back"]
    idx.push("again", frozenset(), 2, seq=62, task_type="type0")
    assert idx.pop_for(frozenset(), 10, handles=frozenset({"type0"})) == ["again"]


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.integers(0, 30),
            st.frozensets(st.sampled_from(CAPS), max_size=2),
            st.integers(1, 4),
            st.sampled_from(TYPES),
        ),
        st.tuples(st.just("discard"), st.integers(0, 30)),
        st.tuples(st.just("pop"), st.frozensets(st.sampled_from(CAPS)), st.integers(0, 5), HANDLES),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_matches_a_brute_force_model(operations):
    idx = ReadyIndex()
    model: dict[str, tuple[frozenset[str], int, int, str]] = {}
    seq = 0
    for op in operations:
        if op[0] == "push":
            _, n, req, prio, task_type = op
            tid = f"t{n}"
            seq += 1
            if tid not in model:
                model[tid] = (req, prio, seq, task_type)
            idx.push(tid, req, prio, seq, task_type=task_type)
        elif op[0] == "discard":
            tid = f"t{op[1]}"
            assert idx.discard(tid) == (tid in model)
            model.pop(tid, None)
        else:
            _, caps, limit, handles = op
            eligible = sorted(
                (tid for tid, (req, _, _, t) in model.items() if req <= caps and (handles is None or t in handles)),
                key=lambda tid: (-model[tid][1], model[tid][2]),
            )[:limit]
            assert idx.pop_for(caps, limit, handles=handles) == eligible
            for tid in eligible:
                del model[tid]
        assert len(idx) == len(model)
        # only groups holding tasks are kept (an emptied group is dropped)
        assert set(idx._heaps) == {(t, req) for req, _, _, t in model.values()}  # noqa: SLF001
