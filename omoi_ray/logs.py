"""Logging for omoi-ray's actors: INFO and up from omoi-ray's own loggers, nothing from others.

Rules:
- Only the ``omoi_ray`` logger is configured; the root logger and other libraries' are left alone.
- Setting up twice in one process adds no second handler.
"""

from __future__ import annotations

import logging


def setup_actor_logging() -> None:
    """Send ``omoi_ray`` log records of level INFO and up to stderr (time, logger, level, message); idempotent."""
    logger = logging.getLogger("omoi_ray")
    if not any(getattr(h, "_omoi", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler._omoi = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
