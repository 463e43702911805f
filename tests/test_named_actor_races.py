"""Every get-or-create of a named actor is race-free: many threads, one actor, typed refusals."""

from __future__ import annotations

import threading
import uuid

import pytest
import ray

import omoi_ray as omoi
from omoi_ray.errors import InvalidAgentSpecError
from omoi_ray.naming import agent_actor_name
from tests.conftest import make_settings

pytestmark = [pytest.mark.ray]
H = "tests.handlers:behave"
THREADS = 6


def _in_threads(fn, n: int = THREADS) -> list[tuple[str, object]]:
    """Run ``fn`` in ``n`` threads released at once; each outcome as ("ok", value) or ("error", exc)."""
    barrier = threading.Barrier(n)
    outcomes: list[tuple[str, object]] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            result = ("ok", fn())
        except Exception as exc:  # noqa: BLE001 - the test looks at every outcome
            result = ("error", exc)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert len(outcomes) == n
    return outcomes


def _agents_named(rt, name: str) -> list:
    return [a for a in rt.status().agents if a.id == name and a.status == "alive"]


def test_spawning_one_name_from_many_threads_with_exist_ok_starts_one_agent(runtime):
    name = f"solo-{uuid.uuid4().hex[:6]}"
    outcomes = _in_threads(lambda: runtime.spawn_agent(name, capabilities=[name], handler=H, exist_ok=True))
    try:
        assert [kind for kind, _ in outcomes] == ["ok"] * THREADS, outcomes
        actor_ids = {ref.handle._actor_id for _, ref in outcomes}
        assert len(actor_ids) == 1
        assert len(_agents_named(runtime, name)) == 1
        assert len({ref.info()["incarnation"] for _, ref in outcomes}) == 1
    finally:
        runtime.agent(name).stop(timeout=2)


def test_spawning_one_name_from_many_threads_without_exist_ok_lets_exactly_one_win(runtime):
    name = f"solo-{uuid.uuid4().hex[:6]}"
    outcomes = _in_threads(lambda: runtime.spawn_agent(name, capabilities=[name], handler=H))
    try:
        winners = [value for kind, value in outcomes if kind == "ok"]
        losers = [value for kind, value in outcomes if kind == "error"]
        assert len(winners) == 1
        assert len(losers) == THREADS - 1
        for exc in losers:
            assert isinstance(exc, InvalidAgentSpecError), repr(exc)
            assert f"an agent named '{name}' is already running" in str(exc)
        assert len(_agents_named(runtime, name)) == 1
        assert winners[0].info()["name"] == name
    finally:
        runtime.agent(name).stop(timeout=2)
    with pytest.raises(ValueError):
        ray.get_actor(agent_actor_name(name), namespace=runtime.settings.namespace)


def test_connecting_from_many_threads_at_once_starts_one_runtime(ray_session, tmp_path):
    settings = make_settings(tmp_path, None, f"race-{uuid.uuid4().hex[:8]}", lease_ttl=6.0, long_poll=5.0)
    omoi.connect(settings, migrate=True).shutdown(agents_timeout=1.0)  # migrated; owned by this runtime
    outcomes = _in_threads(lambda: omoi.connect(settings), n=4)
    try:
        assert [kind for kind, _ in outcomes] == ["ok"] * 4, outcomes
        assert len({rt.describe()["pid"] for _, rt in outcomes}) == 1
    finally:
        outcomes[0][1].shutdown(agents_timeout=1.0)
