"""Merge strategies (``omoi_ray.core.merge``): each one's documented rule, as examples and
properties (union and intersection do not depend on the sources' order; combine does)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omoi_ray.core import merge as m
from omoi_ray.errors import MergeError, MergeQuorumError, MergeTieError

values = st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "c"]), st.booleans(), st.none())
results = st.dictionaries(st.sampled_from(["x", "y", "z"]), st.one_of(values, st.lists(values, max_size=3)), max_size=3)
source_lists = st.lists(results, min_size=1, max_size=5).map(lambda rs: [(f"s{i}", r) for i, r in enumerate(rs)])


def test_combine_later_source_wins_in_declared_order():
    sources = [("a", {"x": 1, "y": 1}), ("b", {"x": 2}), ("c", None)]
    assert m.combine(sources) == {"x": 2, "y": 1}
    assert m.combine(list(reversed(sources))) == {"x": 1, "y": 1}


def test_union_gathers_distinct_values_and_flattens_lists():
    sources = [("a", {"files": ["f1", "f2"], "ok": True}), ("b", {"files": ["f2", "f3"], "ok": True})]
    assert m.union(sources) == {"files": ["f1", "f2", "f3"], "ok": [True]}
    assert m.union(sources) != m.combine(sources)


def test_intersection_keeps_what_every_source_agrees_on():
    sources = [("a", {"x": 1, "y": 2, "z": 3}), ("b", {"x": 1, "y": 5, "w": 0}), ("c", None)]
    assert m.intersection(sources) == {"x": 1}
    assert m.intersection([]) == {}


def test_a_source_that_is_not_a_mapping_is_named():
    with pytest.raises(MergeError, match="source 'b' returned list"):
        m.combine([("a", {}), ("b", [1])])


@given(source_lists, st.randoms())
def test_union_and_intersection_are_order_insensitive(sources, rnd):
    shuffled = list(sources)
    rnd.shuffle(shuffled)
    assert m.union(shuffled) == m.union(sources)
    assert m.intersection(shuffled) == m.intersection(sources)


@given(source_lists)
def test_combine_is_the_last_writer_per_key(sources):
    out = m.combine(sources)
    for key, value in out.items():
        assert value == [r[key] for _, r in sources if key in r][-1]


def test_combine_is_not_order_insensitive():
    a, b = ("a", {"x": 1}), ("b", {"x": 2})
    assert m.combine([a, b]) != m.combine([b, a])


def test_majority_returns_winner_and_counts():
    sources = [("e1", {"answer": "yes"}), ("e2", {"answer": "no"}), ("e3", {"answer": "yes"}), ("e4", {})]
    out = m.majority(sources, key="answer", quorum=2)
    assert out == {
        "winner": "yes", "votes": 2, "counts": [{"value": "yes", "votes": 2}, {"value": "no", "votes": 1}],
        "quorum": 2, "tie": False, "abstained": ["e4"],
    }


def test_majority_default_quorum_is_a_strict_majority_of_sources():
    sources = [("e1", {"a": 1}), ("e2", {"a": 2}), ("e3", {"a": 3}), ("e4", {"a": 1})]
    with pytest.raises(MergeQuorumError, match="2 vote\\(s\\), under the quorum of 3"):
        m.majority(sources, key="a")


@pytest.mark.parametrize(("tie", "winner"), [("first", "no"), ("none", None)])
def test_majority_tie_policies(tie, winner):
    sources = [("e1", {"a": "no"}), ("e2", {"a": "yes"})]
    out = m.majority(sources, key="a", quorum=1, tie=tie)
    assert (out["winner"], out["tie"]) == (winner, True)


def test_majority_tie_fails_by_default():
    with pytest.raises(MergeTieError, match='tie at 1 vote\\(s\\) between "no", "yes"'):
        m.majority([("e1", {"a": "no"}), ("e2", {"a": "yes"})], key="a", quorum=1)


@given(st.lists(st.sampled_from(["p", "q", "r"]), min_size=1, max_size=9), st.randoms())
def test_majority_winner_has_the_most_votes_whatever_the_order(votes, rnd):
    sources = [(f"e{i}", {"v": v}) for i, v in enumerate(votes)]
    shuffled = list(sources)
    rnd.shuffle(shuffled)
    top = max(votes.count(v) for v in votes)
    out = m.majority(shuffled, key="v", quorum=1, tie="none")
    assert out["votes"] == top
    assert (out["winner"] is None) == out["tie"]
    if out["winner"] is not None:
        assert votes.count(out["winner"]) == top


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("avg", "merge.strategy must be one of combine, union"),
        ({"strategy": "majority"}, "merge.key is required by strategy 'majority'"),
        ({"strategy": "majority", "key": "a", "quorum": 0}, "merge.quorum must be an integer"),
        ({"strategy": "majority", "key": "a", "quorum": True}, "merge.quorum must be an integer"),
        ({"strategy": "majority", "key": "a", "tie": "coin"}, "merge.tie must be one of fail, first, none"),
        ({"strategy": "combine", "key": "a"}, "strategy 'combine' takes no parameter 'key'"),
        ({"strategy": "custom", "function": "os.system"}, "merge.function must be an import path"),
        (["combine"], "merge must be a strategy name or a mapping"),
    ],
)
def test_bad_specs_name_the_field(spec, message):
    with pytest.raises(ValueError, match=message):
        m.check_merge(spec)


def test_specs_are_normalised_with_defaults():
    assert m.check_merge("union") == {"strategy": "union"}
    assert m.check_merge({"strategy": "majority", "key": "answer"}) == {
        "strategy": "majority", "key": "answer", "quorum": None, "tie": "fail",
    }


def test_sync_upstream_contributes_its_members_in_order():
    upstream = [("t0", "task", {"a": 0}), ("s", "sync", {"m2": {"a": 2}, "m1": {"a": 1}}), ("t9", "task", None)]
    assert m.sources_of(upstream) == [("t0", {"a": 0}), ("m2", {"a": 2}), ("m1", {"a": 1}), ("t9", None)]


def test_custom_runs_the_given_function_on_the_sources():
    spec = m.check_merge({"strategy": "custom", "function": "pkg.mod:fn"})
    assert m.merge(spec, [("a", 1), ("b", 2)], custom=lambda s: sum(r for _, r in s)) == 3
    with pytest.raises(MergeError, match="was not resolved"):
        m.merge(spec, [("a", 1)])


def test_handlers_can_test_their_merge_without_ray():
    from omoi_ray.testing import make_context, run_handler

    def decide(task, ctx):
        return {"decision": ctx.merged()["winner"]}

    upstream = {"e1": {"answer": "yes"}, "e2": {"answer": "no"}, "e3": {"answer": "yes"}}
    ctx = make_context("d", upstream=upstream, merge={"strategy": "majority", "key": "answer"})
    assert run_handler(decide, ctx=ctx) == {"decision": "yes"}
    assert ctx.merges == [{"strategy": "majority", "sources": ["e1", "e2", "e3"], "result_keys": [
        "abstained", "counts", "quorum", "tie", "votes", "winner"]}]
    custom = {"strategy": "custom", "function": "tests.join_handlers:count_sources"}
    assert run_handler("tests.join_handlers:join", upstream={"a": 1}, merge=custom) == {"merged": {"ids": ["a"], "n": 1}}
    with pytest.raises(MergeError, match="merge function 'tests.join_handlers:nope'"):
        run_handler("tests.join_handlers:join", upstream={"a": 1},
                    merge={"strategy": "custom", "function": "tests.join_handlers:nope"})


def test_a_join_without_sources_is_refused():
    from omoi_ray.errors import InvalidMergeError
    from omoi_ray.specs.tasks import parse_new_tasks

    with pytest.raises(InvalidMergeError, match="task 'j': merge: .*give it depends_on"):
        parse_new_tasks([{"id": "j", "type": "join", "merge": "combine"}], 10_000)
    assert parse_new_tasks([{"id": "j", "type": "join", "merge": "combine", "depends_on": ["a"]}], 10_000)
