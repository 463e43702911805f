"""Ray actors of omoi-ray: thin shells that persist and communicate the core's decisions.

- ``durable``: the shell every durable singleton shares (start-up and ownership claim, group
  commit, deadline loop, ``describe``, metrics hook, start errors, exit when replaced).
- ``scheduler.SchedulerActor``: the singleton that owns tasks, attempts and agents.
- ``lock_manager.LockManagerActor``: the singleton that owns lock grants and waiters.
- ``event_relay.EventRelayActor``: mirrors committed events to Redis and prunes old ones.
- ``agent.AgentActor``: one per agent; runs handlers within its capacity.
- ``group_commit.GroupCommit``: batches an actor's change sets into transactions.
"""
