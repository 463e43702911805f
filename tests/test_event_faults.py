"""Reference test T4, scaled for CI: the outbox mirror under faults (PostgreSQL, Redis, Ray).

Writers commit and roll back events concurrently, some in long transactions so that commits land
out of id order. Meanwhile the relay actor is killed twice (Ray restarts it), Redis is shut
down without saving and started again empty, and a ``follow`` consumer is stopped and resumed
from the last position it saw. Afterwards:
- the ``follow`` consumer saw every committed event exactly once, none rolled back, and each
  entity's events in commit order;
- a raw ``XREAD`` reader of the stream saw every committed event at least once, none rolled
  back, each entity in order; the final stream holds no event twice.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
import ray
import redis
import sqlalchemy as sa
from omoi_ray.actors.event_relay import EventRelayActor
from pydantic import SecretStr

from omoi_ray.client.calls import call
from omoi_ray.client.follow import follow
from omoi_ray.settings import Settings
from omoi_ray.specs.events import EventRecord, Position
from omoi_ray.store import migrate
from omoi_ray.store import schema as t
from omoi_ray.store.events import EventLog
from omoi_ray.store.stream import StreamKeys

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.ray]

WRITERS = 4
ENTITIES_PER_WRITER = 3
RUN_SECONDS = 5.0


class Ledger:
    """What the writers did: committed event ids per entity in commit order, and rolled-back ids."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.committed: dict[str, list[str]] = defaultdict(list)
        self.rolled_back: set[str] = set()


def writer(engine: sa.Engine, name: str, ledger: Ledger, stop: threading.Event, rng: random.Random) -> None:
    entities = [f"{name}-e{i}" for i in range(ENTITIES_PER_WRITER)]
    seq = {e: 0 for e in entities}
    n_tx = 0
    while not stop.is_set():
        entity = rng.choice(entities)
        count = rng.randint(1, 3)
        ids = [uuid.uuid4().hex for _ in range(count)]
        rows = [{"event_id": eid, "type": "task.completed", "entity_type": "task", "entity_id": entity,
                 "payload": {"seq": seq[entity] + i}, "created_at": sa.func.now()} for i, eid in enumerate(ids)]
        roll_back = rng.random() < 0.1
        n_tx += 1
        with engine.connect() as conn:
            tx = conn.begin()
            conn.execute(t.tickets.insert().values(id=f"{name}-{n_tx}", status="open",
                                                   created_at=sa.func.now(), updated_at=sa.func.now()))
            for row in rows:
                conn.execute(t.events.insert().values(**row))
            if rng.random() < 0.2:
                time.sleep(rng.uniform(0.05, 0.25))  # a long transaction: commits after later ones
            if roll_back:
                tx.rollback()
                with ledger.lock:
                    ledger.rolled_back.update(ids)
            else:
                tx.commit()
                seq[entity] += count
                with ledger.lock:
                    ledger.committed[entity].extend(ids)


class RawReader(threading.Thread):
    """Reads the stream with plain XREAD from the last id it saw, reconnecting through outages."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.seen: list[tuple[Position, EventRecord]] = []
        self.last = "0-0"
        self.stop = threading.Event()
        self.progress = threading.Condition()

    def run(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=1)
        while not self.stop.is_set():
            try:
                reply = client.xread({self.key: self.last}, count=500, block=200)
            except (redis.ConnectionError, redis.TimeoutError):
                self.stop.wait(0.05)  # Redis is down: retry shortly
                continue
            for _key, entries in reply or ():
                for entry_id, fields in entries:
                    rec = EventRecord.from_wire(fields[b"e"])
                    self.seen.append((Position.parse(entry_id.decode()), rec))
                    self.last = entry_id.decode()
            with self.progress:
                self.progress.notify_all()


class FollowConsumer(threading.Thread):
    """Runs ``follow`` in its own event loop until cancelled; records what it yields."""

    def __init__(self, settings: Settings, since: str) -> None:
        super().__init__(daemon=True)
        self.settings, self.since = settings, since
        self.seen: list[EventRecord] = []
        self.loop = asyncio.new_event_loop()
        self.task: Any = None
        self.progress = threading.Condition()
        self.started = threading.Event()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def consume() -> None:
            async for e in follow(self.settings, since=self.since, poll=0.02):
                self.seen.append(e)
                with self.progress:
                    self.progress.notify_all()

        self.task = self.loop.create_task(consume())
        self.started.set()
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    def kill(self) -> None:
        self.started.wait(10)
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.join(20)
        assert not self.is_alive(), "the follow consumer did not stop"

    @property
    def last(self) -> str:
        return self.seen[-1].position if self.seen else self.since


def wait_until(progress: threading.Condition, done, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    with progress:
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}"
            progress.wait(min(left, 0.5))


def test_every_committed_event_reaches_the_stream_and_consumers_through_faults(ray_session, pg_schemas, redis_server):
    db = pg_schemas.new()
    migrate.upgrade(db)
    prefix = f"t4-{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=SecretStr(db), redis_url=SecretStr(redis_server.url), redis_prefix=prefix,
                        events_poll=0.02, events_batch=200, events_replay=1_000_000)
    relay = ray.remote(EventRelayActor).options(
        name=f"t4-relay-{prefix}", num_cpus=0, max_restarts=-1, max_concurrency=16,
    ).remote(settings)
    first_pid = call(lambda: relay.describe.remote(), retry_for=60)["pid"]
    engine = sa.create_engine(db.replace("postgresql://", "postgresql+psycopg://", 1), pool_size=WRITERS + 2)
    key = StreamKeys(prefix).stream
    ledger = Ledger()
    stop = threading.Event()
    raw = RawReader(redis_server.url, key)
    raw.start()
    consumer = FollowConsumer(settings, "0-0")
    consumer.start()
    consumers = [consumer]
    writers = [threading.Thread(target=writer, args=(engine, f"w{i}", ledger, stop, random.Random(i)), daemon=True)
               for i in range(WRITERS)]
    try:
        for w in writers:
            w.start()
        begin = time.monotonic()

        def at(second: float) -> None:
            stop.wait(max(0.0, begin + second - time.monotonic()))  # the nemesis' schedule

        at(1.0)
        ray.kill(relay, no_restart=False)  # relay killed mid-run (Ray restarts it)
        at(2.0)
        redis_server.stop()  # SHUTDOWN NOSAVE: the stream is gone
        at(2.7)
        redis_server.start()  # back, empty
        at(3.0)
        consumer.kill()  # the consumer dies and resumes from the last position it saw
        consumer = FollowConsumer(settings, consumer.last)
        consumer.start()
        consumers.append(consumer)
        at(3.5)
        ray.kill(relay, no_restart=False)
        at(RUN_SECONDS)
        stop.set()
        for w in writers:
            w.join(30)

        final = call(lambda: relay.flush.remote(60), retry_for=60, timeout=90)
        target = Position.parse(final)
        assert target == EventLog(engine).latest()
        wait_until(raw.progress, lambda: Position.parse(raw.last) >= target, 60, "the raw reader")
        wait_until(consumer.progress, lambda: Position.parse(consumer.last) >= target, 60, "the follow consumer")
        state = call(lambda: relay.describe.remote())
    finally:
        stop.set()
        raw.stop.set()
        for c in consumers:
            if c.is_alive():
                c.kill()
        ray.kill(relay, no_restart=True)
        engine.dispose()

    committed = {eid for ids in ledger.committed.values() for eid in ids}
    assert len(committed) > 200 and ledger.rolled_back, "the run was too small to mean anything"
    assert state["pid"] != first_pid  # the relay that finished is a restarted one

    # follow: exactly once, nothing rolled back, per-entity commit order
    followed = [e for c in consumers for e in c.seen]
    ids = [e.id for e in followed]
    assert len(ids) == len(set(ids)), "follow yielded an event twice"
    assert set(ids) == committed
    assert [e.pos for e in followed] == sorted(e.pos for e in followed)
    by_entity: dict[str, list[str]] = defaultdict(list)
    for e in followed:
        by_entity[e.entity_id].append(e.id)
    assert by_entity == ledger.committed

    # the raw stream reader: at least once, nothing rolled back, per-entity order
    raw_ids = [rec.id for _, rec in raw.seen]
    assert committed <= set(raw_ids)
    assert not set(raw_ids) & ledger.rolled_back
    order: dict[str, list[str]] = defaultdict(list)
    for _, rec in raw.seen:
        if rec.id not in order[rec.entity_id]:
            order[rec.entity_id].append(rec.id)
    assert order == ledger.committed

    # the stream as it stands holds each event once
    client = redis.Redis.from_url(redis_server.url)
    stream = [EventRecord.from_wire(f[b"e"]).id for _, f in client.xrange(key)]
    client.close()
    assert len(stream) == len(set(stream))
