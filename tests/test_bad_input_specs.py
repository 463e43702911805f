"""Bad input refused at the edge, without Ray: task and agent specs, priorities, event queries,
lock requests, settings. Each case names the typed error and the field its message must name.

``TASK_CASES`` is shared with ``test_bad_input_api.py``, which submits the same values to a
runtime on SQLite and PostgreSQL and checks that nothing was stored.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from omoi_ray.client.follow import check_types, follow
from omoi_ray.core.model import Priority
from omoi_ray.core.storable import MAX_BACKOFF_S, MAX_JSON_DEPTH, MAX_POSITION, MAX_TIMEOUT_S, check_flag
from omoi_ray.errors import (
    InvalidAgentSpecError,
    InvalidArgumentError,
    InvalidCoordinationError,
    InvalidEventQueryError,
    InvalidLockRequestError,
    InvalidSubmissionError,
    InvalidTaskSpecError,
)
from omoi_ray.specs.coordination import SyncSpec, parse_submission
from omoi_ray.specs.events import Position
from omoi_ray.specs.locks import parse_request
from omoi_ray.specs.tasks import TaskSpec, parse_agent_spec, parse_new_tasks, submission_list, task_id_list

ROOT = Path(__file__).resolve().parent.parent
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
NAN, INF = float("nan"), float("inf")


def nested(depth: int) -> list:
    """A list nested ``depth`` levels deep (built iteratively: any depth is cheap)."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


# (case id, fields of one task, text the message must hold: the field it names)
TASK_CASES = [
    ("id-newline", {"id": "job\n"}, "id"),
    ("id-empty", {"id": ""}, "id"),
    ("id-int", {"id": 7}, "id"),
    ("type-newline", {"type": "job\n"}, "type"),
    ("type-space", {"type": "my job"}, "type"),
    ("type-missing", {"type": None}, "type"),
    ("depends_on-string", {"depends_on": "a"}, "depends_on"),
    ("depends_on-entry-newline", {"depends_on": ["a\n"]}, "depends_on"),
    ("depends_on-entry-int", {"depends_on": [123]}, "depends_on"),
    ("requires-string", {"requires": "gpu"}, "requires"),
    ("requires-newline", {"requires": ["gpu\n"]}, "requires"),
    ("requires-int", {"requires": [1]}, "requires"),
    ("locks-string", {"locks": "file:a"}, "locks"),
    ("locks-type-newline", {"locks": ["file\n:a"]}, "locks"),
    ("locks-id-nul", {"locks": [["file", "a\x00"]]}, "locks"),
    ("ticket-newline", {"ticket_id": "t\n"}, "ticket_id"),
    ("phase-nul", {"phase": "p\x00"}, "phase"),
    ("priority-dotless-i", {"priority": "h\u0131gh"}, "priority"),
    ("priority-bool", {"priority": True}, "priority"),
    ("priority-out-of-range", {"priority": 7}, "priority"),
    ("priority-trailing-space", {"priority": "HIGH "}, "priority"),
    ("priority-float", {"priority": 3.0}, "priority"),
    ("timeout-bool", {"timeout": True}, "timeout"),
    ("timeout-nan", {"timeout": NAN}, "timeout"),
    ("timeout-inf", {"timeout": INF}, "timeout"),
    ("timeout-huge", {"timeout": 1e12}, "timeout"),
    ("timeout-over-max", {"timeout": MAX_TIMEOUT_S + 1}, "timeout"),
    ("timeout-zero", {"timeout": 0}, "timeout"),
    ("timeout-negative", {"timeout": -1}, "timeout"),
    ("timeout-string", {"timeout": "5"}, "timeout"),
    ("backoff_base-huge", {"backoff_base": 1e300}, "backoff_base"),
    ("backoff_cap-huge", {"backoff_cap": 1e300}, "backoff_cap"),
    ("backoff_cap-over-max", {"backoff_cap": MAX_BACKOFF_S * 2}, "backoff_cap"),
    ("backoff_base-nan", {"backoff_base": NAN}, "backoff_base"),
    ("backoff_cap-bool", {"backoff_cap": False}, "backoff_cap"),
    ("max_retries-bool", {"max_retries": True}, "max_retries"),
    ("max_retries-negative", {"max_retries": -1}, "max_retries"),
    ("max_retries-huge", {"max_retries": 10**6}, "max_retries"),
    ("max_retries-float", {"max_retries": 2.0}, "max_retries"),
    ("max_retries-string", {"max_retries": "3"}, "max_retries"),
    ("idempotency_key-nul", {"idempotency_key": "k\x00"}, "idempotency_key"),
    ("idempotency_key-newline", {"idempotency_key": "k\n"}, "idempotency_key"),
    ("idempotency_key-empty", {"idempotency_key": ""}, "idempotency_key"),
    ("idempotency_key-long", {"idempotency_key": "k" * 257}, "idempotency_key"),
    ("idempotency_key-int", {"idempotency_key": 5}, "idempotency_key"),
    ("payload-nul-in-value", {"payload": {"v": "a\x00b"}}, "payload"),
    ("payload-nul-in-key", {"payload": {"k\x00": 1}}, "payload"),
    ("payload-lone-surrogate", {"payload": ["\ud800"]}, "payload"),
    ("payload-nan", {"payload": {"x": NAN}}, "payload"),
    ("payload-inf", {"payload": [INF]}, "payload"),
    ("payload-int-key", {"payload": {1: "a"}}, "payload"),
    ("payload-set", {"payload": {"s": {1, 2}}}, "payload"),
    ("payload-bytes", {"payload": b"raw"}, "payload"),
    ("payload-too-deep", {"payload": nested(MAX_JSON_DEPTH + 1)}, "payload"),
    ("payload-100000-deep", {"payload": nested(100_000)}, "payload"),
    ("unknown-field", {"surprise": 1}, "surprise"),
]


def task_fields(uid: str, fields: dict) -> dict:
    return {"id": f"{uid}-bad", "type": "t", **fields}


@pytest.mark.parametrize("fields,field", [c[1:] for c in TASK_CASES], ids=[c[0] for c in TASK_CASES])
def test_a_bad_task_field_is_refused_naming_task_and_field(fields, field):
    item = task_fields("x", fields)
    with pytest.raises(InvalidTaskSpecError) as err:
        parse_new_tasks([{"id": "x-good", "type": "t"}, item], 1_000_000)
    message = str(err.value)
    assert f"{field}:" in message or f"{field} " in message, message
    if "id" not in fields:
        assert message.startswith("task 'x-bad': "), message
    assert "\n" not in message  # one line: bad characters are shown escaped
    # built directly, a TaskSpec refuses the same value with the same typed error
    with pytest.raises(InvalidTaskSpecError, match=re.escape(field)):
        TaskSpec(**item)


def test_good_values_at_the_bounds_are_kept_as_given():
    spec = TaskSpec(
        id="a", type="t", priority="high", timeout=MAX_TIMEOUT_S, backoff_base=0.001, backoff_cap=MAX_BACKOFF_S,
        max_retries=1000, idempotency_key="k" * 256, requires=("GPU", "net"), depends_on=("b",),
        locks=[("db", "orders", "shared")], payload=nested(MAX_JSON_DEPTH),
    )
    assert spec.priority is Priority.HIGH and spec.timeout == MAX_TIMEOUT_S and spec.requires == ["gpu", "net"]
    assert spec.depends_on == ["b"] and spec.locks == [["db", "orders", "shared"]]
    assert TaskSpec(id="a", type="t", priority=4).priority is Priority.CRITICAL
    assert TaskSpec(id="a", type="t", timeout=5).timeout == 5.0


def test_a_copy_with_changed_fields_is_validated_like_a_new_task():
    spec = TaskSpec(id="a", type="t", payload={"n": 1})
    with pytest.raises(InvalidTaskSpecError, match="task 'a': timeout"):
        spec.model_copy(update={"timeout": 1e12})
    with pytest.raises(InvalidTaskSpecError, match="depends_on"):
        spec.model_copy(update={"depends_on": "b"})
    copied = spec.model_copy(update={"depends_on": ["b"], "priority": "low"}, deep=True)
    assert (copied.depends_on, copied.priority, copied.payload) == (["b"], Priority.LOW, {"n": 1})
    assert copied.payload is not spec.payload and spec.depends_on == []


def test_job_and_job_newline_are_not_two_names():
    assert TaskSpec(id="job", type="job").id == "job"
    for field in ("id", "type", "ticket_id", "phase"):
        with pytest.raises(InvalidTaskSpecError, match=field):
            TaskSpec(**{"id": "job", "type": "job", field: "job\n"})


@pytest.mark.parametrize("value", ["h\u0131gh", "HIGH\n", "hi", "", None, True, 0, 5, 2.0, "\u0130OW"])
def test_priorities_are_matched_exactly(value):
    with pytest.raises(ValueError, match="priority must be one of"):
        Priority.parse(value)


def test_priority_names_ignore_ascii_case_only():
    assert [Priority.parse(v) for v in ("low", "Medium", "HIGH", "cRiTiCaL", 1, Priority.HIGH)] == [
        Priority.LOW, Priority.MEDIUM, Priority.HIGH, Priority.CRITICAL, Priority.LOW, Priority.HIGH]


@pytest.mark.parametrize(
    "items",
    [TaskSpec(id="a", type="t"), "abc", {"type": "t"}, 123, None, b"ab"],
    ids=["taskspec", "string", "mapping", "int", "none", "bytes"],
)
def test_a_submission_must_be_a_list_of_tasks(items):
    with pytest.raises(InvalidSubmissionError, match="pass a list of tasks"):
        submission_list(items)
    with pytest.raises(InvalidSubmissionError, match="pass a list of tasks"):
        parse_new_tasks(items, 1000)


def test_a_submission_may_be_any_other_iterable():
    specs = parse_new_tasks((TaskSpec(id=f"t{i}", type="t") for i in range(3)), 1000)
    assert [s.id for s in specs] == ["t0", "t1", "t2"]
    with pytest.raises(InvalidTaskSpecError, match="submission item 1 must be a TaskSpec or a mapping"):
        parse_new_tasks([{"id": "a", "type": "t"}, 123], 1000)


# (case id, fields of an agent, text the message must hold)
AGENT_CASES = [
    ("name-newline", {"name": "a\n"}, "agent name"),
    ("name-escape", {"name": "a\x1b[31m"}, "agent name"),
    ("capabilities-string", {"capabilities": "gpu"}, "capabilities"),
    ("capabilities-newline", {"capabilities": ["gpu\n"]}, "capabilities"),
    ("capabilities-int", {"capabilities": [1]}, "capabilities"),
    ("capacity-zero", {"capacity": 0}, "capacity"),
    ("capacity-bool", {"capacity": True}, "capacity"),
    ("capacity-huge", {"capacity": 1025}, "capacity"),
    ("handlers-string", {"handlers": "tests.handlers:behave"}, "handlers"),
    ("handlers-pairs", {"handlers": [("t", print)]}, "handlers"),
    ("handler-path-newline", {"handler": "tests.handlers:behave\n"}, "import path"),
    ("handler-type-newline", {"handlers": {"t\n": print}}, "handler task type"),
    ("num_cpus-nan", {"num_cpus": NAN}, "num_cpus"),
    ("num_cpus-negative", {"num_cpus": -1}, "num_cpus"),
    ("num_cpus-bool", {"num_cpus": True}, "num_cpus"),
    ("num_cpus-huge", {"num_cpus": 1e9}, "num_cpus"),
    ("resources-list", {"resources": [("x", 1)]}, "resources"),
    ("resources-nan", {"resources": {"x": NAN}}, "resources"),
    ("resources-zero", {"resources": {"x": 0}}, "resources"),
    ("resources-bool", {"resources": {"x": True}}, "resources"),
    ("resources-negative", {"resources": {"x": -1}}, "resources"),
    ("resources-inf", {"resources": {"x": INF}}, "resources"),
    ("resources-cpu", {"resources": {"CPU": 1}}, "num_cpus"),
    ("resources-name-nul", {"resources": {"x\x00": 1}}, "resource name"),
    ("resources-name-empty", {"resources": {"": 1}}, "resource name"),
    ("max_restarts-below", {"max_restarts": -2}, "max_restarts"),
    ("max_restarts-bool", {"max_restarts": True}, "max_restarts"),
    ("max_restarts-huge", {"max_restarts": 10**9}, "max_restarts"),
]


@pytest.mark.parametrize("fields,field", [c[1:] for c in AGENT_CASES], ids=[c[0] for c in AGENT_CASES])
def test_a_bad_agent_field_is_refused_naming_it(fields, field):
    args = {"name": "a", "capabilities": ["x"], "handler": print, **fields}
    with pytest.raises(InvalidAgentSpecError) as err:
        parse_agent_spec(**args)
    assert field in str(err.value)
    assert not CONTROL.search(str(err.value)), str(err.value)  # one line: a bad name is shown escaped


def test_agent_values_within_bounds_are_accepted():
    spec = parse_agent_spec(name="a", capabilities=("GPU", "net"), handler=print, num_cpus=0.5,
                            resources={"accelerator_type:A100": 0.25}, max_restarts=-1, capacity=1024)
    assert spec.capabilities == ["gpu", "net"] and spec.resources == {"accelerator_type:A100": 0.25}


@pytest.mark.parametrize(
    "value,what",
    [("abc", "task_ids"), ({"a": 1}, "task_ids"), (7, "task_ids"), ([1], "task_ids[0]"), (["a", "b\n"], "task_ids[1]")],
)
def test_task_id_lists_are_lists_of_names(value, what):
    with pytest.raises(InvalidArgumentError, match=re.escape(what)):
        task_id_list(value)
    assert task_id_list(iter(["a", "b"])) == ["a", "b"]


@pytest.mark.parametrize(
    "value",
    ["0-100000000000000000000", f"{MAX_POSITION + 1}-0", "1-2-3", "+1-2", "1_000", "\u0663-1", "-1", "", 123, None,
     Position(-1, 0), Position(True, 0)],
)
def test_event_positions_are_ascii_numbers_the_stores_can_hold(value):
    with pytest.raises(InvalidEventQueryError, match="event position"):
        Position.parse(value)
    assert Position.parse(f"{MAX_POSITION}-{MAX_POSITION}") == Position(MAX_POSITION, MAX_POSITION)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"poll": -1}, "poll"), ({"poll": 0}, "poll"), ({"poll": NAN}, "poll"), ({"poll": 1e-9}, "poll"),
        ({"poll": True}, "poll"), ({"poll": 1e6}, "poll"), ({"batch": 0}, "batch"), ({"batch": True}, "batch"),
        ({"batch": 10**9}, "batch"), ({"since": "0-100000000000000000000"}, "event position"),
        ({"since": 5}, "event position"), ({"types": 123}, "types"), ({"types": ["task.\n"]}, "pattern"),
        ({"types": "["}, "pattern"), ({"types": "task.[ab"}, "pattern"), ({"types": [None]}, "pattern"),
        ({"use_redis": "yes"}, "use_redis"),
    ],
)
def test_follow_refuses_bad_arguments_when_called(kwargs, field):
    # no database is touched: the error comes before the first read
    with pytest.raises(InvalidEventQueryError, match=re.escape(field)):
        follow(None, **kwargs)


def test_type_patterns_may_use_complete_sets():
    assert check_types(["task.[cr]*", "lock.*"]) == ("task.[cr]*", "lock.*")


@pytest.mark.parametrize(
    "args,kwargs,field",
    [
        (("", "file:a"), {}, "holder"),
        (("h\x00", "file:a"), {}, "holder"),
        ((None, "file:a"), {}, "holder"),
        (("h", "file\n:a"), {}, "resource type"),
        (("h", "file:a\ud800"), {}, "resource id"),
        (("h", "file:a"), {"ttl": 0}, "ttl"),
        (("h", "file:a"), {"ttl": NAN}, "ttl"),
        (("h", "file:a"), {"ttl": True}, "ttl"),
        (("h", "file:a"), {"ttl": 1e9}, "ttl"),
        (("h", "file:a"), {"wait": -1}, "wait"),
        (("h", "file:a"), {"wait": INF}, "wait"),
        (("h", "file:a"), {"wait": False}, "wait"),
    ],
)
def test_lock_requests_are_checked_against_the_same_bounds(args, kwargs, field):
    with pytest.raises(InvalidLockRequestError, match=re.escape(field)):
        parse_request(*args, **kwargs)


@pytest.mark.parametrize("field,value", [("namespace", "omoi\n"), ("redis_prefix", "omoi\n"), ("namespace", "")])
def test_settings_names_are_matched_whole(tmp_path, field, value):
    from omoi_ray.errors import ConfigurationError
    from omoi_ray.settings import Settings

    with pytest.raises(ConfigurationError, match=field):
        Settings(home=tmp_path, **{field: value})


def test_no_validator_pattern_can_match_before_a_trailing_newline():
    # `$` matches before a final "\n": every name pattern is matched whole with re.fullmatch
    offenders = []
    for path in [*(ROOT / "omoi_ray").rglob("*.py"), *(ROOT / "actors").rglob("*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""\$["']\)?""", line) and ("re." in line or "compile" in line or "PATTERN" in line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
            # any .match( (a compiled pattern's, whatever its name, or re's) and an anchored search
            if re.search(r"\.match\(|\bre\.search\(r?[\"']\^", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize(
    "item",
    [
        {"kind": "sync", "id": "s\n", "members": ["a"]},
        {"kind": "sync", "id": "s\x1b[31m", "members": ["a"]},
        {"kind": "loop", "id": "L\n"},
        {"kind": "split", "parent": "p\n", "children": []},
    ],
    ids=["sync-newline", "sync-escape", "loop-newline", "split-newline"],
)
def test_a_coordination_spec_with_a_bad_id_is_named_on_one_line(item):
    with pytest.raises(InvalidCoordinationError) as err:
        parse_submission([item], 1_000_000)
    message = str(err.value)
    assert not CONTROL.search(message), message
    assert repr(item.get("id", item.get("parent"))) in message
    with pytest.raises(InvalidCoordinationError) as err:
        SyncSpec(id="s\n", members=["a"])
    assert str(err.value).startswith("sync 's\\n': id: ")


@pytest.mark.parametrize("value", ["no", "yes", 0, 1, None, "False"])
def test_a_switch_is_true_or_false_only(value):
    with pytest.raises(ValueError, match="exist_ok must be True or False"):
        check_flag(value, "exist_ok")
    assert (check_flag(True, "x"), check_flag(False, "x")) == (True, False)


def test_checks_of_deep_payloads_are_iterative_and_cheap_to_fail():
    deep = {"a": nested(1_000_000)}
    with pytest.raises(InvalidTaskSpecError, match="payload is nested more than 64 levels"):
        TaskSpec(id="a", type="t", payload=deep)
