"""Bad input found after the first sweep: huge ints, C1 controls, boolean settings, a TaskSpec
changed after it was built or built without checks. Each case asserts the typed error and that
nothing was stored."""

from __future__ import annotations

import uuid

import pytest

from omoi_ray.core import storable
from omoi_ray.errors import ConfigurationError, InvalidAgentSpecError, InvalidTaskSpecError, TaskNotFoundError
from omoi_ray.settings import Settings
from omoi_ray.specs.tasks import TaskSpec, iter_task_specs, parse_agent_spec

HUGE = 10**400  # past float's range: float(HUGE) raises OverflowError


@pytest.mark.parametrize("field", ["timeout", "backoff_base", "backoff_cap"])
def test_an_int_past_floats_range_is_a_typed_error_naming_the_field(field):
    with pytest.raises(InvalidTaskSpecError, match=field):
        TaskSpec(type="t", **{field: HUGE})


@pytest.mark.parametrize("fields", [{"num_cpus": HUGE}, {"resources": {"gpu_slot": HUGE}}])
def test_an_agent_amount_past_floats_range_is_a_typed_error(fields):
    with pytest.raises(InvalidAgentSpecError, match="too large"):
        parse_agent_spec(name="a", handler="tests.handlers:echo", **fields)


def test_check_seconds_message_stays_short_for_huge_numbers():
    with pytest.raises(ValueError, match="wait") as info:
        storable.check_seconds(HUGE, "wait", maximum=10)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("char", ["\x85", "\x9b", "\x7f", "\x00"])
def test_c1_and_other_controls_are_cleaned_from_runtime_text_and_refused_in_user_text(char):
    assert storable.clean_text(f"a{char}b") == "a\ufffdb"
    with pytest.raises(ValueError, match="reason"):
        storable.check_text(f"a{char}b", "reason", max_chars=100)


@pytest.mark.parametrize(
    "fields",
    [{"lease_ttl": True}, {"payload_max_bytes": True}, {"events_batch": False}, {"lock_ttl": 200_000.0},
     {"owner_lease": True}],
)
def test_settings_refuse_booleans_and_a_lock_ttl_no_lock_can_have(fields):
    with pytest.raises(ConfigurationError, match=next(iter(fields))):
        Settings(**fields)


def test_a_taskspec_changed_after_it_was_built_is_checked_again():
    payload = {"k": "ok"}
    requires = ["gpu"]
    spec = TaskSpec(id="m", type="t", payload=payload, requires=requires)
    payload["k"] = "a\x00b"
    with pytest.raises(InvalidTaskSpecError, match="payload"):
        list(iter_task_specs([spec], 1_000_000))
    payload["k"] = "ok"
    spec.requires.append("bad cap")
    with pytest.raises(InvalidTaskSpecError, match="requires"):
        list(iter_task_specs([spec], 1_000_000))


def test_a_taskspec_built_without_checks_is_a_typed_error():
    with pytest.raises(InvalidTaskSpecError):
        list(iter_task_specs([TaskSpec.model_construct(id="x")], 1_000_000))
    bad = TaskSpec.model_construct(**{**TaskSpec(type="t").model_dump(), "id": "x\n", "timeout": 1e12})
    with pytest.raises(InvalidTaskSpecError, match="id|timeout"):
        list(iter_task_specs([bad], 1_000_000))


@pytest.mark.ray
def test_submit_refuses_a_taskspec_whose_payload_was_changed_and_stores_nothing(runtime):
    tid = f"mut-{uuid.uuid4().hex[:8]}"
    payload = {"k": "ok"}
    spec = TaskSpec(id=tid, type="t", payload=payload)
    payload["k"] = "a\x00b"
    other = TaskSpec(id=f"{tid}-ok", type="t")
    with pytest.raises(InvalidTaskSpecError, match="payload"):
        runtime.submit([other, spec])
    for task_id in (tid, f"{tid}-ok"):
        with pytest.raises(TaskNotFoundError):
            runtime.get(task_id)


def test_agent_spec_errors_name_each_field_once():
    with pytest.raises(InvalidAgentSpecError) as err:
        parse_agent_spec(name="a", handler="tests.handlers:echo", resources={"GPU": 1})
    assert str(err.value) == "agent 'a': resources: use num_cpus (or a custom resource), not 'GPU'"
    with pytest.raises(InvalidAgentSpecError) as err:
        parse_agent_spec(name="nohandler")
    assert str(err.value) == "agent 'nohandler': give a handler (for every task type) or handlers (per task type)"


@pytest.mark.parametrize(("value", "hint"), [("design", "(phase names are upper case: 'DESIGN'?)"), ("q a", "")])
def test_a_phase_name_that_is_not_one_says_what_a_phase_name_is(value, hint):
    from omoi_ray.errors import InvalidTicketError
    from omoi_ray.specs.tickets import check_phase

    with pytest.raises(InvalidTicketError) as err:
        check_phase(value, "to")
    assert hint in str(err.value) and "rt.tickets.get(ticket).phases" in str(err.value)
