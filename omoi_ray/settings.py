"""One settings object, read from ``OMOI_*`` environment variables.

Rules:
- With nothing configured the store is a SQLite file under ``~/.omoi-ray`` (the embedded
  default); ``OMOI_DATABASE_URL`` points it at PostgreSQL (or another SQLite file).
- Secrets (database and Redis passwords) are ``SecretStr``: they never show in ``repr``, logs or
  error messages. Use ``safe_database_url`` whenever a URL is shown to a person.
- Settings are resolved once, in the driver, and handed to the actors as an object, so every
  process of one runtime agrees on them (actors may run with another working directory).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from omoi_ray.core.storable import MAX_OWNER_LEASE_S
from omoi_ray.errors import ConfigurationError

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def default_home() -> Path:
    return Path(os.environ.get("OMOI_HOME") or Path.home() / ".omoi-ray").expanduser()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMOI_", extra="ignore", frozen=True)

    home: Path = Field(default_factory=default_home)
    database_url: SecretStr | None = None
    namespace: str = "omoi"
    workspace_dir: Path | None = None
    lease_ttl: float = 30.0
    long_poll: float = 30.0
    #: an agent with handlers still running waits this long before reporting, so that reports
    #: of handlers finishing together travel in one call
    report_linger: float = 0.002
    #: lease of locks taken for tasks (renewed by the agent's heartbeat)
    lock_ttl: float = 30.0
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
    #: the runtime's lease on its database (seconds): renewed by the scheduler every third of
    #: it; another runtime may take the database over once it lapses (see ``db_owner``)
    owner_lease: float = 15.0

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "namespace must be 1-64 characters of letters, digits, '_', '.', '-'"
            )
        return value

    @field_validator("redis_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.:-]{1,64}$", value):
            raise ValueError("redis_prefix must be 1-64 characters of letters, digits, '_', '.', ':', '-'")
        return value

    @field_validator("events_retention")
    @classmethod
    def _retention(cls, value: float) -> float:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError("must be 0 (keep forever) or a positive number of seconds")
        return value

    @field_validator("lease_ttl", "long_poll", "lock_ttl", "events_poll")
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError("must be a positive number of seconds")
        return value

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
                     "events_batch")
    @classmethod
    def _positive_int(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be a positive integer")
        return value

    # -- derived values ---------------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        """True when no database was configured and the SQLite file under ``home`` is used."""
        return self.database_url is None

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL, with the driver spelled out. Contains the password: never show it."""
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
        url = self.resolved_redis_url()
        return None if url is None else mask_url(url)

    def resolved_workspace_dir(self) -> Path:
        return (self.workspace_dir or self.home / "workspaces").expanduser().resolve()


def mask_url(url: str) -> str:
    """Mask the password of a URL (and any ``password=`` query parameter)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: mask by pattern
        masked = re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)
        return re.sub(r"(password=)[^&]*", r"\1***", masked)
