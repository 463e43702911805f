"""Submission and idempotency (``omoi_ray.core.submission``), through the scheduler core."""

from __future__ import annotations

import pytest

from omoi_ray.core.submission import StoredTask
from omoi_ray.core.tasks import TaskStatus
from omoi_ray.errors import CycleError, IdempotencyConflictError, TaskExistsError, UnknownDependencyError
from tests.graph_harness import Harness, spec


def test_submission_creates_ready_and_pending_tasks_with_events():
    h = Harness()
    h.submit(spec("a"), spec("b", "a"))
    assert h.status("a") == "ready" and h.status("b") == "pending"
    assert h.event_types("a") == ["task.created", "task.ready"]
    assert h.event_types("b") == ["task.created"]


def test_resubmitting_the_same_task_is_a_no_op_and_a_different_one_is_refused():
    h = Harness()
    h.submit(spec("a"))
    h.drain()
    assert h.submit(spec("a")) == ["a"]
    assert not h.drain()
    with pytest.raises(TaskExistsError, match="'a' already exists"):
        h.submit(spec("a", fingerprint="other"))
    stored = {"old": StoredTask("old", TaskStatus.COMPLETED, "fp-old")}
    assert h.submit(spec("old"), stored=stored) == ["old"]


def test_idempotency_keys_dedupe_and_detect_reuse():
    h = Harness()
    assert h.submit(spec("a", key="k1")) == ["a"]
    assert h.submit(spec("a2", key="k1", fingerprint="fp-a")) == ["a"]
    with pytest.raises(IdempotencyConflictError, match="'k1'"):
        h.submit(spec("a3", key="k1", fingerprint="different"))
    stored_keys = {"k9": StoredTask("z", TaskStatus.COMPLETED, "fp-q", "k9")}
    assert h.submit(spec("q", key="k9"), spec("r", "q"), stored_keys=stored_keys) == ["z", "r"]
    assert h.status("r") == "ready"  # its dependency resolved to the stored, completed task


def test_rejected_submissions_change_nothing():
    h = Harness()
    h.submit(spec("a"))
    h.drain()
    before = dict(h.graph.tasks)
    for bad in ([spec("b", "zz")], [spec("c", "d"), spec("d", "c")]):
        with pytest.raises((UnknownDependencyError, CycleError)):
            h.submit(*bad)
        assert h.graph.tasks == before and not h.drain()


def test_dependencies_on_stored_tasks_use_their_final_status():
    h = Harness()
    stored = {
        "ok": StoredTask("ok", TaskStatus.COMPLETED, "x"),
        "bad": StoredTask("bad", TaskStatus.TIMED_OUT, "y"),
    }
    h.submit(spec("a", "ok"), spec("b", "bad"), spec("c", "b"), stored=stored)
    assert h.status("a") == "ready"
    changes = h.drain()
    by_id = {t.id: t for t in changes.created}
    assert by_id["b"].status is TaskStatus.UPSTREAM_FAILED
    assert by_id["b"].reason == "upstream task 'bad' timed_out"
    assert by_id["c"].status is TaskStatus.UPSTREAM_FAILED and by_id["c"].upstream == "bad"


def test_tasks_sharing_an_idempotency_key_in_one_submission():
    h = Harness()
    assert h.submit(spec("a", key="k", fingerprint="f"), spec("b", key="k", fingerprint="f"), spec("c", "b")) == ["a", "a", "c"]
    assert set(h.graph.tasks) == {"a", "c"} and h.graph.tasks["c"].depends_on == ("a",)
    with pytest.raises(IdempotencyConflictError, match="key 'k2' of task 'y' was already used by task 'x'"):
        h.submit(spec("x", key="k2", fingerprint="1"), spec("y", key="k2", fingerprint="2"))
    assert "x" not in h.graph.tasks


# ------------------------------------------------------------------ the storage backstop's drop

WHY = "task id 'x' already names a stored task"


def test_a_colliding_submission_is_dropped_alone_not_with_the_other_submissions_of_its_change_set():
    h = Harness()
    h.submit(spec("x"))
    h.submit(spec("z"))
    changes = h.drain()
    dropped, refused = h.graph.drop_created(changes, {"x": WHY}, h.now)
    assert (dropped, refused) == (["x"], {"x": WHY})
    assert "x" not in h.graph.tasks and h.status("z") == "ready"
    kept = changes.without(dropped)
    assert [t.id for t in kept.created] == ["z"] and kept.decisions == [("z",)]


def test_a_submission_depending_on_a_dropped_task_is_dropped_and_refused_with_it():
    h = Harness()
    h.submit(spec("x"))
    h.submit(spec("z", "x"), spec("z2"))
    h.submit(spec("w", "z"))
    h.submit(spec("free"))
    changes = h.drain()
    dropped, refused = h.graph.drop_created(changes, {"x": WHY}, h.now)
    assert dropped == ["x", "z", "z2", "w"]
    assert refused == {
        "x": WHY,
        "z": f"task 'z' depends on task 'x', which could not be stored: {WHY}",
        "z2": f"task 'z' depends on task 'x', which could not be stored: {WHY}",
        "w": f"task 'w' depends on task 'z', which could not be stored: {WHY}",
    }
    assert set(h.graph.tasks) == {"free"}
    assert [d for d in changes.without(dropped).dependencies] == []  # no survivor lost an edge


def test_a_live_dependent_outside_the_change_set_of_a_dropped_task_fails_upstream():
    h = Harness()
    h.submit(spec("x"))
    changes = h.drain()  # x's change set, not yet stored
    h.submit(spec("z", "x"))  # the next change set: z waits on the x in memory
    h.drain()
    dropped, refused = h.graph.drop_created(changes, {"x": WHY}, h.now)
    assert (dropped, refused) == (["x"], {"x": WHY})
    assert "z" not in h.graph.tasks
    [failed] = [e for e in h.drain().events if e.task_id == "z"]
    assert failed.type == "task.upstream_failed"
    assert failed.payload == {"reason": f"upstream task 'x' could not be stored: {WHY}", "upstream": "x"}
