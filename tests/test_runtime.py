"""End to end on Ray: what a user of the driver API relies on (SQLite, and PostgreSQL when set)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

import omoi_ray as omoi
from omoi_ray.errors import (
    ConfigurationError,
    CycleError,
    DuplicateTaskError,
    HandlerNotFoundError,
    InvalidAgentSpecError,
    InvalidTaskSpecError,
    PayloadTooLargeError,
    TaskExistsError,
    TaskNotFoundError,
    UnknownDependencyError,
    WaitTimeoutError,
)
from tests.conftest import ROOT, make_settings, until
from tests.handlers import gate

pytestmark = pytest.mark.ray
H = "tests.handlers:behave"


@pytest.fixture(scope="session")
def general(runtime):
    """Two general agents (capacity 4 each) shared by most tests."""
    return [
        runtime.spawn_agent(f"general-{i}", capabilities=["general"], capacity=4, handler=H, exist_ok=True)
        for i in range(2)
    ]


def task(tid: str, **kw):
    kw.setdefault("type", "behave")
    kw.setdefault("requires", ["general"])
    return omoi.TaskSpec(id=tid, **kw)


def test_a_dag_runs_with_fan_out_and_fan_in(runtime, general, uid):
    fan = [task(f"{uid}-leaf{i}", payload={"op": "echo"}) for i in range(8)]
    join = task(f"{uid}-join", depends_on=[t.id for t in fan], payload={"op": "echo"})
    root = task(f"{uid}-root", payload={"op": "echo"})
    fan = [t.model_copy(update={"depends_on": [root.id]}) for t in fan]
    infos = runtime.run([root, *fan, join], timeout=60)
    assert {i.status for i in infos.values()} == {"completed"}
    assert infos[join.id].started_at >= max(infos[t.id].finished_at for t in fan)
    assert infos[root.id].finished_at <= min(infos[t.id].started_at for t in fan)
    assert infos[root.id].result["agent"] in {"general-0", "general-1"}


def test_priorities_and_fifo_order_are_observed(runtime, uid):
    runtime.spawn_agent("solo", capabilities=["solo"], capacity=1, handler=H, exist_ok=True)
    blocker = task(f"{uid}-block", requires=["solo"], payload={"op": "wait_gate", "gate": f"{uid}-go"},
                   priority="CRITICAL")
    order = [("LOW", 1), ("MEDIUM", 1), ("CRITICAL", 1), ("HIGH", 1), ("MEDIUM", 2), ("CRITICAL", 2), ("LOW", 2)]
    rest = [task(f"{uid}-{p}-{n}", requires=["solo"], priority=p, payload={"op": "echo"}) for p, n in order]
    runtime.submit([blocker, *[t.model_copy(update={"payload": {"op": "echo", "started_gate": t.id}}) for t in []]])
    ray.get(gate().wait.remote("unused", 0.0))
    runtime.submit(rest)
    ray.get(gate().open.remote(f"{uid}-go"))
    infos = runtime.run([blocker, *rest], timeout=60)
    started = sorted(rest, key=lambda t: infos[t.id].started_at)
    assert [t.id.split("-", 1)[1] for t in started] == [
        "CRITICAL-1", "CRITICAL-2", "HIGH-1", "MEDIUM-1", "MEDIUM-2", "LOW-1", "LOW-2"
    ]


def test_capabilities_are_respected_and_unclaimable_work_is_reported(runtime, general, uid):
    cap = f"rare-{uid}"
    ids = runtime.submit([task(f"{uid}-rare", requires=[cap], payload={"op": "echo"})])
    with pytest.raises(WaitTimeoutError, match="1 of 1 tasks were not final"):
        runtime.wait(ids, timeout=0.5)
    assert runtime.get(ids[0]).status == "ready"
    assert ([cap], 1) in runtime.status().unclaimable
    runtime.spawn_agent(f"rare-{uid}", capabilities=[cap], capacity=1, handler=H)
    assert runtime.wait(ids, timeout=60) == {ids[0]: "completed"}
    assert runtime.get(ids[0]).agent_id == f"rare-{uid}"
    assert ([cap], 1) not in runtime.status().unclaimable
    runtime.agent(f"rare-{uid}").stop()


def test_a_timed_out_wait_names_its_tasks_and_its_bar_warns_only_about_them(runtime, general, uid, capsys):
    runtime.submit([task(f"{uid}-other", requires=[f"elsewhere-{uid}"], payload={"op": "echo"})])
    ids = runtime.submit([task(f"{uid}-mine-{i}", requires=[f"mine-{uid}"], payload={"op": "echo"}) for i in range(5)])
    with pytest.raises(WaitTimeoutError) as err:
        runtime.wait(ids, timeout=0.3, progress=True)
    assert str(err.value) == (f"5 of 5 tasks were not final after 0.3s: '{ids[0]}' ready, '{ids[1]}' ready, "
                              f"'{ids[2]}' ready and 2 more")
    assert err.value.pending == dict.fromkeys(ids, "ready")
    shown = capsys.readouterr().err
    assert f"5 ready need [mine-{uid}]: no live agent can run them" in shown
    assert f"elsewhere-{uid}" not in shown  # another driver's leftovers are not this wait's
    runtime.cancel(*ids, f"{uid}-other")


def test_a_wait_timeout_error_lists_only_the_tasks_still_not_final():
    from omoi_ray.client.tasks import wait_timeout_error
    from omoi_ray.specs.tasks import TaskInfo

    def info(tid, status, reason=None):
        return TaskInfo(id=tid, type="t", status=status, priority="MEDIUM", attempt=0, reason=reason)

    # a task that became final between the last wait step and the read is not "not final"
    err = wait_timeout_error("1 of 2 tasks were not final after 1s",
                             [info("a", "completed"), info("b", "pending", "waiting for ticket 'T'")])
    assert str(err) == "1 of 2 tasks were not final after 1s: 'b' pending (waiting for ticket 'T')"
    assert err.pending == {"b": "pending"} and err.reasons == {"b": "waiting for ticket 'T'"}


def test_capacity_is_never_exceeded(runtime, uid, tmp_path):
    log = tmp_path / "intervals.jsonl"
    runtime.spawn_agent(f"cap3-{uid}", capabilities=[f"cap3-{uid}"], capacity=3, handler=H)
    tasks = [
        task(f"{uid}-w{i}", requires=[f"cap3-{uid}"], payload={"op": "work", "seconds": 0.05, "log": str(log)})
        for i in range(15)
    ]
    runtime.run(tasks, timeout=60)
    events = sorted(
        (json.loads(line) for line in log.read_text().splitlines()), key=lambda e: (e["t"], e["what"] == "start")
    )
    running, peak = 0, 0
    for e in events:
        running += 1 if e["what"] == "start" else -1
        peak = max(peak, running)
    assert peak == 3
    runtime.agent(f"cap3-{uid}").stop()


def test_retries_honour_the_backoff(runtime, general, uid):
    t = task(f"{uid}-flaky", payload={"op": "fail", "times": 2}, backoff_base=0.3, max_retries=3)
    info = runtime.run([t], timeout=60)[t.id]
    assert info.status == "completed" and info.result == {"attempt": 3}
    attempts = runtime.attempts(t.id)
    assert [a.outcome for a in attempts] == ["failed", "failed", "completed"]
    assert attempts[0].error == "RuntimeError: failure on attempt 1"
    for n in range(2):
        gap = (attempts[n + 1].claimed_at - attempts[n].finished_at).total_seconds()
        assert gap >= 0.75 * 0.3 * 2**n


def test_permanent_errors_and_unserialisable_results_are_not_retried(runtime, general, uid):
    perm = task(f"{uid}-perm", payload={"op": "permanent"}, max_retries=5)
    bad = task(f"{uid}-bad", payload={"op": "bad_result"}, max_retries=5)
    infos = runtime.run([perm, bad], timeout=60)
    assert (infos[perm.id].status, infos[perm.id].attempt) == ("failed", 1)
    assert infos[perm.id].error == "PermanentError: this input can never work"
    assert (infos[bad.id].status, infos[bad.id].attempt) == ("failed", 1)
    assert infos[bad.id].error == (f"ResultNotSerializableError: task '{bad.id}' returned a result that cannot "
                                   "be stored: result['set'] is a set, which is not JSON")
    with pytest.raises(omoi.OmoiError, match=f"task '{perm.id}' is failed, not completed"):
        runtime.result(perm.id)


def test_a_timeout_stops_a_cooperative_handler_and_retries_it(runtime, general, uid):
    t = task(f"{uid}-slow", payload={"op": "wait_cancel"}, timeout=0.5, max_retries=1, backoff_base=0.1)
    info = runtime.run([t], timeout=60)[t.id]
    assert info.status == "timed_out" and info.attempt == 2
    assert [a.outcome for a in runtime.attempts(t.id)] == ["timed_out", "timed_out"]


def test_a_result_that_arrives_after_the_timeout_is_rejected(runtime, general, uid):
    t = task(f"{uid}-late", payload={"op": "wait_cancel", "then_return": True}, timeout=0.5, max_retries=0)
    info = runtime.run([t], timeout=60)[t.id]
    assert info.status == "timed_out" and info.result is None


def test_an_async_handler_is_cancelled_at_its_timeout(runtime, uid):
    name = f"async-{uid}"
    runtime.spawn_agent(name, capabilities=[name], capacity=2, handler="tests.handlers:behave_async")
    t = task(f"{uid}-forever", requires=[name], payload={"op": "sleep_forever", "cancel_gate": f"{uid}-cx"},
             timeout=0.5, max_retries=0)
    info = runtime.run([t], timeout=60)[t.id]
    assert info.status == "timed_out"
    assert ray.get(gate().wait.remote(f"{uid}-cx", 30))  # the coroutine saw CancelledError
    runtime.agent(name).stop()


def test_cancelling_running_and_pending_tasks(runtime, general, uid):
    running = task(f"{uid}-run", payload={"op": "wait_cancel", "started_gate": f"{uid}-run",
                                          "cancel_gate": f"{uid}-saw"})
    child = task(f"{uid}-child", depends_on=[running.id], payload={"op": "echo"})
    lone = task(f"{uid}-lone", requires=[f"nobody-{uid}"])
    runtime.submit([running, child, lone])
    assert ray.get(gate().wait.remote(f"{uid}-run:1", 30))
    assert runtime.cancel(running.id, lone.id) == {running.id: "cancelled", lone.id: "cancelled"}
    assert ray.get(gate().wait.remote(f"{uid}-saw", 30))  # the handler was told to stop
    assert runtime.wait([running.id, child.id, lone.id], timeout=30) == {
        running.id: "cancelled", child.id: "upstream_failed", lone.id: "cancelled"
    }
    assert runtime.get(child.id).reason == f"upstream task '{running.id}' cancelled"
    assert runtime.cancel(running.id) == {running.id: "cancelled"}  # final tasks stay as they are
    with pytest.raises(TaskNotFoundError, match="no task with id 'nope-"):
        runtime.cancel(f"nope-{uid}")


def test_a_failure_for_good_dooms_every_dependent(runtime, general, uid):
    a = task(f"{uid}-a", payload={"op": "permanent"})
    b = task(f"{uid}-b", depends_on=[a.id], payload={"op": "echo"})
    c = task(f"{uid}-c", depends_on=[b.id], payload={"op": "echo"})
    ok = task(f"{uid}-ok", payload={"op": "echo"})
    infos = runtime.run([a, b, c, ok], timeout=60)
    assert [infos[t.id].status for t in (a, b, c, ok)] == ["failed", "upstream_failed", "upstream_failed", "completed"]
    assert infos[c.id].reason == f"upstream task '{a.id}' failed"
    late = runtime.run([task(f"{uid}-late", depends_on=[a.id])], timeout=30)[f"{uid}-late"]
    assert late.status == "upstream_failed"


@pytest.mark.parametrize(
    "make,error,message",
    [
        (lambda u: [task(f"{u}-x", depends_on=[f"{u}-y"]), task(f"{u}-y", depends_on=[f"{u}-x"])],
         CycleError, "cycle: {u}-x -> {u}-y -> {u}-x"),
        (lambda u: [task(f"{u}-x", depends_on=[f"{u}-ghost"])], UnknownDependencyError,
         "task '{u}-x' depends on unknown task '{u}-ghost'"),
        (lambda u: [task(f"{u}-x"), task(f"{u}-x")], DuplicateTaskError, "'{u}-x' appears more than once"),
        (lambda u: [task(f"{u}-x"), {"id": f"{u}-z", "type": "t", "priority": "URGENT"}], InvalidTaskSpecError,
         "task '{u}-z': priority: priority must be one of LOW, MEDIUM, HIGH, CRITICAL"),
        (lambda u: [{"id": f"{u}-z", "type": "t", "timeout": -1}], InvalidTaskSpecError, "timeout"),
        (lambda u: [{"id": f"{u}-z", "type": "t", "requires": ["Has Space"]}], InvalidTaskSpecError, "capability"),
        (lambda u: [{"id": f"{u}/z", "type": "t"}], InvalidTaskSpecError, "id must be"),
        (lambda u: [{"id": f"{u}-z", "type": "t", "payload": {"x": float("nan")}}], InvalidTaskSpecError,
         "payload['x'] is nan; JSON numbers must be finite"),
        (lambda u: [{"id": f"{u}-z", "type": "t", "surprise": 1}], InvalidTaskSpecError, "surprise"),
        (lambda u: [{"id": f"{u}-z", "type": "t", "payload": "x" * 1_100_000}], PayloadTooLargeError, "over the limit"),
    ],
    ids=["cycle", "unknown-dep", "duplicate", "priority", "timeout", "capability", "id", "nan", "extra", "big"],
)
def test_bad_submissions_are_rejected_whole_and_store_nothing(runtime, uid, make, error, message):
    before = runtime.status().tasks
    items = make(uid)
    with pytest.raises(error) as err:
        runtime.submit(items)
    assert message.format(u=uid) in str(err.value)
    assert runtime.status().tasks == before
    ids = [i.id if isinstance(i, omoi.TaskSpec) else i["id"] for i in items]
    with pytest.raises(TaskNotFoundError):
        runtime.get_many([i for i in ids if "/" not in i][:1] or [f"{uid}-nothing"])


def test_resubmitting_is_idempotent_and_conflicts_are_refused(runtime, general, uid):
    t = task(f"{uid}-once", payload={"op": "echo"})
    assert runtime.submit([t]) == [t.id]
    assert runtime.submit([t]) == [t.id]
    runtime.wait([t.id], timeout=30)
    assert runtime.submit([t]) == [t.id]
    assert len(runtime.attempts(t.id)) == 1
    with pytest.raises(TaskExistsError):
        runtime.submit([t.model_copy(update={"payload": {"op": "other"}})])
    keyed = [task(f"{uid}-k{i}", payload={"op": "echo"}, idempotency_key=f"{uid}-key") for i in range(2)]
    assert runtime.submit(keyed) == [keyed[0].id, keyed[0].id]


def test_handlers_by_import_path_with_one_argument_and_per_attempt_workspaces(runtime, general, uid):
    name = f"onearg-{uid}"
    runtime.spawn_agent(name, capabilities=[name], handlers={"single": "tests.handlers:one_arg_handler"})
    t = omoi.TaskSpec(id=f"{uid}-one", type="single", requires=[name])
    assert runtime.run([t], timeout=30)[t.id].result == {"only_task": t.id}
    flaky = task(f"{uid}-ws", payload={"op": "fail", "times": 1}, backoff_base=0.05)
    runtime.run([flaky], timeout=30)
    done = runtime.run([task(f"{uid}-ws2", payload={"op": "echo"})], timeout=30)[f"{uid}-ws2"]
    workspace = Path(done.result["workspace"])
    assert workspace.is_dir() and workspace.name == "attempt-1" and workspace.parent.name == f"{uid}-ws2"
    # routing by type: the agent is never handed a type it has no handler for; the task waits
    # (never failed with HandlerNotFoundError) and is reported as work nobody alive handles
    wrong = omoi.TaskSpec(id=f"{uid}-wrongtype", type="nope", requires=[name], max_retries=3)
    runtime.submit([wrong])
    until(lambda: ("nope", [name], 1) in runtime.status().unhandled, "the 'nope' task reported as unhandled")
    info = runtime.get(wrong.id)
    assert (info.status, info.attempt) == ("ready", 0)
    runtime.cancel(wrong.id)
    runtime.agent(name).stop()


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"capacity": 0}, InvalidAgentSpecError, "capacity must be an integer from 1 to 1024"),
        ({"capacity": True}, InvalidAgentSpecError, "capacity"),
        ({"handler": None}, InvalidAgentSpecError, "give a handler"),
        ({"handler": "not a path"}, InvalidAgentSpecError, "import path"),
        ({"handler": "tests.no_such_module:fn"}, HandlerNotFoundError, "cannot import module"),
        ({"handler": "tests.handlers:missing"}, HandlerNotFoundError, "has no 'missing'"),
    ],
)
def test_bad_agents_are_refused(runtime, uid, kwargs, error, message):
    args = {"capabilities": ["x"], "handler": H, **kwargs}
    with pytest.raises(error, match=message):
        runtime.spawn_agent(f"bad-{uid}", **args)
    with pytest.raises(omoi.OmoiError):
        runtime.agent(f"bad-{uid}")


def test_a_second_driver_sees_the_same_runtime_and_state(runtime, general, uid):
    t = task(f"{uid}-shared", payload={"op": "echo"})
    runtime.run([t], timeout=30)
    env = dict(os.environ)
    env.update(
        RAY_ADDRESS=ray.get_runtime_context().gcs_address,
        OMOI_HOME=str(runtime.settings.home),
        OMOI_NAMESPACE=runtime.settings.namespace,
        PYTHONPATH=str(ROOT),
    )
    if runtime.settings.database_url is not None:
        env["OMOI_DATABASE_URL"] = runtime.settings.database_url.get_secret_value()
    else:
        env.pop("OMOI_DATABASE_URL", None)
    script = (
        "import omoi_ray as omoi\n"
        "rt = omoi.connect()\n"
        f"print(rt.get({t.id!r}).status)\n"
        f"ids = rt.submit([dict(id={t.id + '-2'!r}, type='behave', requires=['general'], payload={{'op': 'echo'}})])\n"
        "print(rt.wait(ids, timeout=30)[ids[0]])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["completed", "completed"]
    assert runtime.get(t.id + "-2").status == "completed"


def test_connecting_with_another_database_in_the_same_namespace_is_refused(runtime, tmp_path):
    other = make_settings(tmp_path, None, runtime.settings.namespace)
    with pytest.raises(ConfigurationError, match="uses the database"):
        omoi.connect(other, migrate=True)
    assert not (tmp_path / "omoi.db").exists()  # refused before its own database was created
