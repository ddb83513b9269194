"""structlog set-up shared by every zdse process."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure", "get_logger"]

LEVELS = ("debug", "info", "warning", "error")
#: ``auto``: JSON lines when the stream is not a terminal, readable lines when it is.
FORMATS = ("auto", "json", "console")


def configure(level: str = "info", stream: object = None, fmt: str = "auto") -> None:
    """Log JSON lines when stderr is not a terminal, readable lines when it is.

    Args:
        level: the least level logged, one of :data:`LEVELS`.
        stream: where to write (default: stderr).
        fmt: one of :data:`FORMATS`.
    """
    out = stream if stream is not None else sys.stderr
    renderer: structlog.types.Processor
    on_terminal = hasattr(out, "isatty") and out.isatty()
    if fmt == "console" or (fmt == "auto" and on_terminal):
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger(**initial: object) -> structlog.stdlib.BoundLogger:
    """Return a logger bound to ``initial`` values."""
    return structlog.get_logger(**initial)  # type: ignore[no-any-return]
