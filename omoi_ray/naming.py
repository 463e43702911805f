"""Names of the runtime's Ray actors, in one place (they are how a second driver finds them).

Rules:
- Every named actor of a runtime is named here and nowhere else; names are looked up within the
  runtime's Ray namespace, so two runtimes use the same names without clashing.
- An agent's actor name is ``AGENT_PREFIX`` plus the agent's own name.
"""

SCHEDULER_NAME = "omoi.scheduler"
LOCKS_NAME = "omoi.locks"
EVENTS_NAME = "omoi.events"
AGENT_PREFIX = "omoi.agent."


def agent_actor_name(agent_name: str) -> str:
    """Return the Ray actor name of the agent called ``agent_name`` (``"omoi.agent.<name>"``)."""
    return AGENT_PREFIX + agent_name
