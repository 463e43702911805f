"""The driver API: connecting to a runtime and everything a driver does with it.

Modules:
- ``runtime``: ``connect`` and ``Runtime`` (spawn agents, submit, wait, inspect, shut down).
- ``calls``: the one call policy for reaching the runtime's singleton actors (retries, budgets).
- ``locks``: taking, renewing and releasing locks (``LockClient``, ``Lease``).
- ``messages``: threads and messages between agents (``rt.messages``).
- ``follow``: an async iterator over committed events.
- ``address``: checking a Ray address before joining it.
- ``progress``: the live progress bar of ``Runtime.wait``.

Rules:
- Client code reaches the singleton actors only through ``calls``, and the database and Redis
  only through ``omoi_ray.store`` (migrations, the ownership check, ``follow``'s reads).
"""
