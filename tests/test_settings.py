"""Settings: the embedded default, URL normalisation, and passwords that never show."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from omoi_ray.errors import ConfigurationError, DatabaseNotMigratedError
from omoi_ray.settings import Settings, mask_url
from omoi_ray.store import migrate
from omoi_ray.store.store import Store

SECRET = "s3cr3t-Pa55"


def test_embedded_default_is_a_sqlite_file_under_home(tmp_path):
    s = Settings(home=tmp_path)
    assert s.embedded
    assert s.resolved_database_url() == f"sqlite:///{tmp_path.resolve() / 'omoi.db'}"


def test_environment_configures_the_database(monkeypatch, tmp_path):
    monkeypatch.setenv("OMOI_DATABASE_URL", f"postgresql://app:{SECRET}@db.example:5432/omoi")
    monkeypatch.setenv("OMOI_NAMESPACE", "team-a")
    s = Settings(home=tmp_path)
    assert s.resolved_database_url().startswith("postgresql+psycopg://app:")
    assert s.namespace == "team-a"


def test_passwords_never_appear_in_reprs_logs_or_errors(tmp_path, caplog):
    url = f"postgresql://app:{SECRET}@127.0.0.1:1/omoi"
    s = Settings(home=tmp_path, database_url=SecretStr(url))
    assert SECRET not in repr(s) and SECRET not in str(s)
    assert SECRET not in s.safe_database_url()
    assert SECRET not in repr(Store(s.resolved_database_url()))
    assert SECRET not in mask_url("redis://:" + SECRET + "@host:6379/0")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(Exception) as err:
            migrate.check(s.resolved_database_url())
    assert SECRET not in str(err.value)
    assert SECRET not in caplog.text


def test_a_not_migrated_message_masks_the_password(tmp_path, monkeypatch):
    from omoi_ray.store import migrate as m

    monkeypatch.setattr(m, "current_revision", lambda url: None)
    url = f"postgresql+psycopg://app:{SECRET}@127.0.0.1:1/omoi"
    with pytest.raises(DatabaseNotMigratedError) as err:
        m.check(url)
    assert SECRET not in str(err.value) and "***" in str(err.value)


@pytest.mark.parametrize(
    "field,value",
    [("namespace", "bad name!"), ("lease_ttl", 0), ("long_poll", float("nan")), ("payload_max_bytes", -1)],
)
def test_bad_settings_are_rejected(field, value, tmp_path):
    with pytest.raises(ConfigurationError) as err:
        Settings(home=tmp_path, **{field: value})
    assert field in str(err.value)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+pysqlite:///:memory:",
                                 "sqlite:///file::memory:?uri=true", "sqlite:///x.db?mode=memory&uri=true"])
def test_an_in_memory_sqlite_database_is_refused(url, tmp_path, monkeypatch):
    # each of the runtime's processes would open its own empty database
    with pytest.raises(ConfigurationError) as err:
        Settings(home=tmp_path, database_url=SecretStr(url))
    assert "database_url" in str(err.value) and "in-memory SQLite" in str(err.value)
    monkeypatch.setenv("OMOI_DATABASE_URL", url)
    with pytest.raises(ConfigurationError, match="use a file path"):
        Settings(home=tmp_path)


# every numeric setting: (field, largest accepted, the next value refused)
SETTING_BOUNDS = [
    ("lease_ttl", 1e9, 1e9 + 1),
    ("long_poll", 1e9, 1e300),
    ("events_retention", 1e9, 1e12),
    ("thread_retention", 1e9, float("inf")),
    ("events_poll", 60.0, 60.5),
    ("lock_ttl", 86400.0, 86401.0),
    ("hard_timeout_grace", 3600.0, 3601.0),
    ("call_retry_for", 1e9, 1e10),
    ("owner_lease", 3600.0, 3600.5),
    ("report_linger", 1.0, 1.5),
    ("payload_max_bytes", 100_000_000, 100_000_001),
    ("result_max_bytes", 100_000_000, 10**30),
    ("message_max_bytes", 100_000_000, 2**63),
    ("max_submission", 10_000_000, 10_000_001),
    ("events_stream_maxlen", 1_000_000_000, 1_000_000_001),
    ("events_replay", 1_000_000_000, 10**400),
    ("events_batch", 100_000, 100_001),
]


@pytest.mark.parametrize("field,largest,over", SETTING_BOUNDS, ids=[b[0] for b in SETTING_BOUNDS])
def test_every_numeric_setting_has_an_upper_bound(field, largest, over, tmp_path):
    assert getattr(Settings(home=tmp_path, **{field: largest}), field) == largest
    with pytest.raises(ConfigurationError) as err:
        Settings(home=tmp_path, **{field: over})
    assert field in str(err.value)


def test_an_environment_value_past_a_bound_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OMOI_LEASE_TTL", "1e300")  # now + lease would be past any time a store holds
    with pytest.raises(ConfigurationError) as err:
        Settings(home=tmp_path)
    assert "lease_ttl" in str(err.value) and "at most" in str(err.value)


HUGE = "1" + "0" * 5000  # past float's range, and past the digits int() parses


@pytest.mark.parametrize(("variable", "bound"), [
    ("OMOI_LEASE_TTL", "at most 1e+09"), ("OMOI_LONG_POLL", "at most 1e+09"), ("OMOI_LOCK_TTL", "at most 86400"),
    ("OMOI_EVENTS_POLL", "at most 60"), ("OMOI_AGENT_STALE_AFTER", "at most 1e+09"),
    ("OMOI_EVENTS_RETENTION", "at most 1e+09"), ("OMOI_THREAD_RETENTION", "at most 1e+09"),
    ("OMOI_PAYLOAD_MAX_BYTES", "at most 100,000,000"), ("OMOI_EVENTS_BATCH", "at most 100,000"),
])
def test_a_number_too_large_for_a_float_is_refused_naming_the_bound(variable, bound, tmp_path, monkeypatch):
    monkeypatch.setenv(variable, HUGE)
    with pytest.raises(ConfigurationError) as err:
        Settings(home=tmp_path)
    assert variable.removeprefix("OMOI_").lower() in str(err.value) and bound in str(err.value)


@pytest.mark.parametrize(("variable", "bound"), [
    ("OMOI_PAYLOAD_MAX_BYTES", "must be a positive integer"), ("OMOI_EVENTS_BATCH", "must be a positive integer"),
    ("OMOI_EVENTS_REPLAY", "must be 0 or a positive integer"),
])
def test_a_negative_integer_too_long_to_parse_is_refused_naming_the_lower_bound(
    variable, bound, tmp_path, monkeypatch
):
    monkeypatch.setenv(variable, "-" + HUGE)
    with pytest.raises(ConfigurationError) as err:
        Settings(home=tmp_path)
    assert variable.removeprefix("OMOI_").lower() in str(err.value) and bound in str(err.value)


def test_a_bad_setting_is_one_typed_line_naming_the_field(tmp_path):
    with pytest.raises(ConfigurationError) as err:
        Settings(home=tmp_path, lease_ttl=True)
    assert "\n" not in str(err.value) and str(err.value).startswith("Settings: lease_ttl")
    assert err.value.field == "lease_ttl" and err.value.problems[0][0] == "lease_ttl"
