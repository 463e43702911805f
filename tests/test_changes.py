"""The change-log contract (``omoi_ray.core.changes``): declared merge rules and the recorder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omoi_ray.core.changes import APPEND, UNION, ChangeRecorder, ChangeSet, latest, merge_rule
from omoi_ray.core.locks import LockChanges
from omoi_ray.core.task_changes import TaskChanges


@dataclass(slots=True)
class Sample(ChangeSet):
    NOTIFY: ClassVar[tuple[str, ...]] = ("told",)

    rows: list[tuple[str, int]] = field(default_factory=list, metadata=merge_rule(latest(lambda r: r[0])))
    log: list[str] = field(default_factory=list, metadata=merge_rule(APPEND))
    marks: set[str] = field(default_factory=set, metadata=merge_rule(UNION))
    told: list[str] = field(default_factory=list)  # no rule declared: appended


def test_merge_appends_unites_and_keeps_the_latest_state_per_key():
    first = Sample(rows=[("a", 1), ("b", 1)], log=["x"], marks={"m1"}, told=["t1"])
    second = Sample(rows=[("a", 2), ("c", 1)], log=["y", "x"], marks={"m1", "m2"}, told=["t2"])
    merged = Sample.merge([first, second])
    assert merged.rows == [("a", 2), ("b", 1), ("c", 1)]  # first-seen key order, last state
    assert merged.log == ["x", "y", "x"]
    assert merged.marks == {"m1", "m2"}
    assert merged.told == ["t1", "t2"]
    assert first.rows == [("a", 1), ("b", 1)]  # the inputs are left as they were


def test_merge_of_one_batch_is_that_batch():
    only = Sample(log=["x"])
    assert Sample.merge([only]) is only


def test_bool_is_rows_to_write_and_worth_flushing_adds_whom_to_tell():
    assert not Sample()
    assert not Sample().worth_flushing()
    told = Sample(told=["t"])
    assert not told and told.worth_flushing()
    assert Sample(marks={"m"}) and Sample(log=["x"]).worth_flushing()


@given(st.lists(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 9)), max_size=4), min_size=1, max_size=5))
def test_merging_in_order_equals_applying_in_order(batches):
    merged = Sample.merge([Sample(rows=list(b), log=[k for k, _ in b]) for b in batches])
    state: dict[str, int] = {}
    for b in batches:
        state.update(b)
    assert dict(merged.rows) == state
    assert merged.log == [k for b in batches for k, _ in b]


def test_the_recorder_follows_the_declared_rules_and_starts_empty_after_take():
    rec: ChangeRecorder[Sample] = ChangeRecorder(Sample)
    rec.rows.add(("a", 1))
    rec.rows.add(("b", 1))
    rec.rows.add(("a", 2))
    rec.log.add("x")
    rec.log.add("x")
    rec.marks.add("m")
    rec.marks.add("m")
    assert "a" in rec.rows and "z" not in rec.rows
    taken = rec.take()
    assert taken == Sample(rows=[("a", 2), ("b", 1)], log=["x", "x"], marks={"m"})
    assert type(taken.log) is list and type(taken.marks) is set and type(taken.rows) is list
    assert rec.take() == Sample()
    with pytest.raises(AttributeError, match="no field 'nope'"):
        rec.nope  # noqa: B018


def test_the_writers_change_sets_declare_a_rule_for_every_field():
    import dataclasses

    for kind in (TaskChanges, LockChanges):
        assert all("merge" in f.metadata for f in dataclasses.fields(kind)), kind
        assert set(kind.NOTIFY) <= {f.name for f in dataclasses.fields(kind)}
