"""What users hand to omoi-ray and what they get back: validated at the edge with pydantic.

Rules:
- Every field a user sets is checked here, with a message that names the task (or agent) and
  the field. Nothing past this module re-checks field types.
- Ids, types and capabilities are short printable names (letters, digits and ``_ . : @ + -``),
  so they are safe as directory names, log fields and database keys.
- A task's *fingerprint* hashes everything that defines it except its id and idempotency key;
  resubmitting a task with an equal fingerprint is a no-op that returns the stored task.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from omoi_ray.core.model import NewTask, Priority, RetryPolicy
from omoi_ray.errors import InvalidAgentSpecError, InvalidTaskSpecError, PayloadTooLargeError

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,127}$"
_NAME = re.compile(NAME_PATTERN)
_CAPABILITY = re.compile(r"^[a-z0-9_][a-z0-9_.:+-]{0,63}$")


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"{what} must be 1-128 characters of letters, digits and '_ . : @ + -' "
            f"(starting with a letter, digit or '_'), not {value!r}"
        )
    return value


def normalize_capabilities(values: Sequence[str] | str, what: str) -> list[str]:
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for raw in values:
        if not isinstance(raw, str):
            raise ValueError(f"{what} must be strings, not {raw!r}")
        cap = raw.strip().lower()
        if not _CAPABILITY.match(cap):
            raise ValueError(
                f"capability {raw!r} in {what} must be 1-64 characters of lower-case letters, "
                "digits and '_ . : + -'"
            )
        if cap not in out:
            out.append(cap)
    return sorted(out)


def json_size(value: Any, what: str) -> int:
    """Bytes of ``value`` as compact JSON; raise ValueError naming ``what`` if it is not JSON."""
    try:
        return len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable ({exc})") from None


class TaskSpec(BaseModel):
    """A task as a user submits it.

    ``requires`` lists the capabilities an agent needs to run it; ``depends_on`` lists task ids
    (in the same submission or already stored) that must complete first. ``max_retries`` bounds
    extra attempts of every kind; ``timeout`` (seconds) bounds one attempt's run time.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: str
    payload: Any = None
    requires: list[str] = Field(default_factory=list)
    priority: Priority = Priority.MEDIUM
    depends_on: list[str] = Field(default_factory=list)
    timeout: float | None = None
    max_retries: int = Field(default=3, ge=0, le=1000)
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)
    ticket_id: str | None = None
    phase: str | None = None
    #: resources to hold while the handler runs: "type:id" (exclusive) or (type, id, mode)
    locks: list[Any] = Field(default_factory=list)

    @field_validator("id", "type")
    @classmethod
    def _name(cls, value: str, info: Any) -> str:
        return check_name(value, info.field_name)

    @field_validator("ticket_id", "phase")
    @classmethod
    def _optional_name(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else check_name(value, info.field_name)

    @field_validator("requires", mode="before")
    @classmethod
    def _requires(cls, value: Any) -> list[str]:
        return normalize_capabilities(value or [], "requires")

    @field_validator("depends_on", mode="before")
    @classmethod
    def _depends_on(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            value = [value]
        out: list[str] = []
        for dep in value or []:
            check_name(dep, "depends_on entries")
            if dep not in out:
                out.append(dep)
        return out

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Priority:
        return Priority.parse(value)

    @field_validator("timeout", "backoff_base", "backoff_cap")
    @classmethod
    def _seconds(cls, value: float | None, info: Any) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{info.field_name} must be a positive, finite number of seconds")
        return value

    @field_validator("max_retries", mode="before")
    @classmethod
    def _not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("max_retries must be an integer, not a bool")
        return value

    @field_validator("locks", mode="before")
    @classmethod
    def _locks(cls, value: Any) -> list[Any]:
        if not value:
            return []
        from omoi_ray.lock_specs import parse_request

        try:
            spec = parse_request("task", value if isinstance(value, list) else [value])
        except Exception as exc:  # InvalidLockRequestError: its message names the problem
            raise ValueError(str(exc)) from None
        return [[key[0], key[1], mode.value] for key, mode in spec.items]

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: Any) -> Any:
        json_size(value, "payload")
        return value

    def fingerprint(self) -> str:
        """A hash of everything that defines the task except its id and idempotency key."""
        body = [
            self.type, self.payload, self.requires, int(self.priority), self.depends_on, self.timeout,
            self.max_retries, self.backoff_base, self.backoff_cap, self.ticket_id, self.phase,
            *([self.locks] if self.locks else []),  # absent when empty: older fingerprints stay valid
        ]
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_new_task(self) -> NewTask:
        return NewTask(
            id=self.id,
            type=self.type,
            payload=self.payload,
            requires=frozenset(self.requires),
            priority=self.priority,
            depends_on=tuple(self.depends_on),
            retry=_retry_policy(self.max_retries, self.backoff_base, self.backoff_cap),
            timeout=self.timeout,
            ticket_id=self.ticket_id,
            phase=self.phase,
            idempotency_key=self.idempotency_key,
            fingerprint=self.fingerprint(),
            locks=tuple((t, i, m) for t, i, m in self.locks),
        )


@functools.lru_cache(maxsize=256)
def _retry_policy(max_retries: int, backoff_base: float, backoff_cap: float) -> RetryPolicy:
    """Policies are immutable: tasks with the same one share a single object."""
    return RetryPolicy(max_retries=max_retries, backoff_base=backoff_base, backoff_cap=backoff_cap)


def parse_task_specs(
    items: Sequence[TaskSpec | Mapping[str, Any]], payload_max_bytes: int
) -> list[TaskSpec]:
    """Validate a submission; raise ``InvalidTaskSpecError`` naming the task and field."""
    return list(iter_task_specs(items, payload_max_bytes))


def parse_new_tasks(items: Sequence[TaskSpec | Mapping[str, Any]], payload_max_bytes: int) -> list[NewTask]:
    """Validate a submission straight into the core's form (one ``TaskSpec`` alive at a time)."""
    return [spec.to_new_task() for spec in iter_task_specs(items, payload_max_bytes)]


def iter_task_specs(items: Sequence[TaskSpec | Mapping[str, Any]], payload_max_bytes: int) -> Any:
    for index, item in enumerate(items):
        if isinstance(item, TaskSpec):
            spec = item
        elif isinstance(item, Mapping):
            try:
                spec = TaskSpec.model_validate(dict(item))
            except ValidationError as exc:
                raise InvalidTaskSpecError(_describe(exc, item.get("id"), index)) from None
        else:
            raise InvalidTaskSpecError(
                f"submission item {index} must be a TaskSpec or a mapping, not {type(item).__name__}"
            )
        size = json_size(spec.payload, "payload")
        if size > payload_max_bytes:
            raise PayloadTooLargeError(
                f"task '{spec.id}': payload is {size} bytes, over the limit of "
                f"{payload_max_bytes} (OMOI_PAYLOAD_MAX_BYTES); pass a reference instead",
                task_id=spec.id,
            )
        yield spec


def _describe(exc: ValidationError, task_id: Any, index: int) -> str:
    who = f"task '{task_id}'" if isinstance(task_id, str) else f"submission item {index}"
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(task)"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{field}: {message}")
    return f"{who}: " + "; ".join(parts)


class TaskInfo(BaseModel):
    """A task's state as the runtime reports it."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    status: str
    priority: str
    attempt: int
    depends_on: list[str] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list)
    result: Any = None
    error: str | None = None
    reason: str | None = None
    agent_id: str | None = None
    ticket_id: str | None = None
    phase: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        from omoi_ray.core.task_state import TERMINAL, TaskStatus

        return TaskStatus(self.status) in TERMINAL


class AttemptInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    task_id: str
    attempt: int
    agent_id: str
    outcome: str | None
    error: str | None
    claimed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


Handler = Callable[..., Any] | str


class AgentSpec(BaseModel):
    """An agent as a user declares it: a name, what it can do, and how many tasks at once.

    ``handlers`` maps task types to callables or import paths (``pkg.module:function``);
    ``handler`` (optional) runs every task type without an entry of its own.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str
    capabilities: list[str] = Field(default_factory=list)
    capacity: int = 1
    handler: Any = None
    handlers: dict[str, Any] = Field(default_factory=dict)
    num_cpus: float = 0.0
    resources: dict[str, float] = Field(default_factory=dict)
    max_restarts: int = -1

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "agent name")

    @field_validator("capabilities", mode="before")
    @classmethod
    def _caps(cls, value: Any) -> list[str]:
        return normalize_capabilities(value or [], "capabilities")

    @field_validator("capacity", mode="before")
    @classmethod
    def _capacity(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
            raise ValueError(f"capacity must be an integer from 1 to 1024, not {value!r}")
        return value

    @field_validator("num_cpus")
    @classmethod
    def _cpus(cls, value: float) -> float:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError("num_cpus must be a finite number >= 0")
        return value

    @model_validator(mode="after")
    def _has_handler(self) -> AgentSpec:
        for task_type, handler in self.handlers.items():
            check_name(task_type, "handler task type")
            _check_handler(handler, f"handler for '{task_type}'")
        if self.handler is not None:
            _check_handler(self.handler, "handler")
        if self.handler is None and not self.handlers:
            raise ValueError("give a handler (for every task type) or handlers (per task type)")
        return self


def _check_handler(handler: Any, what: str) -> None:
    if isinstance(handler, str):
        if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", handler):
            raise ValueError(f"{what} {handler!r} must be an import path 'pkg.module:function'")
    elif not callable(handler):
        raise ValueError(f"{what} must be a callable or an import path, not {handler!r}")


def parse_agent_spec(**fields: Any) -> AgentSpec:
    try:
        return AgentSpec(**fields)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(agent)"
            parts.append(f"{field}: {err['msg'].removeprefix('Value error, ')}")
        raise InvalidAgentSpecError(f"agent '{fields.get('name')}': " + "; ".join(parts)) from None
