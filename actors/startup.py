"""What every singleton actor does when it starts, and when it finds itself replaced.

Rules:
- A constructor's typed error must reach the driver as that error: Ray keeps only the text of
  an exception raised in a constructor (the caller sees "actor died"). ``holds_start_error``
  keeps the ``OmoiError`` instead, and every public method raises it; ``connect`` then ends the
  actor and raises the error itself.
- A singleton claims the database (``omoi_ray.store.ownership``) before it loads anything, so
  what it loads includes every commit made before its claim and none made after by a writer it
  replaced.
- A writer whose owner epoch was replaced (``OwnershipLostError``) exits at once, writing
  nothing: Ray restarts it if it is still the actor Ray knows (its restart claims again, as the
  same owner), and a zombie process simply ends.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from typing import Any, TypeVar

from omoi_ray.errors import OmoiError

log = logging.getLogger("omoi_ray.startup")

EXIT_REPLACED = 71  # the process exit status of a writer that found itself replaced

C = TypeVar("C", bound=type)


def holds_start_error(cls: C) -> C:
    """Class decorator: an ``OmoiError`` raised by ``__init__`` is kept as ``start_error`` and
    raised by every public method (the actor stays up, answering with it, until it is ended)."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        self.start_error = None
        try:
            init(self, *args, **kwargs)
        except OmoiError as exc:
            log.error("%s cannot start: %s", cls.__name__, exc)
            self.start_error = exc

    cls.__init__ = __init__  # type: ignore[misc]
    for name, method in list(vars(cls).items()):
        if name.startswith("_") or not inspect.isfunction(method):
            continue
        setattr(cls, name, _guarded(method))
    return cls


def _guarded(method: Any) -> Any:
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def guarded_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            if self.start_error is not None:
                raise self.start_error
            return await method(self, *args, **kwargs)

        return guarded_async

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.start_error is not None:
            raise self.start_error
        return method(self, *args, **kwargs)

    return guarded


def exit_replaced(exc: BaseException) -> None:
    """End this actor's process: its owner epoch was replaced, so nothing it holds may be
    committed. Outside an actor (an actor class used in-process, as tests do) it only logs, and
    the caller stops instead."""
    log.critical("%s; exiting without writing", exc)
    if not _in_actor():
        return
    logging.shutdown()
    os._exit(EXIT_REPLACED)


def _in_actor() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
