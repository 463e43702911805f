"""Events end to end: a runtime with Redis mirrors what its scheduler and lock manager commit."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import omoi_ray as omoi
from omoi_ray.core.events import CATALOGUE
from omoi_ray.specs.events import EventRecord
from tests.conftest import make_settings, until

pytestmark = pytest.mark.ray

H = "tests.handlers:behave"


@pytest.fixture
def redis_runtime(ray_session, redis_prefix, tmp_path):
    url, prefix = redis_prefix
    settings = make_settings(tmp_path, None, f"events-{uuid.uuid4().hex[:6]}", lease_ttl=6.0, long_poll=5.0,
                             redis_url=url, redis_prefix=prefix, events_poll=0.01)
    rt = omoi.connect(settings, migrate=True)
    yield rt
    rt.shutdown(agents_timeout=2.0)


def take(rt: omoi.Runtime, count: int, **kwargs) -> list[EventRecord]:
    async def run() -> list[EventRecord]:
        out: list[EventRecord] = []
        async for e in rt.follow(**kwargs):
            out.append(e)
            if len(out) == count:
                return out
        return out

    return asyncio.run(asyncio.wait_for(run(), 30))


def test_a_task_and_a_lock_are_mirrored_in_commit_order(redis_runtime):
    rt = redis_runtime
    rt.spawn_agent("mirror", capabilities=["general"], capacity=2, handler=H)
    info = rt.run([omoi.TaskSpec(id="t1", type="behave", requires=["general"], payload={"op": "echo"})], timeout=60)
    assert info["t1"].status == "completed"
    with rt.lock("file:report", wait=10):
        pass
    rt.flush_events(30)
    state = rt.relay_status()
    assert state["redis_up"] and state["mirrored"] >= 8 and state["last_error"] == ""

    every = take(rt, state["mirrored"], since="0-0")
    assert {e.type for e in every} <= set(CATALOGUE)
    assert [e.type for e in every if e.entity_id == "t1"] == [
        "task.created", "task.ready", "task.claimed", "task.started", "task.completed",
    ]
    assert [e.type for e in every if e.entity_id == "file:report"] == ["lock.granted", "lock.released"]
    assert any(e.type == "agent.registered" and e.agent_id == "mirror" for e in every)

    locks = take(rt, 2, since="0-0", types="lock.*")
    assert [e.type for e in locks] == ["lock.granted", "lock.released"]
    # resuming after the first lock event yields the second only
    assert take(rt, 1, since=locks[0].position, types="lock.*") == locks[1:]


def test_a_driver_with_other_redis_settings_is_refused(redis_runtime, tmp_path):
    from omoi_ray.errors import ConfigurationError

    other = redis_runtime.settings.model_copy(update={"redis_prefix": "elsewhere"})
    with pytest.raises(ConfigurationError, match="OMOI_REDIS_PREFIX"):
        omoi.connect(other)


def test_a_runtime_without_redis_keeps_events_readable(runtime):
    state = runtime.relay_status()
    assert state["redis"] is None and state["stream"] is None
    resource = f"file:{uuid.uuid4().hex[:8]}"
    with runtime.lock(resource, wait=10):
        pass
    assert runtime.flush_events(5)  # nothing to wait for

    async def first_of_resource() -> EventRecord:
        async for e in runtime.follow(since="0-0", types="lock.*"):  # read from the database
            if e.entity_id == resource:
                return e
        raise AssertionError("follow ended")

    first = asyncio.run(asyncio.wait_for(first_of_resource(), 30))
    assert first.type == "lock.granted" and first.payload["token"] >= 1


def test_status_says_where_events_go(redis_runtime, capsys, monkeypatch):
    from omoi_ray.cli import main

    s = redis_runtime.settings
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # Ray is already initialised here: connect joins it
    monkeypatch.setenv("OMOI_REDIS_URL", s.redis_url.get_secret_value())
    monkeypatch.setenv("OMOI_REDIS_PREFIX", s.redis_prefix)
    until(lambda: redis_runtime.relay_status()["redis_up"], "the relay's first contact with Redis")
    assert main(["status", "--home", str(s.home), "--namespace", s.namespace]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"stream {s.redis_prefix}:events (up)" in out


def test_status_says_connecting_until_the_relay_first_reaches_redis():
    from rich.console import Console

    from omoi_ray.cli import print_status
    from omoi_ray.protocol import RuntimeStatus

    status = RuntimeStatus(database="sqlite:///x", namespace="n", tasks={}, agents=[], unclaimable=[], ready=0)
    relay = {"redis": "redis://h:1/0", "stream": "p:events", "redis_up": False, "last_error": "",
             "cursor": "0-0", "lag_seconds": 0.0}
    for last_error, shown in (("", "(connecting)"), ("ConnectionError: refused", "(unreachable (ConnectionError: refused))")):
        console = Console(record=True, width=200)
        print_status(console, status, {**relay, "last_error": last_error}, "sqlite:///x")
        assert f"stream p:events {shown}" in " ".join(console.export_text().split())
