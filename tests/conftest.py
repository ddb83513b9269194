"""Shared fixtures: free loopback ports, processes that are always reaped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Processes


@pytest.fixture
def procs() -> Iterator[Processes]:
    """Start processes that are killed at the end of the test, even on failure."""
    group = Processes()
    try:
        yield group
    finally:
        group.kill_all()
