"""``omoi_ray.testing``: users run their handlers in process with a fake context, no Ray."""

from __future__ import annotations

import asyncio

import pytest

from omoi_ray import PermanentError, TaskCancelledError
from omoi_ray.errors import HandlerNotFoundError, LockUnavailableError
from omoi_ray.testing import FakeClock, FakeLockManager, make_context, run_handler, run_handler_async


def test_a_sync_handler_sees_its_payload_and_returns_its_result():
    def double(task, ctx):
        return {"twice": task.payload["n"] * 2, "id": task.id, "attempt": ctx.attempt}

    assert run_handler(double, {"n": 2}, task_id="t1", attempt=3) == {"twice": 4, "id": "t1", "attempt": 3}


def test_a_one_argument_handler_and_an_import_path_work():
    assert run_handler(lambda task: task.payload + 1, 1) == 2
    with pytest.raises(HandlerNotFoundError, match="no_such_module"):
        run_handler("no_such_module:handler")


def test_async_handlers_run_to_completion():
    async def fan_in(task, ctx):
        docs = await ctx.upstream_results_async()
        await asyncio.sleep(0)
        return sorted(docs.values())

    assert run_handler(fan_in, upstream={"a": 2, "b": 1}) == [1, 2]


def test_from_async_code_too():
    def plain(task, ctx):
        return ctx.upstream_results()

    assert asyncio.run(run_handler_async(plain, upstream={"a": {"x": 1}})) == {"a": {"x": 1}}


def test_the_handlers_error_is_raised_unchanged():
    def hopeless(task, ctx):
        raise PermanentError("bad input: retrying cannot help")

    with pytest.raises(PermanentError, match="retrying cannot help"):
        run_handler(hopeless)


def test_an_unstorable_result_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="result"):
        run_handler(lambda task: {"x": float("nan")})


def test_cancellation_is_seen_by_the_handler():
    def careful(task, ctx):
        assert ctx.cancelled()
        ctx.raise_if_cancelled()

    with pytest.raises(TaskCancelledError, match="task 'job' attempt 1: stop now"):
        run_handler(careful, task_id="job", cancelled="stop now")


def test_declared_locks_give_their_tokens_and_ctx_lock_takes_new_ones():
    def fenced(task, ctx):
        lease = ctx.lock("branch:main")
        return {"declared": ctx.token("file:a"), "taken": lease.tokens, "seen": ctx.token("branch:main")}

    manager = FakeLockManager()
    result = run_handler(fenced, locks={"file:a": 7}, lock_manager=manager)
    assert result == {"declared": 7, "taken": {"branch:main": 1}, "seen": 1}
    with pytest.raises(KeyError, match="no lock"):
        run_handler(lambda task, ctx: ctx.token("file:b"))


def test_a_held_lock_conflicts_until_released_and_tokens_grow():
    manager = FakeLockManager()
    ctx = make_context("first", lock_manager=manager)
    lease = ctx.lock("file:a")
    with pytest.raises(LockUnavailableError):
        run_handler(lambda task, c: c.lock("file:a"), task_id="second", lock_manager=manager)
    lease.release()
    assert run_handler(lambda task, c: c.lock("file:a").token, task_id="third", lock_manager=manager) == 2


def test_leases_run_out_on_the_fake_clock():
    clock = FakeClock(0.0)
    manager = FakeLockManager(clock)
    make_context("first", lock_manager=manager).lock("file:a", ttl=5)
    clock.advance(6)
    manager.table.advance(clock())
    assert run_handler(lambda task, c: c.lock("file:a").token, task_id="second", lock_manager=manager) == 2


def test_the_fake_clock_moves_only_forward():
    clock = FakeClock(10.0)
    assert (clock(), clock.advance(2.5), clock.now) == (10.0, 12.5, 12.5)
    with pytest.raises(ValueError, match="seconds"):
        clock.advance(-1)


def test_each_attempt_gets_a_workspace(tmp_path):
    def write(task, ctx):
        (ctx.workspace / "out.txt").write_text("hi")
        return str(ctx.workspace)

    assert run_handler(write, workspace=tmp_path / "ws") == str(tmp_path / "ws")
    assert (tmp_path / "ws" / "out.txt").read_text() == "hi"


def test_the_readme_example_runs():
    from tests.conftest import ROOT

    section = (ROOT / "README.md").read_text(encoding="utf-8").split("### Testing your handlers\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
