"""The durable-singleton shell (``omoi_ray.actors.durable``): one contract for the scheduler and the lock manager.

The actor classes are used in-process, on an event loop, as the shell allows outside Ray.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from omoi_ray.actors.durable import BASICS, DurableWriter
from omoi_ray.actors.lock_manager import LockManagerActor
from omoi_ray.actors.scheduler import SchedulerActor

from omoi_ray.errors import DatabaseNotMigratedError
from tests.conftest import make_settings

SINGLETONS = (SchedulerActor, LockManagerActor)


def _close(actor: DurableWriter) -> None:
    actor.commit.close()
    actor.store.dispose()


def test_both_singletons_describe_the_same_basics_and_publish_their_counters(db_url, tmp_path):
    settings = make_settings(tmp_path, db_url, "shell")
    published: list[tuple[str, dict]] = []

    async def main() -> list[dict]:
        scheduler, locks = (cls(settings) for cls in SINGLETONS)
        assert scheduler.start_error is None and locks.start_error is None
        try:
            for actor in (scheduler, locks):
                actor.metrics_sink = lambda writer, counters: published.append((writer, dict(counters)))
            await scheduler.submit([{"id": "shell-t", "type": "x"}])
            reply = await locks.acquire("me", "repo:shell", wait=0)
            assert reply.granted
            return [await scheduler.describe(), await locks.describe()]
        finally:
            _close(scheduler)
            _close(locks)

    described = asyncio.run(main())
    for state, writer in zip(described, ("scheduler", "locks")):
        assert set(BASICS) <= set(state)
        assert (state["writer"], state["pid"], state["restarted"]) == (writer, os.getpid(), False)
        assert state["owner_epoch"] >= 1
        assert state["commits"] >= 1 and state["events_written"] >= 1
    assert described[0]["database"] == described[1]["database"]
    assert described[0]["namespace"] == described[1]["namespace"] == "shell"
    assert {writer for writer, _ in published} == {"scheduler", "locks"}
    assert all("commits" in counters for _, counters in published)


@pytest.mark.parametrize("cls", SINGLETONS)
def test_a_singleton_that_cannot_start_answers_every_call_with_its_typed_error(cls, tmp_path):
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'unmigrated.db'}", "shell")

    async def main() -> None:
        actor = cls(settings)
        assert isinstance(actor.start_error, DatabaseNotMigratedError)
        with pytest.raises(DatabaseNotMigratedError):
            await actor.describe()  # inherited from the shell: held all the same

    asyncio.run(main())
