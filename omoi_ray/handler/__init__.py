"""What runs inside an agent: the handler's view of its task and attempt, and fencing guards.

Modules:
- ``context``: ``TaskView`` and ``TaskContext`` (the task and its attempt) and handler lookup.
- ``fencing``: guards that make a resource refuse writes made with a stale lock token.

Rules:
- This is the API a user's handler code sees; it runs in the agent's process, never in the driver.
"""
