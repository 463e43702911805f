"""Submission graph rules: duplicates, unknown and self dependencies, cycles named in order."""

from __future__ import annotations

import pytest

from omoi_ray.core.dag import validate_submission
from omoi_ray.core.model import NewTask
from omoi_ray.errors import CycleError, DuplicateTaskError, UnknownDependencyError


def tasks(**deps: list[str]) -> list[NewTask]:
    return [NewTask(id=name, type="t", depends_on=tuple(d)) for name, d in deps.items()]


def nothing_exists(_: str) -> bool:
    return False


def test_a_valid_dag_passes():
    validate_submission(tasks(a=[], b=["a"], c=["a"], d=["b", "c"]), nothing_exists)


def test_duplicate_ids_are_rejected():
    items = [NewTask(id="a", type="t"), NewTask(id="a", type="t")]
    with pytest.raises(DuplicateTaskError, match="'a' appears more than once"):
        validate_submission(items, nothing_exists)


def test_unknown_dependency_is_named():
    with pytest.raises(UnknownDependencyError) as err:
        validate_submission(tasks(b=["x"]), nothing_exists)
    assert str(err.value) == "task 'b' depends on unknown task 'x'"
    assert err.value.dependency == "x"


def test_dependencies_on_stored_tasks_are_accepted():
    validate_submission(tasks(b=["old"]), lambda tid: tid == "old")


def test_self_dependency_is_a_cycle():
    with pytest.raises(CycleError, match=r"cycle: a -> a"):
        validate_submission(tasks(a=["a"]), nothing_exists)


def test_two_cycle_is_named():
    with pytest.raises(CycleError) as err:
        validate_submission(tasks(a=["b"], b=["a"]), nothing_exists)
    assert str(err.value) == "cycle: a -> b -> a"
    assert err.value.cycle == ["a", "b", "a"]


def test_longer_cycle_is_named_in_depends_on_order_from_the_first_submitted():
    with pytest.raises(CycleError) as err:
        validate_submission(tasks(x=[], a=["b"], b=["c"], c=["a"], y=["x"]), nothing_exists)
    assert str(err.value) == "cycle: a -> b -> c -> a"


def test_cycle_starting_later_in_the_submission():
    with pytest.raises(CycleError) as err:
        validate_submission(tasks(q=["p"], p=["r"], r=["q"]), nothing_exists)
    assert str(err.value) == "cycle: q -> p -> r -> q"
