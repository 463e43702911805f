"""Events: positions, the catalogue, reading the log without skipping, the relay, follow, the CLI.

The relay runs in-process here (its loop is a thread); tests/test_event_faults.py runs it as a
Ray actor and kills it, Redis and the consumer.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from omoi_ray.actors.event_relay import EventRelayActor
from pydantic import SecretStr

from omoi_ray.client.follow import check_types, follow
from omoi_ray.core.events import CATALOGUE, EMITTED, matches
from omoi_ray.core.model import Event, EventBatch
from omoi_ray.core.tasks import TRANSITIONS
from omoi_ray.errors import InvalidEventQueryError
from omoi_ray.settings import Settings
from omoi_ray.specs.events import START, EventRecord, Position
from omoi_ray.store import schema as t
from omoi_ray.store.events import EventLog
from omoi_ray.store.store import Store
from omoi_ray.store.stream import StreamKeys

ROOT = Path(__file__).resolve().parent.parent


def write(store: Store, entity: str, n: int, type_: str = "task.created", at: float | None = None) -> None:
    at = time.time() if at is None else at
    store.writer.apply(EventBatch([Event(type_, "task", entity, at, {"seq": i}) for i in range(n)]))


def settings_for(url: str, tmp: Path, redis_url: str | None = None, prefix: str = "omoi", **extra) -> Settings:
    return Settings(
        home=tmp, database_url=SecretStr(url), redis_url=SecretStr(redis_url) if redis_url else None,
        redis_prefix=prefix, events_poll=0.01, **extra,
    )


def collect(settings: Settings, count: int, timeout: float = 20.0, **kwargs) -> list[EventRecord]:
    """The first ``count`` events ``follow`` yields (fails after ``timeout`` seconds)."""

    async def run() -> list[EventRecord]:
        out: list[EventRecord] = []
        async for e in follow(settings, poll=0.01, **kwargs):
            out.append(e)
            if len(out) >= count:
                return out
        return out

    return asyncio.run(asyncio.wait_for(run(), timeout))


# ------------------------------------------------------------------ pure parts


def test_positions_parse_and_order():
    assert Position.parse("12-345") == Position(12, 345)
    assert Position.parse("345") == Position(0, 345)
    assert Position.parse("1-0") > Position.parse("0-999")
    assert str(Position(3, 4)) == "3-4"
    for bad in ("", "x-1", "1-y", "-1-2", "1--2"):
        with pytest.raises(InvalidEventQueryError, match="event position"):
            Position.parse(bad)


def test_type_patterns_are_validated_and_matched():
    assert check_types("task.*") == ("task.*",)
    assert matches("task.completed", ("task.*",))
    assert not matches("lock.granted", ("task.*",))
    assert matches("lock.granted", ())
    for bad in ("task completed", "", "a;b", "x" * 200):
        with pytest.raises(InvalidEventQueryError, match="event type pattern"):
            check_types([bad])


def test_every_event_type_written_anywhere_is_in_the_catalogue():
    emitted = {name for row in TRANSITIONS.values() for name in row.values()}
    source = "\n".join(p.read_text() for d in ("omoi_ray", "actors") for p in (ROOT / d).rglob("*.py"))
    emitted |= set(re.findall(r'type="((?:task|lock|agent|coordination|ticket)\.[a-z_.]+)"', source))
    assert emitted, "the scan found nothing: the pattern is broken"
    assert emitted - set(CATALOGUE) == set()
    # and the catalogue does not claim to emit what nothing writes
    literals = set(re.findall(r'"((?:task|lock|agent|coordination|ticket)\.[a-z_.]+)"', source)) | emitted
    assert set(EMITTED) - literals == set()
    for name in ("agent.message.sent", "agent.handoff.declined", "coordination.merge.completed"):
        assert name in CATALOGUE


def test_the_wire_form_round_trips():
    rec = EventRecord(position="5-9", id="e1", type="task.completed", entity_type="task", entity_id="a",
                      payload={"result": [1, 2]}, at="2026-11-26T10:00:00.123456+00:00", task_id="a")
    back = EventRecord.from_wire(rec.wire())
    assert back == rec


# ------------------------------------------------------------------ the log (both backends)


def test_reads_come_in_position_order_and_resume_without_gaps(db_url):
    store = Store(db_url)
    log = EventLog(store.engine)
    for i in range(5):
        write(store, f"e{i}", 7)
    assert log.read_after(START, 100) == log.read_after(START, 100)
    every = log.read_after(START, 1000)
    assert len(every) == 35
    assert [e.pos for e in every] == sorted(e.pos for e in every)
    # paging from any position yields exactly the rest
    paged, pos = [], START
    while page := log.read_after(pos, 6):
        paged.extend(page)
        pos = page[-1].pos
    assert paged == every
    assert log.latest() == every[-1].pos
    assert log.read_after(every[9].pos, 3, before=every[11].pos) == [every[10]]
    assert log.rewind(every[-1].pos, 5) == every[-6].pos
    assert log.rewind(every[3].pos, 50) == START
    assert [e.payload["seq"] for e in every if e.entity_id == "e2"] == list(range(7))
    store.dispose()


def test_cursors_never_move_backwards(db_url):
    store = Store(db_url)
    log = EventLog(store.engine)
    assert log.load_cursor("redis") is None
    log.save_cursor("redis", Position(5, 10))
    log.save_cursor("redis", Position(5, 9))
    assert log.load_cursor("redis") == Position(5, 10)
    log.save_cursor("redis", Position(6, 1))
    assert log.load_cursor("redis") == Position(6, 1)
    store.dispose()


def test_pruning_deletes_old_events_in_batches_but_not_past_the_cursor_nor_the_newest(db_url):
    store = Store(db_url)
    log = EventLog(store.engine)
    old = time.time() - 3600
    write(store, "old", 25, at=old)
    write(store, "new", 3)
    every = log.read_after(START, 100)
    assert log.prune(time.time() - 60, upto=every[9].pos, batch=4) == 10  # only up to the cursor
    assert log.prune(time.time() - 60, batch=4) == 15
    assert [e.entity_id for e in log.read_after(START, 100)] == ["new"] * 3
    # everything is old: the newest row stays so ids never go back
    assert log.prune(time.time() + 60) == 2
    assert log.read_after(START, 100) == every[-1:]
    write(store, "later", 1)
    assert log.latest() > every[-1].pos
    store.dispose()


def test_postgres_a_transaction_that_commits_late_is_not_skipped(db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: ids are in commit order by construction")
    store = Store(db_url)
    log = EventLog(store.engine)
    write(store, "first", 1)
    seen = log.read_after(START, 100)
    ins = t.events.insert()
    row = {"event_id": "late-1", "type": "task.created", "entity_type": "task", "entity_id": "late",
           "created_at": sa.func.now()}
    slow = store.engine.connect()
    tx = slow.begin()
    slow.execute(ins.values(**row))  # takes its id (and transaction id) first...
    write(store, "quick", 2)  # ...then a quick writer commits two rows after it
    early = log.read_after(seen[-1].pos, 100)
    tx.commit()  # the slow one commits last
    slow.close()
    pos = early[-1].pos if early else seen[-1].pos
    later = log.read_after(pos, 100)
    got = [e.entity_id for e in seen + early + later]
    assert sorted(got) == ["first", "late", "quick", "quick"]  # nothing skipped, nothing twice
    assert "late" not in [e.entity_id for e in early]
    store.dispose()


# ------------------------------------------------------------------ relay + follow


@pytest.fixture
def relay_env(db_url, redis_prefix, tmp_path):
    url, prefix = redis_prefix
    settings = settings_for(db_url, tmp_path, url, prefix, events_batch=50)
    store = Store(db_url)
    relays: list[EventRelayActor] = []

    def start(**overrides) -> EventRelayActor:
        relay = EventRelayActor(settings.model_copy(update=overrides) if overrides else settings)
        relays.append(relay)
        return relay

    yield settings, store, start, redis.Redis.from_url(url, decode_responses=True)
    for r in relays:
        r.stop()
    store.dispose()


def stream_ids(client: redis.Redis, settings: Settings) -> list[str]:
    return [entry_id for entry_id, _ in client.xrange(StreamKeys(settings.redis_prefix).stream)]


def test_relay_mirrors_every_committed_event_once_in_position_order(relay_env):
    settings, store, start, client = relay_env
    relay = start()
    for i in range(4):
        write(store, f"e{i}", 30)
    relay.flush(20)
    every = EventLog(store.engine).read_after(START, 1000)
    assert stream_ids(client, settings) == [e.position for e in every]
    # a relay that restarts resumes from the stream: no entry twice
    relay.stop()
    write(store, "after", 5)
    relay2 = start()
    relay2.flush(20)
    every = EventLog(store.engine).read_after(START, 1000)
    assert stream_ids(client, settings) == [e.position for e in every]
    # a subscriber on a type's channel gets the events published after it subscribed
    sub = client.pubsub()
    sub.psubscribe(StreamKeys(settings.redis_prefix).channel_pattern("task.*"))
    assert sub.get_message(timeout=5)["type"] == "psubscribe"
    write(store, "live", 1, type_="task.completed")
    message = sub.get_message(timeout=10)
    while message is not None and message["type"] != "pmessage":
        message = sub.get_message(timeout=10)
    assert message["channel"] == f"{settings.redis_prefix}:events:task.completed"
    assert EventRecord.from_wire(message["data"]).entity_id == "live"
    sub.close()


def test_a_stream_lost_while_the_relay_runs_is_rebuilt_from_the_database(relay_env):
    settings, store, start, client = relay_env
    relay = start(events_replay=1_000_000)
    write(store, "a", 20)
    relay.flush(20)
    client.delete(StreamKeys(settings.redis_prefix).stream)  # Redis forgets, the relay does not know
    write(store, "b", 5)
    relay.flush(20)
    every = EventLog(store.engine).read_after(START, 1000)
    assert stream_ids(client, settings) == [e.position for e in every]


def test_a_stream_of_another_database_is_set_aside_and_never_read_as_ours(relay_env):
    settings, store, start, client = relay_env
    keys = StreamKeys(settings.redis_prefix)
    client.xadd(keys.stream, {"e": "{}", "p": "0-0"}, id="0-999999")
    client.set(keys.owner, "some-other-database")
    write(store, "ours", 3)
    # a consumer does not take the foreign stream for this database's
    assert [e.entity_id for e in collect(settings, 3, since="0-0")] == ["ours"] * 3
    relay = start()
    relay.flush(20)
    every = EventLog(store.engine).read_after(START, 1000)
    assert stream_ids(client, settings) == [e.position for e in every]
    aside = [k for k in client.scan_iter(match=f"{keys.stream}:foreign:*")]
    assert len(aside) == 1 and client.xlen(aside[0]) == 1


def test_follow_resumes_and_fills_what_redis_lost_from_the_database(relay_env):
    settings, store, start, client = relay_env
    relay = start(events_replay=0)
    write(store, "a", 10)
    relay.flush(20)
    first = collect(settings, 10, since="0-0")
    assert [e.entity_id for e in first] == ["a"] * 10
    # "b" is mirrored while the consumer is away, then Redis loses the stream; the relay
    # (replay=0) starts it again with new events only. Resuming from the last position the
    # consumer saw still yields everything, once: "b" comes from the database.
    write(store, "b", 5)
    relay.flush(20)
    relay.stop()
    client.delete(StreamKeys(settings.redis_prefix).stream)
    relay = start(events_replay=0)
    write(store, "c", 5)
    relay.flush(20)
    assert "b" not in {EventRecord.from_wire(f["e"]).entity_id
                       for _, f in client.xrange(StreamKeys(settings.redis_prefix).stream)}
    rest = collect(settings, 10, since=first[-1].position)
    assert [e.entity_id for e in rest] == ["b"] * 5 + ["c"] * 5
    assert [e.payload["seq"] for e in rest[:5]] == list(range(5))


def test_follow_filters_by_type_and_starts_after_the_newest_by_default(db_url, tmp_path):
    settings = settings_for(db_url, tmp_path)  # no Redis: the embedded path reads the database
    store = Store(db_url)
    write(store, "old", 3, type_="task.completed")

    async def run() -> list[EventRecord]:
        out: list[EventRecord] = []
        agen = follow(settings, types="task.completed", poll=0.01)
        first = asyncio.ensure_future(agen.__anext__())
        await asyncio.sleep(0.3)  # follow has taken its starting position by now
        await asyncio.to_thread(write, store, "x", 2, "lock.granted")
        await asyncio.to_thread(write, store, "new", 2, "task.completed")
        out.append(await asyncio.wait_for(first, 10))
        out.append(await asyncio.wait_for(agen.__anext__(), 10))
        await agen.aclose()
        return out

    got = asyncio.run(run())
    assert [(e.entity_id, e.type) for e in got] == [("new", "task.completed")] * 2
    every = collect(settings, 7, since="0-0")
    assert [e.entity_id for e in every] == ["old"] * 3 + ["x"] * 2 + ["new"] * 2
    store.dispose()


def test_relay_keeps_the_backlog_while_redis_is_unreachable(db_url, tmp_path):
    settings = settings_for(db_url, tmp_path, "redis://127.0.0.1:1/0", "unreachable")
    store = Store(db_url)
    relay = EventRelayActor(settings)
    write(store, "a", 3)
    deadline = time.monotonic() + 10
    while relay.describe()["last_error"] == "" and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the relay's first failed attempt to be recorded
    state = relay.describe()
    assert state["redis_up"] is False and "Connection" in state["last_error"]
    assert state["mirrored"] == 0
    # nothing may be pruned that was never mirrored
    assert relay.prune_now() == 0
    relay.stop()
    # the follow API still serves from the database when Redis is down
    got = collect(settings, 3, since="0-0")
    assert [e.entity_id for e in got] == ["a"] * 3
    store.dispose()


def test_retention_prunes_old_events_without_redis(db_url, tmp_path):
    settings = settings_for(db_url, tmp_path, events_retention=60)
    store = Store(db_url)
    write(store, "old", 5, at=time.time() - 3600)
    write(store, "new", 2)
    relay = EventRelayActor(settings)
    assert relay.prune_now() == 5
    assert relay.describe()["pruned"] == 5
    relay.stop()
    assert [e.entity_id for e in EventLog(store.engine).read_after(START, 100)] == ["new", "new"]
    store.dispose()


# ------------------------------------------------------------------ CLI


def test_cli_prints_recent_events_filtered_and_rejects_bad_patterns(tmp_path, capsys):
    from omoi_ray.cli import main
    from omoi_ray.store import migrate

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrate.upgrade(url)
    store = Store(url)
    write(store, "a", 3, type_="task.created")
    write(store, "b", 2, type_="lock.granted")
    store.dispose()
    assert main(["events", "--db", url, "--type", "task.*", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("task.created" in line and "task:a" in line for line in lines)
    assert main(["events", "--db", url, "--since", "0-0", "--json"]) == 0
    records = [EventRecord.from_wire(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r.entity_id for r in records] == ["a", "a", "a", "b", "b"]
    with pytest.raises(SystemExit) as exit_info:  # a bad argument: exit status 2 (see omoi_ray.cli)
        main(["events", "--db", url, "--type", "task created"])
    assert exit_info.value.code == 2
    assert "event type pattern" in capsys.readouterr().err
