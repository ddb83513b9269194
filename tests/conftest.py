"""Shared fixtures: free loopback ports, processes that are always reaped."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster
from tests.rabbitmq import RabbitMQ, find_scripts
from tests.support import Processes, require
from tests.vcsim import BINARY, VCenterSimulator


@pytest.fixture
def procs() -> Iterator[Processes]:
    """Start processes that are killed at the end of the test, even on failure."""
    with Processes() as group:
        yield group


@pytest.fixture
def cluster(procs: Processes, tmp_path: Path, request: pytest.FixtureRequest) -> Cluster:
    """A running cage on free loopback ports (a test module may define its own).

    Its heartbeat is the suite's fast one (0.2 s, so expiry tests end quickly),
    or the one a ``heartbeat`` mark gives (``pytest.mark.heartbeat(1.0)``, the
    default of a real cage) on the test or its module: on a loaded machine a
    0.2 s heartbeat can expire a client that is busy (parsing a big table, or
    starved of the CPU), whose re-registration then brings a snapshot where a
    test looks for deltas.
    """
    mark = request.node.get_closest_marker("heartbeat")
    c = Cluster(procs, tmp_path, *(mark.args if mark is not None else ()))
    c.start_cage()
    return c


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


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQ]:
    """A real RabbitMQ broker on free loopback ports, shared by the whole session.

    ``rabbitmq.url(vhost)`` gives an AMQP URL, ``rabbitmq.add_vhost(name)`` an
    isolated virtual host. A test that calls ``stop()`` or ``kill()`` must
    ``start()`` it again (same node, port and data) before it ends. The broker
    and its epmd are always killed at the end of the session.
    """
    scripts = find_scripts()
    require("rabbitmq-server (Debian package rabbitmq-server)", scripts is not None)
    require("epmd (Debian package erlang-base)", shutil.which("epmd") is not None)
    assert scripts is not None
    with RabbitMQ(scripts) as broker:
        broker.start()
        yield broker
