"""The transition table is the only authority on task status moves."""

from __future__ import annotations

import pytest

from omoi_ray.core.tasks import ACTIVE, FAILED_FOR_GOOD, TERMINAL, TRANSITIONS, TaskStatus, event_for
from omoi_ray.errors import IllegalTransitionError

S = TaskStatus


def test_every_status_has_a_row():
    assert set(TRANSITIONS) == set(TaskStatus)


def test_terminal_statuses_are_exactly_the_ones_without_moves():
    assert TERMINAL == {S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT, S.UPSTREAM_FAILED}
    assert FAILED_FOR_GOOD == TERMINAL - {S.COMPLETED}
    assert ACTIVE == {S.CLAIMED, S.RUNNING}


def test_every_non_terminal_status_can_be_cancelled():
    for status in set(TaskStatus) - TERMINAL:
        assert event_for(status, S.CANCELLED) == "task.cancelled"


@pytest.mark.parametrize(
    "old,new",
    [
        (S.PENDING, S.RUNNING),
        (S.READY, S.COMPLETED),
        (S.COMPLETED, S.READY),
        (S.FAILED, S.RETRY_WAIT),
        (S.CANCELLED, S.RUNNING),
        (S.RETRY_WAIT, S.RUNNING),
        (S.CLAIMED, S.COMPLETED),
    ],
)
def test_moves_not_in_the_table_raise_and_name_the_task(old, new):
    with pytest.raises(IllegalTransitionError) as err:
        event_for(old, new, "t1")
    assert "task 't1'" in str(err.value)
    assert old.value in str(err.value) and new.value in str(err.value)


def test_each_move_has_a_dotted_task_event():
    for moves in TRANSITIONS.values():
        for event in moves.values():
            assert event.startswith("task.") and event.count(".") == 1
