"""omoi-ray: durable coordination of agent teams on Ray.

Quick use::

    import omoi_ray as omoi

    rt = omoi.connect(migrate=True)
    rt.spawn_agent("worker-1", capabilities=["scan"], capacity=4, handler="my_pkg.handlers:scan")
    ids = rt.submit([omoi.TaskSpec(id="a", type="scan", requires=["scan"], payload={"path": "."})])
    rt.wait(ids, progress=True)
    print(rt.get("a").result)
"""

from omoi_ray.core.model import Priority
from omoi_ray.core.tasks import TaskStatus
from omoi_ray.errors import (
    CycleError,
    DatabaseNotMigratedError,
    DuplicateTaskError,
    InvalidSubmissionError,
    InvalidTaskSpecError,
    OmoiError,
    PermanentError,
    TaskCancelledError,
    TaskNotFoundError,
    UnknownDependencyError,
    WaitTimeoutError,
)
from omoi_ray.handler.context import TaskContext, TaskView
from omoi_ray.settings import Settings
from omoi_ray.specs.events import EventRecord
from omoi_ray.specs.tasks import AttemptInfo, TaskInfo, TaskSpec

__all__ = [
    "AgentRef",
    "AttemptInfo",
    "CycleError",
    "DatabaseNotMigratedError",
    "DuplicateTaskError",
    "EventRecord",
    "InvalidSubmissionError",
    "InvalidTaskSpecError",
    "OmoiError",
    "PermanentError",
    "Priority",
    "Runtime",
    "Settings",
    "TaskCancelledError",
    "TaskContext",
    "TaskInfo",
    "TaskNotFoundError",
    "TaskSpec",
    "TaskStatus",
    "TaskView",
    "UnknownDependencyError",
    "WaitTimeoutError",
    "connect",
]
__version__ = "0.1.0"

_RUNTIME_NAMES = {"AgentRef", "Runtime", "connect"}


def __getattr__(name: str) -> object:
    # The runtime imports the actors, which import this package's modules: load it on first use.
    if name in _RUNTIME_NAMES:
        from omoi_ray.client import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'omoi_ray' has no attribute {name!r}")
