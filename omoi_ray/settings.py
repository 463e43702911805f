"""One settings object, read from ``OMOI_*`` environment variables.

Rules:
- With nothing configured the store is a SQLite file under ``~/.omoi-ray`` (the embedded
  default); ``OMOI_DATABASE_URL`` points it at PostgreSQL (or another SQLite file).
- Secrets (database and Redis passwords) are ``SecretStr``: they never show in ``repr``, logs or
  error messages. Use ``safe_database_url`` whenever a URL is shown to a person.
- The database and Redis URLs must use a scheme omoi-ray supports (checked when settings are
  built, without connecting), so a wrong URL fails at once naming its setting.
- Settings are resolved once, in the driver, and handed to the actors as an object, so every
  process of one runtime agrees on them (actors may run with another working directory).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from omoi_ray.core.storable import (
    MAX_EVENT_COUNT_SETTING,
    MAX_EVENTS_LIMIT,
    MAX_HARD_TIMEOUT_GRACE_S,
    MAX_JSON_BYTES_SETTING,
    MAX_LOCK_S,
    MAX_OWNER_LEASE_S,
    MAX_POLL_S,
    MAX_SUBMISSION_SETTING,
    MAX_WAIT_S,
    check_seconds,
)
from omoi_ray.errors import ConfigurationError, InvalidSettingError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # matched whole: "omoi\n" is refused
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# The URL schemes of the stores omoi-ray supports (and no control characters after them).
_URL_SCHEMES = {
    "database_url": re.compile(r"(?:sqlite|postgres|postgresql)(?:\+\w+)?://[^\x00-\x1f\x7f]*"),
    "redis_url": re.compile(r"(?:redis|rediss|unix)://[^\x00-\x1f\x7f]*"),
}
_URL_HINTS = {
    "database_url": "must be a sqlite:///<path> or postgresql://user@host/db URL",
    "redis_url": "must be a redis://, rediss:// or unix:// URL",
}


def default_home() -> Path:
    """Return ``$OMOI_HOME``, else ``~/.omoi-ray`` (user-expanded): where the embedded database and workspaces live."""
    return Path(os.environ.get("OMOI_HOME") or Path.home() / ".omoi-ray").expanduser()


#: an integer of 19 digits or more, as text, of either sign: past every bound in ``_INT_MAXIMA``
#: (or below every lower bound), and maybe past the 4300 digits ``int()`` parses
_HUGE_INT = re.compile(r"\s*([+-]?)0*[1-9][0-9]{18,}\s*")
#: the largest value of each integer setting (see the README's "Limits and bounds")
_INT_MAXIMA = {
    "payload_max_bytes": MAX_JSON_BYTES_SETTING,
    "result_max_bytes": MAX_JSON_BYTES_SETTING,
    "message_max_bytes": MAX_JSON_BYTES_SETTING,
    "max_submission": MAX_SUBMISSION_SETTING,
    "events_stream_maxlen": MAX_EVENT_COUNT_SETTING,
    "events_replay": MAX_EVENT_COUNT_SETTING,
    "events_batch": MAX_EVENTS_LIMIT,
}

#: the largest value of each setting in seconds, and what the bound keeps (README "Limits and bounds")
_SECONDS_MAXIMA = {
    # now + a lease, now - a retention: every time the runtime derives must stay one a store can hold
    **dict.fromkeys(("lease_ttl", "long_poll", "agent_stale_after", "events_retention", "thread_retention"),
                    (MAX_WAIT_S, "")),
    "events_poll": (MAX_POLL_S, ""),
    # every lock a task declares is asked for with this lease: it must be one the lock manager grants
    "lock_ttl": (MAX_LOCK_S, " (the longest lock lease)"),
}


def _in_memory_sqlite(url: Any) -> bool:
    """Whether the SQLAlchemy ``url`` names an in-memory SQLite database (``sqlite://``,
    ``sqlite:///:memory:``, a ``file::memory:`` URI or ``mode=memory``)."""
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database or ""
    return (database in ("", ":memory:") or database.startswith("file::memory:")
            or url.query.get("mode") == "memory")


class Settings(BaseSettings):
    """The runtime's settings; each field ``x`` is read from ``OMOI_X`` unless passed in. Frozen.

    Durations are seconds, sizes bytes, counts plain integers: ``home`` (folder of the embedded
    database), ``database_url`` (None: SQLite under ``home``), ``namespace`` (the Ray namespace,
    1-64 of letters, digits, ``_ . -``), ``workspace_dir`` (None: ``home/workspaces``),
    ``lease_ttl`` (agent lease), ``agent_stale_after`` (silence before an agent is stale),
    ``long_poll`` (longest wait of an agent's poll for work), ``report_linger`` (0-1),
    ``lock_ttl``, ``hard_timeout_grace``, ``payload_max_bytes``, ``result_max_bytes``,
    ``max_submission`` (tasks per submission), the Redis mirror (``redis_url``, ``redis_prefix``,
    ``events_stream_maxlen``, ``events_replay``, ``events_batch``), ``events_retention`` (0: keep
    forever), ``events_poll``, ``call_retry_for``, ``owner_lease``, ``message_max_bytes`` and
    ``thread_retention`` (0: keep forever); comments on the fields say more.

    Raises:
        InvalidSettingError: (a ``ConfigurationError`` and a ``ValueError``) a value out of
            range or of the wrong kind (booleans are not numbers), or a URL of an unsupported
            scheme: one line naming the field (the message never quotes the URL); ``field`` is
            the first bad field and ``problems`` lists ``(field, message)`` for every one
            (pydantic validates underneath).
    """

    model_config = SettingsConfigDict(env_prefix="OMOI_", extra="ignore", frozen=True)

    def __init__(self, **values: Any) -> None:
        """Validate ``values`` and the ``OMOI_*`` environment; see the class for the errors."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _configuration_error(exc) from None

    home: Path = Field(default_factory=default_home)
    database_url: SecretStr | None = None
    namespace: str = "omoi"
    workspace_dir: Path | None = None
    lease_ttl: float = 30.0
    #: seconds of silence after which an agent is ``stale`` and gets no new work (None: two
    #: missed heartbeats, 2/3 of ``lease_ttl``); more than ``lease_ttl / 3`` (the heartbeat
    #: interval) and less than ``lease_ttl``
    agent_stale_after: float | None = None
    long_poll: float = 30.0
    #: an agent with handlers still running waits this long before reporting, so that reports
    #: of handlers finishing together travel in one call
    report_linger: float = 0.002
    #: lease of locks taken for tasks (renewed by the agent's heartbeat)
    lock_ttl: float = 30.0
    #: seconds a handler may run on after its timeout or cancellation before it is a zombie:
    #: its agent then stops claiming, lets its other attempts finish, and has its process replaced
    hard_timeout_grace: float = 10.0
    payload_max_bytes: int = 1_000_000
    result_max_bytes: int = 1_000_000
    max_submission: int = 100_000
    #: Redis to mirror events to (a stream plus pub/sub channels); None keeps them in the database
    redis_url: SecretStr | None = None
    #: prefix of every Redis key and channel this runtime uses
    redis_prefix: str = "omoi"
    #: approximate length cap of the Redis stream (``XADD ... MAXLEN ~``)
    events_stream_maxlen: int = 100_000
    #: after Redis comes back empty, re-mirror this many events from before the relay's cursor
    events_replay: int = 10_000
    #: events older than this many seconds are pruned from the database (0: keep forever)
    events_retention: float = 7 * 24 * 3600.0
    #: how often the relay looks for new events when it has caught up (seconds)
    events_poll: float = 0.05
    #: events mirrored per Redis round trip
    events_batch: int = 1000
    #: seconds a driver's call keeps retrying while a singleton (scheduler, lock manager, relay)
    #: restarts before it raises ``RuntimeUnavailableError`` (agents and handlers never give up)
    call_retry_for: float = 60.0
    #: the runtime's lease on its database (seconds): renewed by the scheduler every third of
    #: it; another runtime may take the database over once it lapses (see ``db_owner``)
    owner_lease: float = 15.0
    #: largest message body (compact JSON, bytes): ``MessageTooLargeError`` above it
    message_max_bytes: int = 64_000
    #: resolved and abandoned threads, with their messages and receipts, are pruned this many
    #: seconds after they closed (0: keep forever)
    thread_retention: float = 7 * 24 * 3600.0

    @field_validator("agent_stale_after")
    @classmethod
    def _stale_after(cls, value: float | None) -> float | None:
        if value == math.inf:  # a number past float's range: the bound check below names the maximum
            return value
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError("must be a positive number of seconds")
        return value

    @model_validator(mode="after")
    def _stale_before_lease(self) -> Settings:
        stale = self.agent_stale_after
        if stale is not None and not self.lease_ttl / 3 < stale < self.lease_ttl:
            raise ValueError(
                f"agent_stale_after ({stale:g}s) must be more than the heartbeat interval (lease_ttl / 3 = "
                f"{self.lease_ttl / 3:g}s) and less than lease_ttl ({self.lease_ttl:g}s): an agent is stale "
                "after missing a heartbeat, before its lease runs out"
            )
        return self

    @property
    def stale_after(self) -> float:
        """Seconds of silence after which an agent is ``stale`` (``agent_stale_after``, or 2/3
        of ``lease_ttl``: two missed heartbeats)."""
        return self.lease_ttl * 2 / 3 if self.agent_stale_after is None else self.agent_stale_after

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                "namespace must be 1-64 characters of letters, digits, '_', '.', '-'"
            )
        return value

    @field_validator("redis_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value):
            raise ValueError("redis_prefix must be 1-64 characters of letters, digits, '_', '.', ':', '-'")
        return value

    @field_validator("events_retention", "thread_retention")
    @classmethod
    def _retention(cls, value: float) -> float:
        if value == math.inf:  # a number past float's range: the bound check names the maximum
            return value
        if not (math.isfinite(value) and value >= 0):
            raise ValueError("must be 0 (keep forever) or a positive number of seconds")
        return value

    @field_validator(
        "lease_ttl", "agent_stale_after", "long_poll", "report_linger", "lock_ttl", "hard_timeout_grace", "payload_max_bytes",
        "result_max_bytes", "max_submission", "events_stream_maxlen", "events_replay", "events_retention",
        "events_poll", "events_batch", "call_retry_for", "owner_lease", "message_max_bytes", "thread_retention",
        mode="before",
    )
    @classmethod
    def _not_bool(cls, value: Any, info: Any) -> Any:
        # pydantic would take True as 1: a number is never a boolean (environment values are text)
        if isinstance(value, bool):
            raise ValueError(f"{info.field_name} must be a number, not a boolean")
        huge = _HUGE_INT.fullmatch(value) if info.field_name in _INT_MAXIMA and isinstance(value, str) else None
        if huge is not None:
            if huge.group(1) == "-":
                # below every lower bound: -1 stands in, so the field's own lower-bound check
                # words the message (int() might not even parse the text)
                return -1
            raise ValueError(f"must be at most {_INT_MAXIMA[info.field_name]:,}")
        return value

    @field_validator("lease_ttl", "long_poll", "lock_ttl", "events_poll")
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if value == math.inf:  # e.g. "1" and 5000 zeros: too large, which each field's bound check says
            return value
        if not (math.isfinite(value) and value > 0):
            raise ValueError("must be a positive number of seconds")
        return value

    @field_validator(*_SECONDS_MAXIMA)
    @classmethod
    def _seconds_at_most(cls, value: float | None, info: Any) -> float | None:
        maximum, why = _SECONDS_MAXIMA[info.field_name]
        if value is not None and value > maximum:
            raise ValueError(f"must be at most {maximum:g} seconds{why}")
        return value

    @field_validator("hard_timeout_grace", mode="before")
    @classmethod
    def _grace(cls, value: object) -> float:
        if isinstance(value, str):  # from the environment
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"hard_timeout_grace must be a number of seconds, not {value!r}") from None
        return check_seconds(value, "hard_timeout_grace", maximum=MAX_HARD_TIMEOUT_GRACE_S)

    @field_validator("owner_lease")
    @classmethod
    def _owner_lease(cls, value: float) -> float:
        if not (math.isfinite(value) and 0.1 <= value <= MAX_OWNER_LEASE_S):
            raise ValueError(f"must be between 0.1 and {MAX_OWNER_LEASE_S:g} seconds")
        return value

    @field_validator("events_replay")
    @classmethod
    def _non_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 or a positive integer")
        return value

    @field_validator("report_linger")
    @classmethod
    def _linger(cls, value: float) -> float:
        if not (math.isfinite(value) and 0 <= value <= 1):
            raise ValueError("must be between 0 and 1 second")
        return value

    @field_validator("payload_max_bytes", "result_max_bytes", "max_submission", "events_stream_maxlen",
                     "events_batch", "message_max_bytes")
    @classmethod
    def _positive_int(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be a positive integer")
        return value

    @field_validator("payload_max_bytes", "result_max_bytes", "message_max_bytes", "max_submission",
                     "events_stream_maxlen", "events_replay", "events_batch")
    @classmethod
    def _int_at_most(cls, value: int, info: Any) -> int:
        # a count past these reaches SQL LIMITs, Redis MAXLEN and size checks as an overflow, not a limit
        maximum = _INT_MAXIMA[info.field_name]
        if value > maximum:
            raise ValueError(f"must be at most {maximum:,}")
        return value

    @field_validator("database_url", "redis_url")
    @classmethod
    def _url_scheme(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        # Only the form is checked here (no connection): a URL of a store omoi-ray does not
        # support, or one SQLAlchemy cannot parse, fails at once naming the setting, instead of
        # deep inside a driver. Messages never quote the URL (it may hold a password).
        if value is None:
            return value
        url = value.get_secret_value().strip()
        if url and not _URL_SCHEMES[info.field_name].fullmatch(url):
            raise ValueError(_URL_HINTS[info.field_name])
        if url and info.field_name == "database_url":
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                parsed = make_url(url)
            except (ArgumentError, ValueError):
                raise ValueError(f"is not a well-formed URL: {_URL_HINTS['database_url']}") from None
            if _in_memory_sqlite(parsed):
                # each process (driver, scheduler, lock manager, agents) would get its own empty
                # database: the runtime's actors would find no schema and share nothing
                raise ValueError("is an in-memory SQLite database, which the runtime's processes cannot "
                                 "share: use a file path, e.g. sqlite:///omoi.db")
        return value
    @field_validator("call_retry_for")
    @classmethod
    def _call_retry_for(cls, value: float) -> float:
        from omoi_ray.core.storable import MAX_WAIT_S, check_seconds

        return check_seconds(value, "call_retry_for", maximum=MAX_WAIT_S)

    # -- derived values ---------------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        """True when no database was configured and the SQLite file under ``home`` is used."""
        return self.database_url is None

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL, with the driver spelled out. Contains the password: never show it.

        Raises:
            ConfigurationError: ``OMOI_DATABASE_URL`` is set but empty.
        """
        if self.database_url is None:
            return f"sqlite:///{(self.home / 'omoi.db').resolve()}"
        url = self.database_url.get_secret_value().strip()
        if not url:
            raise ConfigurationError("OMOI_DATABASE_URL is set but empty")
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    def safe_database_url(self) -> str:
        """The database URL with any password masked, fit for logs and messages."""
        return mask_url(self.resolved_database_url())

    def resolved_redis_url(self) -> str | None:
        """The Redis URL, or None when events stay in the database. Contains the password."""
        if self.redis_url is None:
            return None
        url = self.redis_url.get_secret_value().strip()
        return url or None

    def safe_redis_url(self) -> str | None:
        """The Redis URL with any password masked (None when Redis is not configured)."""
        url = self.resolved_redis_url()
        return None if url is None else mask_url(url)

    def resolved_workspace_dir(self) -> Path:
        """The absolute workspace folder: ``workspace_dir``, else ``home/workspaces``."""
        return (self.workspace_dir or self.home / "workspaces").expanduser().resolve()


def mask_url(url: str) -> str:
    """Mask the password of a URL (and any ``password=`` query parameter)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: mask by pattern
        masked = re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)
        return re.sub(r"(password=)[^&]*", r"\1***", masked)


def _configuration_error(exc: ValidationError) -> InvalidSettingError:
    """A settings ``ValidationError`` as one line naming the field (never quoting the value)."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_input=False, include_url=False):
        message = " ".join(str(err.get("msg", "")).removeprefix("Value error, ").split())
        field = ".".join(str(p) for p in err.get("loc", ()))
        if not field:  # a check across fields: its message starts with the field it is about
            first = message.split(" ", 1)[0]
            field = first if first in Settings.model_fields else "settings"
        problems.append((field, message))
    field, message = problems[0]
    text = message if message.startswith(field + " ") else f"{field}: {message}"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return InvalidSettingError(f"Settings: {text}{more}", field=field, problems=problems)
