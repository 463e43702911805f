"""Ray actors of omoi-ray: thin shells that persist and communicate the core's decisions.

- ``scheduler.SchedulerActor``: the singleton that owns tasks, attempts and agents.
- ``agent.AgentActor``: one per agent; runs handlers within its capacity.
- ``group_commit.GroupCommit``: batches an actor's change sets into transactions.
"""
