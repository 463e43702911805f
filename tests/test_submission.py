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
