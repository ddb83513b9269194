"""Shared fixtures: free loopback ports, processes that are always reaped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Processes, require
from tests.vcsim import BINARY, VCenterSimulator


@pytest.fixture
def procs() -> Iterator[Processes]:
    """Start processes that are killed at the end of the test, even on failure."""
    group = Processes()
    try:
        yield group
    finally:
        group.kill_all()


@pytest.fixture
def vcsim(procs: Processes, tmp_path: Path) -> Iterator[Callable[..., VCenterSimulator]]:
    """Start govmomi vCenter simulators: ``vcsim(hosts=2, vms=4)`` returns a running one.

    Every simulator started is stopped at the end of the test, even on failure.
    """
    require("the vCenter simulator build/vcsim-zdse (make sim)", BINARY.is_file())
    started: list[VCenterSimulator] = []

    def start(**kwargs: Any) -> VCenterSimulator:
        sim = VCenterSimulator(procs, tmp_path, **kwargs)
        started.append(sim)
        sim.start()
        return sim

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()
