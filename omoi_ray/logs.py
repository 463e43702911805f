"""Logging for omoi-ray's actors: INFO and up from omoi-ray's own loggers, nothing from others."""

from __future__ import annotations

import logging


def setup_actor_logging() -> None:
    logger = logging.getLogger("omoi_ray")
    if not any(getattr(h, "_omoi", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler._omoi = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
