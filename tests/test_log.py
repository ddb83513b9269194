"""zdse.log: the lines every zdse process logs, and streams that refuse them."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from zdse.log import LineWriter, configure, get_logger


@pytest.fixture
def restored() -> Iterator[None]:
    """structlog's configuration as it was before the test."""
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)


def test_a_line_the_stream_refuses_is_dropped_and_counted() -> None:
    """A closed stream (or a broken pipe) costs the line, never an exception."""
    stream = io.StringIO()
    writer = LineWriter(stream)
    writer.info("first")
    assert stream.getvalue() == "first\n"
    stream.close()
    writer.error("second")
    writer.warning("third")
    assert writer.dropped == 2


def test_configured_loggers_write_json_lines_and_survive_a_closed_stream(restored: None) -> None:
    """configure(fmt="json"): one JSON object per event; after the stream closes, logging
    goes on without raising (a Bus logs from inside its socket readers)."""
    stream = io.StringIO()
    configure("info", stream=stream, fmt="json")
    log = get_logger(service="t")
    log.debug("not.shown")
    log.info("one.event", n=1)
    line = json.loads(stream.getvalue())
    assert (line["event"], line["n"], line["service"], line["level"]) == (
        "one.event", 1, "t", "info")
    stream.close()
    log.error("two.event")
