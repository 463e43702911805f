"""Names of the runtime's Ray actors, in one place (they are how a second driver finds them)."""

SCHEDULER_NAME = "omoi.scheduler"
LOCKS_NAME = "omoi.locks"
EVENTS_NAME = "omoi.events"
AGENT_PREFIX = "omoi.agent."


def agent_actor_name(agent_name: str) -> str:
    return AGENT_PREFIX + agent_name
