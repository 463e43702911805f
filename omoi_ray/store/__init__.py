"""The store: all SQL of omoi-ray (SQLite and PostgreSQL through SQLAlchemy) and the Redis mirror.

Modules:
- ``schema``: the tables as SQLAlchemy models.
- ``migrate``: Alembic upgrades and the head-revision check.
- ``store``: load the scheduler's state, write change sets, answer reads (``Store``).
- ``writes``: the write path (a change set becomes one transaction).
- ``events``: position-ordered reads, relay cursors and pruning of the events table (``EventLog``).
- ``stream``: the Redis stream and channels events are mirrored to.
- ``ownership``: database ownership and the per-commit fence, in SQL.
- ``memory``: an in-memory store with ``Store``'s contract (a test double).

Rules:
- The SQL of omoi-ray's own tables and the Redis key layout live here; other packages call these
  modules instead of writing their own queries or key names.
- The store decides nothing the core decides: it stores the core's decisions and reads them back.
"""
