"""structlog set-up shared by every zdse process."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["LineWriter", "configure", "get_logger", "sampled"]

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
        logger_factory=lambda *args: LineWriter(out),
        cache_logger_on_first_use=False,
    )


class LineWriter:
    """structlog's final logger: one rendered line per event, written and flushed.

    A line the stream refuses (closed, a broken pipe, a full disk) is dropped
    and counted: logging never takes a process down, nor breaks the socket
    reader that happened to log.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.dropped = 0

    def msg(self, message: str) -> None:
        """Write ``message`` and a newline."""
        try:
            self.stream.write(message + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # ValueError: I/O on a closed file
            self.dropped += 1

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def get_logger(**initial: object) -> structlog.stdlib.BoundLogger:
    """Return a logger bound to ``initial`` values."""
    return structlog.get_logger(**initial)  # type: ignore[no-any-return]


def sampled(count: int) -> bool:
    """Whether the ``count``-th occurrence of something is logged: the 1st, 2nd, 4th, 8th, ...

    Visible from the first, never a flood.
    """
    return count > 0 and count & (count - 1) == 0
