"""One declaration of the task's fields (``omoi_ray.core.task_fields``): every shape class agrees
with it, a field missing from a shape is caught, and every declared field round-trips
spec -> new task -> task -> row -> task -> info (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import dataclasses
import random
from types import SimpleNamespace
from typing import Any

import pytest

from omoi_ray.core import task_fields
from omoi_ray.core.model import Attempt, AttemptOutcome, NewTask, Task
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.core.task_fields import (
    ATTEMPT_FIELDS,
    FIELDS,
    KINDS,
    Shape,
    TaskField,
    carried_by,
    names_in,
    shape_mismatches,
)
from omoi_ray.core.tasks import TaskStatus
from omoi_ray.handler.context import TaskView
from omoi_ray.protocol import ASSIGNMENT_EXTRAS, Assignment
from omoi_ray.specs.tasks import (
    AttemptInfo,
    TaskInfo,
    TaskSpec,
    attempt_info_from_row,
    info_from_row,
    info_from_task,
    parse_new_tasks,
)
from omoi_ray.store import schema, writes
from omoi_ray.store.store import Store

NOW = 1_700_000_000.25  # exact in microseconds, so times compare equal after a round trip

#: Every shape class, with the names it has.
SHAPES: dict[Shape, list[str]] = {
    Shape.TASK: [f.name for f in dataclasses.fields(Task)],
    Shape.NEW: [f.name for f in dataclasses.fields(NewTask)],
    Shape.SPEC: list(TaskSpec.model_fields),
    Shape.ROW: [c.name for c in schema.TaskRow.__table__.columns],
    Shape.UPDATE: list(writes.TASK_MUTABLE),
    Shape.INFO: list(TaskInfo.model_fields),
    Shape.WIRE: [f for f in Assignment._fields if f not in ASSIGNMENT_EXTRAS],
    Shape.VIEW: [f.name for f in dataclasses.fields(TaskView)],
}

#: Every attempt shape class, with the names it has.
ATTEMPT_SHAPES: dict[Shape, list[str]] = {
    Shape.TASK: [f.name for f in dataclasses.fields(Attempt)],
    Shape.ROW: [c.name for c in schema.TaskAttemptRow.__table__.columns],
    Shape.UPDATE: list(writes.ATTEMPT_MUTABLE),
    Shape.INFO: list(AttemptInfo.model_fields),
}

#: A submission setting every spec field to a value other than its default.
SPEC = {
    "id": "t",
    "type": "kind.x",
    "payload": {"k": [1, "α"], "n": None},
    "requires": ["gpu", "cpu"],
    "priority": "HIGH",
    "depends_on": ["up"],
    "timeout": 12.5,
    "max_retries": 5,
    "backoff_base": 0.5,
    "backoff_cap": 9.0,
    "idempotency_key": "key-1",
    "ticket_id": "T-1",
    "phase": "scan",
    "locks": ["repo:main", ["file", "a.txt", "shared"]],
    "merge": {"strategy": "majority", "key": "answer", "quorum": 2, "tie": "first"},  # normalised as given
}

#: A value other than its default for every column a change rewrites.
STATE = {
    "status": TaskStatus.RUNNING,
    "attempt": 2,
    "not_before": NOW + 5.5,
    "agent_id": "a1",
    "agent_incarnation": "inc-1",
    "claim_request_id": "req-1",
    "deadline": NOW + 60.25,
    "result": {"partial": [1, 2]},
    "error": "boom",
    "reason": "why not",
    "upstream": "up",
    "upstream_cancelled": True,
    "started_at": NOW + 1.5,
    "finished_at": NOW + 2.75,
    "updated_at": NOW + 3.0,
    "coordination": {"members": ["up"], "results": {"up": 1}, "failed": []},
}

#: What ``TaskSpec.to_new_task`` must make of a spec's value, per kind (checked value by value).
SPEC_TO_NEW = dict.fromkeys(KINDS, lambda v: v) | {
    task_fields.CAPS: frozenset,
    task_fields.IDS: tuple,
    task_fields.LOCKS: lambda v: tuple(tuple(lock) for lock in v),
}


@pytest.mark.parametrize("shape", list(SHAPES), ids=lambda s: s.name)
def test_every_shape_class_carries_exactly_the_declared_fields(shape):
    assert shape_mismatches(shape, SHAPES[shape]) == []


@pytest.mark.parametrize("shape", list(ATTEMPT_SHAPES), ids=lambda s: s.name)
def test_every_attempt_shape_class_carries_exactly_the_declared_fields(shape):
    assert shape_mismatches(shape, ATTEMPT_SHAPES[shape], ATTEMPT_FIELDS) == []


def test_a_field_missing_from_a_shape_is_caught():
    added = (*FIELDS, TaskField("flavour", task_fields.PLAIN, Shape.ROW | Shape.INFO | Shape.VIEW))
    assert shape_mismatches(Shape.INFO, SHAPES[Shape.INFO], added) == ["INFO lacks the declared field 'flavour'"]
    assert shape_mismatches(Shape.ROW, SHAPES[Shape.ROW], added) == ["ROW lacks the declared field 'flavour'"]
    assert shape_mismatches(Shape.TASK, SHAPES[Shape.TASK], added) == ["TASK lacks the declared field 'flavour'"]
    dropped = tuple(dataclasses.replace(f, shapes=f.shapes & ~Shape.VIEW) if f.name == "phase" else f for f in FIELDS)
    assert shape_mismatches(Shape.VIEW, SHAPES[Shape.VIEW], dropped) == [
        "VIEW has 'phase', which FIELDS does not declare for it"
    ]


def test_a_field_the_source_lacks_comes_from_a_parameter_or_the_default():
    fields = (TaskField("a", task_fields.PLAIN, Shape.INFO | Shape.VIEW), TaskField("b", task_fields.PLAIN, Shape.VIEW))
    to_view = task_fields.compile_mapping(
        "to_view", Shape.INFO, Shape.VIEW, dict.fromkeys(KINDS, "{v}"), fields=fields, params={"b": "7"}
    )
    assert to_view(SimpleNamespace(a=1)) == {"a": 1, "b": 7}
    bare = task_fields.compile_mapping("bare", Shape.INFO, Shape.VIEW, dict.fromkeys(KINDS, "{v}"), fields=fields)
    assert bare(SimpleNamespace(a=1)) == {"a": 1}


def test_a_layer_without_a_conversion_for_a_kind_fails_at_import():
    templates = dict(writes.TO_ROW)
    del templates[task_fields.TIME]
    with pytest.raises(KeyError, match="time"):
        task_fields.compile_mapping("task_row", Shape.TASK, Shape.ROW, templates, params={"ts": None})


def test_the_fixtures_set_every_declared_field():
    # A field added to FIELDS must be given a value here, so the round trip below covers it.
    assert set(SPEC) == set(names_in(Shape.SPEC))
    assert set(STATE) == set(names_in(Shape.UPDATE))


def _value(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_declared_field_round_trips_spec_task_row_task_info(db_url):
    [up, new] = parse_new_tasks([{"id": "up", "type": "u"}, SPEC], payload_max_bytes=1 << 20)
    spec = TaskSpec(**SPEC)
    for f in carried_by(Shape.SPEC):
        assert _value(new, f.name_in(Shape.NEW)) == SPEC_TO_NEW[f.kind](getattr(spec, f.name)), f.name
    assert new.fingerprint == spec.fingerprint()

    graph = TaskGraph(lease_ttl=30.0, rng=random.Random(1))
    graph.submit([up, new], NOW)
    created = graph.take_changes()
    task = graph.tasks["t"]
    for f in carried_by(Shape.NEW):
        assert _value(task, f.name_in(Shape.TASK)) == _value(new, f.name_in(Shape.NEW)), f.name
    assert (task.created_at, task.updated_at) == (NOW, NOW)

    db = Store(db_url)
    try:
        db.apply(created)  # the insert row
        for name, value in STATE.items():
            setattr(task, name, value)
        db.apply(TaskChanges(updated=[task]))  # the update row
        [loaded] = [t for t in db.load().tasks if t.id == "t"]
        for f in carried_by(Shape.ROW):
            path = f.name_in(Shape.TASK)
            assert _value(loaded, path) == _value(task, path), f.name
        assert loaded.retry == task.retry

        row = db.task_rows(["t"])["t"]
        assert row["depends_on"] == ["up"]
        info = info_from_task(task)
        assert info_from_row(row, depends_on=row["depends_on"]) == info
        assert info_from_task(dataclasses.replace(loaded, depends_on=tuple(row["depends_on"]))) == info
        for f in carried_by(Shape.INFO):
            assert getattr(info, f.name) is not None and getattr(info, f.name) != [], f.name
        # a submission naming the stored task reads what its dependents inherit
        assert db.lookup(["t"])[0]["t"].upstream_cancelled is True
    finally:
        db.dispose()

    view = TaskView.of(Assignment.of(task))
    for f in carried_by(Shape.VIEW):
        expected = task.priority.name if f.kind == task_fields.PRIORITY else _value(task, f.name_in(Shape.TASK))
        assert getattr(view, f.name) == expected, f.name


def test_every_declared_attempt_field_round_trips_attempt_row_attempt_info(db_url):
    [new] = parse_new_tasks([{"id": "t", "type": "u", "locks": ["repo:main"]}], payload_max_bytes=1 << 20)
    graph = TaskGraph(lease_ttl=30.0, rng=random.Random(1))
    graph.submit([new], NOW)
    attempt = Attempt(
        task_id="t", attempt=3, agent_id="a1", agent_incarnation="inc-1", claimed_at=NOW + 1.0,
        started_at=NOW + 2.5, finished_at=NOW + 4.75, outcome=AttemptOutcome.FAILED, error="boom",
    )
    db = Store(db_url)
    try:
        db.apply(graph.take_changes())
        db.apply(TaskChanges(attempts=[attempt], new_attempts={("t", 3)}))  # the insert row
        [loaded] = db.load().open_attempts
        assert loaded == dataclasses.replace(attempt, locks=(("repo", "main", "exclusive"),))
        attempt.released_at = NOW + 5.0
        attempt.outcome = AttemptOutcome.TIMED_OUT
        db.apply(TaskChanges(attempts=[attempt]))  # the update row
        assert db.load().open_attempts == []
        [row] = db.attempt_rows("t")
        assert row["released_at"].timestamp() == NOW + 5.0
        info = attempt_info_from_row(row)
        for f in carried_by(Shape.INFO, ATTEMPT_FIELDS):
            value = getattr(attempt, f.name)
            expected = value.value if f.kind == task_fields.OUTCOME else value
            shown = getattr(info, f.name)
            assert (shown.timestamp() if f.kind in (task_fields.TIME, task_fields.STAMP) else shown) == expected, f.name
    finally:
        db.dispose()
