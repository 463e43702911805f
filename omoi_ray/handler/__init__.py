"""What runs inside an agent: the handler's view of its task and attempt, and fencing guards.

Modules:
- ``context``: ``TaskView`` and ``TaskContext`` (the task and its attempt) and handler lookup.
- ``fencing``: guards that make a resource refuse writes made with a stale lock token.
- ``inbox``: the agent's live inbox of committed messages (``ctx.inbox``).

Rules:
- This is the API a user's handler code sees, in the agent's process (the fencing guards also
  serve a driver holding a lease).
"""
