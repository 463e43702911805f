"""The pure core: every rule and decision of the runtime, as data and plain Python, without I/O.

Modules:
- ``changes``: the change-log contract durable writers share (``ChangeSet``, ``ChangeLog``).
- ``model``: plain data the core works on (priorities, retry policy, tasks, attempts, agents, events).
- ``tasks``: the task lifecycle table (``TRANSITIONS``, ``event_for``).
- ``dag``: the graph rules a submission must satisfy.
- ``ready``: the ready index, claimable in priority order by capability set.
- ``timers``: deadlines by due time.
- ``scheduler``: ``TaskGraph``, the front composing submission, agents, claims and the DAG.
- ``threads``: collaboration threads, posting rules and read receipts (a part of ``TaskGraph``).
- ``locks``: the lock table (modes, fairness, leases, fencing tokens, deadlocks).
- ``ownership``: who owns a database, decided as data.
- ``events``: the catalogue of event types.
- ``storable``: what every store can hold, and the numeric bounds users meet.

Rules:
- No module here imports ray, sqlalchemy, redis or pydantic; the only omoi-ray import from
  outside the core is ``omoi_ray.errors``.
- Nothing here reads a clock or touches the network or disk: callers pass ``now`` (seconds)
  and persist the changes the core logs.
"""
