"""Logging set-up for the programs (CLI, server). The library itself never configures logging."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", json: bool = True, stream=None) -> None:
    """structlog to ``stream`` (stderr by default): JSON lines, or a console renderer."""
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
