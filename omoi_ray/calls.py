"""Calling an actor from blocking code: wait out its restarts, and surface our typed errors.

Rules:
- Errors raised inside actors reach the caller as the original ``OmoiError``, not wrapped in
  Ray's exception types.
- A call to an actor that is restarting is repeated (every call made this way is idempotent)
  until ``retry_for`` seconds have passed, then ``RuntimeUnavailableError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray

from omoi_ray.errors import OmoiError, RuntimeUnavailableError


def unwrap(exc: BaseException) -> BaseException:
    """The ``OmoiError`` behind a Ray exception, if there is one."""
    seen = 0
    current: Any = exc
    while current is not None and seen < 5:
        if isinstance(current, OmoiError):
            return current
        current = getattr(current, "cause", None) or getattr(current, "__cause__", None)
        seen += 1
    return exc


def call(ref_factory: Callable[[], Any], *, retry_for: float = 60.0, timeout: float | None = None) -> Any:
    """Run ``ray.get(ref_factory())``, retrying while the actor is unavailable (restarting)."""
    deadline = time.monotonic() + retry_for
    delay = 0.05
    while True:
        try:
            return ray.get(ref_factory(), timeout=timeout)
        except ray.exceptions.RayTaskError as exc:
            inner = unwrap(exc)
            if inner is not exc:
                raise inner from None
            raise
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise RuntimeUnavailableError(
                    f"an omoi-ray actor (scheduler or lock manager) did not come back within {retry_for:g}s"
                ) from None
        except ray.exceptions.ActorDiedError as exc:
            inner = unwrap(exc)
            if inner is not exc:
                raise inner from None
            raise RuntimeUnavailableError(
                "an omoi-ray actor is dead (killed without restart?); connect() again to recreate it"
            ) from exc
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
