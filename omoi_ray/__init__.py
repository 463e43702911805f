"""omoi-ray: durable coordination of agent teams on Ray.

Quick use::

    import omoi_ray as omoi

    rt = omoi.connect(migrate=True)
    rt.spawn_agent("worker-1", capabilities=["scan"], capacity=4, handler="my_pkg.handlers:scan")
    ids = rt.submit([omoi.TaskSpec(id="a", type="scan", requires=["scan"], payload={"path": "."})])
    rt.wait(ids, progress=True)
    print(rt.get("a").result)

Where the packages live. Rules:
- ``omoi_ray`` is the only top-level package omoi-ray installs. The repository's top-level
  ``actors/``, ``migrations/`` and ``patterns/`` folders are the packages ``omoi_ray.actors``,
  ``omoi_ray.migrations`` and ``omoi_ray.patterns`` (data only): a wheel puts them inside
  ``omoi_ray/`` (see setup.py), so a user's own ``actors/`` or ``migrations/`` never collides.
- Run from a source tree (an editable install, ``python`` in a checkout, ``ray job submit
  --working-dir .`` whose working directory comes first on the import path), the same names
  resolve to the sibling folders through the finder in ``omoi_ray/_layout.py``. It is installed only when
  this ``omoi_ray/`` has no ``actors/`` of its own and its parent is an omoi-ray checkout
  (``pyproject.toml`` naming ``omoi-ray``); it resolves exactly those three names, nothing else.
"""

from omoi_ray import _layout
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
from omoi_ray.handler.context import Split, TaskContext, TaskView
from omoi_ray.settings import Settings
from omoi_ray.specs.coordination import LoopSpec, SplitSpec, SyncSpec
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
    "LoopSpec",
    "OmoiError",
    "PermanentError",
    "Priority",
    "Runtime",
    "Settings",
    "Split",
    "SplitSpec",
    "SyncSpec",
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

_layout.install_source_tree_finder()


def __getattr__(name: str) -> object:
    # The runtime imports the actors, which import this package's modules: load it on first use.
    if name in _RUNTIME_NAMES:
        from omoi_ray.client import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'omoi_ray' has no attribute {name!r}")

