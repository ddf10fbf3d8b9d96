"""Logging. The library logs through the standard library's ``logging`` (loggers named ``guard.*``,
with a NullHandler): silent unless the application configures logging. The programs (CLI,
``guard serve``) call ``configure``: one JSON object per line on stderr for our events, for
uvicorn's and for every traceback."""

from __future__ import annotations

import logging
import sys

import structlog

logging.getLogger("guard").addHandler(logging.NullHandler())


def get_logger(name: str):
    """A structlog logger writing to the stdlib logger ``name``: structlog's processors if the
    application configured them, and nothing at all if nobody configured logging."""
    return structlog.wrap_logger(logging.getLogger(name))


def configure(level: str = "info", json: bool = True, stream=None) -> None:
    """Our events and every stdlib record (uvicorn, asyncio, tracebacks) to ``stream`` (stderr by
    default), rendered by one formatter: JSON lines, or a console renderer."""
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    shared = [structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
              structlog.processors.TimeStamper(fmt="iso", utc=True)]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.dict_tracebacks if json else structlog.processors.format_exc_info,
                    renderer]))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_guard", False):
            root.removeHandler(h)
    handler._guard = True  # type: ignore[attr-defined]
    handler.setLevel(getattr(logging, level.upper()))  # libraries that set their own loggers to DEBUG stay quiet
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
