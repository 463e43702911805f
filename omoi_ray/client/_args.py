"""Argument checks shared by the driver API's groups (``rt.tasks``, ``rt.agents``, ``rt.events``).

Rules:
- A driver call checks its arguments once, in its one definition, before any object ref is made
  (so the blocking and the awaitable flavour refuse the same things the same way).
- The bounds are ``omoi_ray.core.storable``'s; its ``ValueError`` becomes ``InvalidArgumentError``
  naming the argument, one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omoi_ray.core import storable
from omoi_ray.errors import InvalidArgumentError


def argument(check: Callable[..., Any], value: Any, field: str, **bounds: Any) -> Any:
    """Run a ``storable`` check on one argument.

    Args:
        check: a ``storable`` check, called as ``check(value, field, **bounds)``.
        value: the argument as given.
        field: the argument's name, used in the message.
        **bounds: the check's bounds (``maximum``, ``allow_zero``, ...).

    Returns:
        The checked value (as the check normalises it, e.g. seconds as a float).

    Raises:
        InvalidArgumentError: the check refused it (one line naming ``field``).
    """
    try:
        return check(value, field, **bounds)
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None


def flag(value: Any, field: str, error: type[Exception] = InvalidArgumentError) -> bool:
    """A switch argument: ``True`` or ``False`` only.

    Raises:
        ``error`` (``InvalidArgumentError`` unless the call has its own typed error), naming ``field``.
    """
    try:
        return storable.check_flag(value, field)
    except ValueError as exc:
        raise error(str(exc)) from None


def seconds(value: Any, field: str = "timeout", *, allow_zero: bool = True) -> float:
    """A number of seconds from 0 (or above 0 when ``allow_zero`` is False) to ``MAX_WAIT_S``.

    Raises:
        InvalidArgumentError: naming ``field``.
    """
    return argument(storable.check_seconds, value, field, maximum=storable.MAX_WAIT_S, allow_zero=allow_zero)


def wait_seconds(timeout: Any) -> float | None:
    """A wait's ``timeout``: None (no limit) or seconds from 0 to ``MAX_WAIT_S``.

    Raises:
        InvalidArgumentError: naming ``timeout``.
    """
    return None if timeout is None else seconds(timeout)
