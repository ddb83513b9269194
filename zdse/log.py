"""structlog set-up shared by every zdse process."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import structlog

__all__ = ["LineWriter", "configure", "follow_lines", "get_logger", "sampled"]

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


def follow_lines(
    stream: Iterable[bytes],
    take: Callable[[str, dict[str, Any] | None], None],
    done: Callable[[], None],
    name: str = "lines",
) -> threading.Thread:
    """Read another process's log lines on a daemon thread, as they come.

    Args:
        stream: its stderr (or stdout) pipe.
        take: called with each line (trailing whitespace cut) and its JSON
            object, or None when the line is not one (a print, a traceback).
        done: called once at the end of the stream, or when it is closed under us.
        name: the thread's name.

    Returns:
        the started thread.
    """
    def run() -> None:
        try:
            for raw in stream:
                text = raw.decode(errors="replace").rstrip()
                try:
                    fields = json.loads(text)
                except ValueError:
                    fields = None
                take(text, fields if isinstance(fields, dict) else None)
        except (OSError, ValueError):
            pass  # closed under us at clean-up
        finally:
            done()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
