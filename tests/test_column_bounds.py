"""Every sized text column holds the longest value the runtime can write into it, on every store.

SQLite ignores ``VARCHAR(n)``; PostgreSQL refuses a longer value, and a refused commit in a
singleton's group commit crash-loops it. So the rule checked here: for each ``String(n)`` column
of the schema, the longest value that can reach it (the bound the edge validators enforce, or the
longest id the runtime itself makes) is at most ``n`` characters. The bounds of user input are
measured from the validators themselves, so widening a validator without its column fails here.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from omoi_ray.actors.event_relay import CURSOR_NAME

import omoi_ray as omoi
from omoi_ray.core import events as event_types
from omoi_ray.core import model, storable
from omoi_ray.core.coordination import NODE_KINDS
from omoi_ray.core.gates import ARTIFACT_TYPES
from omoi_ray.core.handoff import REQUEST_PREFIX, HandoffStatus
from omoi_ray.core.health import AgentHealth
from omoi_ray.core.locks import LockMode
from omoi_ray.core.ownership import WRITERS
from omoi_ray.core.tasks import TaskStatus
from omoi_ray.core.tickets import TicketStatus
from omoi_ray.errors import (
    InvalidHandoffError,
    InvalidLockRequestError,
    InvalidTaskSpecError,
    InvalidTicketError,
)
from omoi_ray.settings import Settings
from omoi_ray.specs import handoffs as handoff_specs
from omoi_ray.specs import locks as lock_specs
from omoi_ray.specs import tasks as specs
from omoi_ray.specs import tickets as ticket_specs
from omoi_ray.store.schema import Base


def _longest(accepts, char: str = "a", limit: int = 4096) -> int:
    """The greatest n such that ``accepts(char * n)`` (accepted lengths form a prefix 1..n)."""
    assert accepts(char) and not accepts(char * limit), "the bound is not between 1 and the search limit"
    low, high = 1, limit  # accepts(low), not accepts(high)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if accepts(char * mid) else (low, mid)
    return low


def _accepts(check, *errors: type[Exception]):
    def accepts(value: str) -> bool:
        try:
            check(value)
        except errors:
            return False
        return True

    return accepts


# ---------------------------------------------------------------- what the edge lets in (characters)

PHASE = _longest(_accepts(ticket_specs.check_phase, InvalidTicketError), char="A")  # a ticket's phase
NAME = _longest(_accepts(lambda v: specs.check_name(v, "id"), ValueError))  # task id/type, agent name, ticket, phase
IDEMPOTENCY_KEY = _longest(_accepts(lambda v: omoi.TaskSpec(type="t", idempotency_key=v), InvalidTaskSpecError))
LOCK_TYPE = _longest(_accepts(lock_specs.check_type, InvalidLockRequestError))
LOCK_ID = _longest(_accepts(lock_specs.check_id, InvalidLockRequestError))  # ASCII: one character per byte
HOLDER = _longest(_accepts(lock_specs.check_holder, InvalidLockRequestError))
LOCK_REQUEST_ID = _longest(_accepts(lock_specs.check_request_id, InvalidLockRequestError))
NAMESPACE = _longest(_accepts(lambda v: Settings(namespace=v), ValueError))
OFFER_ID = _longest(_accepts(handoff_specs.check_offer_id, InvalidHandoffError))

# ---------------------------------------------------------------- what the runtime makes itself

UUID_HEX = len(uuid.uuid4().hex)  # request ids of drivers and agents, incarnations, commit epochs
EVENT_ID = len(model.new_event_id()) - 16 + len(f"{2**64 - 1:x}")  # process prefix + 64-bit counter
MESSAGE_ID = len(model.new_message_id())  # random hex digits, a fixed count
GRANT_ID = 8 + 1 + len(f"{2**64 - 1:x}")  # lock manager: token_hex(4) + "-" + counter
TASK_HOLDER = NAME + len(f"#{storable.MAX_RETRIES + 1}")  # a task's locks: "<task id>#<attempt>"
DERIVED_REQUEST_ID = max(len(lock_specs.request_id_for("x" * 10_000)), lock_specs.MAX_REQUEST_ID)
RAY_CLUSTER_ID = 56  # hex of Ray's 28-byte ClusterID
SHA256_HEX = len(hashlib.sha256().hexdigest())
LOCK_END_REASONS = ("released", "expired", "upgraded", "downgraded", "holder released", "attempt ended",
                    "agent lost")


def _longest_word(values) -> int:
    return max(len(str(getattr(v, "value", v))) for v in values)


#: (table, column) -> the most characters the runtime can write there
MAX_WRITTEN: dict[tuple[str, str], int] = {
    ("tickets", "id"): NAME,
    ("tickets", "title"): _longest(_accepts(ticket_specs.TicketSpec.make, InvalidTicketError), limit=8192),
    ("tickets", "phase"): NAME,
    ("tickets", "status"): max(len("open"), _longest_word(TicketStatus)),
    ("tasks", "id"): NAME,
    ("tasks", "ticket_id"): NAME,
    ("tasks", "phase"): NAME,
    ("tasks", "type"): NAME,
    ("tasks", "status"): _longest_word(TaskStatus),
    ("tasks", "kind"): max(map(len, NODE_KINDS)),
    ("tasks", "idempotency_key"): IDEMPOTENCY_KEY,
    ("tasks", "fingerprint"): SHA256_HEX,
    ("tasks", "agent_id"): NAME,
    ("tasks", "agent_incarnation"): UUID_HEX,
    ("tasks", "claim_request_id"): max(UUID_HEX, len(REQUEST_PREFIX) + OFFER_ID),  # or "handoff:<offer id>"
    ("tasks", "upstream"): NAME,
    ("task_dependencies", "task_id"): NAME,
    ("task_dependencies", "depends_on_id"): NAME,
    ("task_attempts", "task_id"): NAME,
    ("task_attempts", "agent_id"): NAME,
    ("task_attempts", "agent_incarnation"): UUID_HEX,
    ("task_attempts", "outcome"): _longest_word(model.AttemptOutcome),
    ("agents", "id"): NAME,
    ("agents", "incarnation"): UUID_HEX,
    ("agents", "status"): _longest_word(model.AgentStatus),
    ("agents", "type"): NAME,  # an agent type is a name (AgentSpec)
    ("agents", "phase"): NAME,
    ("agents", "health"): _longest_word(AgentHealth),
    ("events", "event_id"): EVENT_ID,
    ("events", "type"): _longest_word(event_types.CATALOGUE),
    ("events", "entity_type"): _longest_word(t.entity_type for t in event_types.CATALOGUE.values()),
    # a task id, an agent name, a lock request id, or a lock resource "type:id"
    ("events", "entity_id"): max(NAME, LOCK_REQUEST_ID, DERIVED_REQUEST_ID, LOCK_TYPE + 1 + LOCK_ID),
    ("events", "task_id"): NAME,
    ("events", "agent_id"): NAME,
    ("events", "ticket_id"): NAME,
    ("events", "request_id"): max(UUID_HEX, LOCK_REQUEST_ID, DERIVED_REQUEST_ID),
    ("relay_cursors", "name"): len(CURSOR_NAME),
    ("relay_cursors", "token"): UUID_HEX,
    ("writer_commits", "writer"): _longest_word(WRITERS),
    ("writer_commits", "epoch"): UUID_HEX,
    ("db_owner", "namespace"): NAMESPACE,
    ("db_owner", "cluster_id"): RAY_CLUSTER_ID,
    ("db_owner_epochs", "writer"): _longest_word(WRITERS),
    ("lock_resources", "resource_type"): LOCK_TYPE,
    ("lock_resources", "resource_id"): LOCK_ID,
    ("lock_grants", "id"): GRANT_ID,
    ("lock_grants", "resource_type"): LOCK_TYPE,
    ("lock_grants", "resource_id"): LOCK_ID,
    ("lock_grants", "mode"): _longest_word(LockMode),
    ("lock_grants", "holder"): max(HOLDER, TASK_HOLDER),
    ("lock_grants", "request_id"): max(LOCK_REQUEST_ID, DERIVED_REQUEST_ID, UUID_HEX),
    ("lock_grants", "end_reason"): _longest_word(LOCK_END_REASONS),
    ("lock_grants", "task_id"): NAME,
    ("lock_grants", "agent_id"): NAME,
    ("lock_requests", "id"): max(LOCK_REQUEST_ID, DERIVED_REQUEST_ID, UUID_HEX),
    ("lock_requests", "holder"): max(HOLDER, TASK_HOLDER),
    ("lock_requests", "task_id"): NAME,
    ("lock_requests", "agent_id"): NAME,
    ("handoffs", "id"): OFFER_ID,
    ("handoffs", "task_id"): NAME,
    ("handoffs", "from_agent"): NAME,
    ("handoffs", "from_incarnation"): UUID_HEX,
    ("handoffs", "status"): _longest_word(HandoffStatus),
    ("handoffs", "thread_id"): len("handoff.") + OFFER_ID,
    ("handoffs", "accepted_by"): NAME,
    ("threads", "id"): NAME,
    ("threads", "type"): NAME,
    ("threads", "status"): _longest_word(model.ThreadStatus),
    ("threads", "ticket_id"): NAME,
    ("threads", "task_id"): NAME,
    ("threads", "created_by"): NAME,
    ("thread_participants", "thread_id"): NAME,
    ("thread_participants", "agent"): NAME,
    ("messages", "id"): MESSAGE_ID,
    ("messages", "thread_id"): NAME,
    ("messages", "sender"): NAME,
    ("messages", "to_agent"): NAME,
    ("messages", "kind"): NAME,
    ("message_receipts", "message_id"): MESSAGE_ID,
    ("message_receipts", "recipient"): NAME,
    ("message_receipts", "thread_id"): NAME,
    ("tickets", "previous_phase"): PHASE,
    ("ticket_phase_history", "ticket_id"): NAME,
    ("ticket_phase_history", "from_phase"): PHASE,
    ("ticket_phase_history", "to_phase"): PHASE,
    ("ticket_phase_history", "moved_by"): NAME,
    ("ticket_artifacts", "ticket_id"): NAME,
    ("ticket_artifacts", "phase"): PHASE,
    ("ticket_artifacts", "type"): max(map(len, ARTIFACT_TYPES)),
    ("ticket_artifacts", "task_id"): NAME,
    ("ticket_artifacts", "added_by"): NAME,  # an agent name, a driver's ``by``, or "task"
    ("ticket_gate_results", "ticket_id"): NAME,
    ("ticket_gate_results", "phase"): PHASE,
    ("ticket_gate_results", "judged_by"): max(NAME, len("auto-advance")),
}


def _sized_columns() -> dict[tuple[str, str], int]:
    return {
        (table.name, column.name): column.type.length
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, sa.String) and column.type.length is not None
    }


def test_every_sized_column_is_accounted_for():
    assert set(_sized_columns()) == set(MAX_WRITTEN)


def test_the_longest_value_written_fits_its_column():
    too_long = {key: (MAX_WRITTEN[key], length) for key, length in _sized_columns().items() if MAX_WRITTEN[key] > length}
    assert too_long == {}


def test_the_bounds_measured_are_the_documented_ones():
    """The README's "Limits and bounds" table, as the validators enforce it."""
    assert (NAME, IDEMPOTENCY_KEY, HOLDER, NAMESPACE) == (128, 256, 256, 64)
    assert (LOCK_TYPE, LOCK_ID, LOCK_REQUEST_ID) == (64, 512, lock_specs.MAX_REQUEST_ID)
    # a lock id is bounded in UTF-8 bytes: multi-byte characters make it shorter, never longer
    assert _longest(_accepts(lock_specs.check_id, InvalidLockRequestError), char="\u00e9") == 256


def _row(table: sa.Table, now: datetime) -> dict[str, Any]:
    """A row whose every sized text column holds its longest value ("x" * n: the same text in a
    foreign key as in the key it points to)."""
    row: dict[str, Any] = {}
    for column in table.columns:
        kind = column.type
        if isinstance(kind, sa.String) and kind.length is not None:
            row[column.name] = "x" * max(MAX_WRITTEN[(table.name, column.name)], 1)
        elif isinstance(kind, sa.Text):
            row[column.name] = "t"
        elif isinstance(kind, sa.types.TypeDecorator):
            row[column.name] = now
        elif isinstance(kind, sa.JSON):
            row[column.name] = ["j"]
        elif isinstance(kind, sa.Boolean):
            row[column.name] = True
        elif isinstance(kind, sa.Float):
            row[column.name] = 1.5
        elif isinstance(kind, sa.Integer):
            row[column.name] = 1
        else:
            raise AssertionError(f"no sample for {table.name}.{column.name} ({kind!r})")
    return row


def test_every_store_holds_the_longest_values(db_url):
    now = datetime(2026, 11, 30, tzinfo=UTC)
    engine = sa.create_engine(db_url)
    try:
        rows = {table.name: _row(table, now) for table in Base.metadata.sorted_tables}
        with engine.begin() as conn:
            for table in Base.metadata.sorted_tables:  # parents before children
                conn.execute(table.insert().values(rows[table.name]))
        with engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                stored = conn.execute(sa.select(table)).mappings().one()
                sized = {k for k in rows[table.name] if (table.name, k) in MAX_WRITTEN}
                assert {k: stored[k] for k in sized} == {k: rows[table.name][k] for k in sized}
    finally:
        engine.dispose()


# ---------------------------------------------------------------- end to end


@pytest.mark.ray
def test_locks_and_tasks_at_their_bounds_run_without_restarting_a_singleton(runtime, uid):
    import ray

    lock_type = "t" * (LOCK_TYPE - len(uid)) + uid
    plain_id = "x" * (LOCK_ID - len(uid)) + uid  # 512 bytes, 512 characters
    wide_id = "\u00e9" * 200 + "y" * (LOCK_ID - 400 - len(uid)) + uid  # 512 bytes, fewer characters
    assert len(lock_type) == 64 and len(plain_id.encode()) == len(wide_id.encode()) == 512
    scheduler_before = runtime.describe()
    locks_before = ray.get(runtime.lock_manager.describe.remote())

    lease = runtime.lock(f"{lock_type}:{plain_id}", wait=0)
    lease.release()

    name = f"bounds-{uid}"
    agent = runtime.spawn_agent(name, capabilities=[name], capacity=2, handler="tests.handlers:behave")
    try:
        locked = omoi.TaskSpec(id=f"{uid}-locked", type="behave", requires=[name], payload={"op": "echo"},
                               locks=[(lock_type, wide_id, "exclusive")])
        longest = omoi.TaskSpec(id=(f"{uid}-" + "i" * NAME)[:NAME], type="T" * NAME, requires=[name],
                                payload={"op": "echo"}, idempotency_key="\u00fc" * IDEMPOTENCY_KEY)
        infos = runtime.run([locked, longest], timeout=60)
        assert {i: info.status for i, info in infos.items()} == {locked.id: "completed", longest.id: "completed"}
        assert infos[longest.id].result["id"] == longest.id
    finally:
        agent.stop()

    # the lock events were stored under the resources' full names
    for resource in (f"{lock_type}:{plain_id}", f"{lock_type}:{wide_id}"):
        kinds = [e.type for e in runtime.events(entity_id=resource)]
        assert kinds[:1] == ["lock.granted"] and "lock.released" in kinds
    scheduler_after = runtime.describe()
    locks_after = ray.get(runtime.lock_manager.describe.remote())
    assert (scheduler_after["pid"], scheduler_after["restarted"]) == (scheduler_before["pid"], scheduler_before["restarted"])
    assert (locks_after["pid"], locks_after["restarted"]) == (locks_before["pid"], locks_before["restarted"])


def test_upgrading_a_database_with_events_keeps_them_and_widens_entity_ids(db_url):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from omoi_ray.store import migrate

    command.downgrade(migrate.alembic_config(db_url), "0004")
    event = {"event_id": "e" * 32, "type": "task.created", "entity_type": "task", "entity_id": "a" * 128,
             "created_at": datetime(2026, 11, 30, tzinfo=UTC)}
    resource = "t" * LOCK_TYPE + ":" + "x" * LOCK_ID
    engine = sa.create_engine(db_url)
    try:
        events = Base.metadata.tables["events"]
        with engine.begin() as conn:
            conn.execute(events.insert().values(event))
        assert migrate.upgrade(db_url) == migrate.head_revision()
        with engine.begin() as conn:
            conn.execute(events.insert().values({**event, "event_id": "f" * 32, "entity_id": resource}))
        with engine.connect() as conn:
            stored = conn.execute(sa.select(events.c.event_id, events.c.entity_id).order_by(events.c.id)).all()
            assert [tuple(r) for r in stored] == [("e" * 32, "a" * 128), ("f" * 32, resource)]
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
    finally:
        engine.dispose()
