"""When a node's output leaves: in order, requests at once, callbacks' sends at the turn's end;
no request on a closed bus.

A real zdse-proxy; two :class:`zdse.Bus` nodes in one event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, run
from tests.support import Processes
from zdse import Bus, BusClosed

COUNT = 500


def test_a_request_leaves_after_what_was_sent_before_it(procs: Processes, tmp_path: Path) -> None:
    """One-way messages queued before a request reach the service before the request."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()
    seen: list[Any] = []

    async def scenario() -> None:
        service = Bus("order.service", endpoints=cluster.endpoints,
                      on_message=lambda sender, dataindex, data: seen.append(data),
                      on_request=lambda sender, dataindex, args: list(seen))
        async with service, cluster.bus() as client:
            for i in range(COUNT):
                client.send("order.service", "n", i)
            assert await client.request("order.service", "seen") == list(range(COUNT))

    run(scenario())


def test_what_a_sync_callback_sends_leaves_with_its_turn(procs: Processes, tmp_path: Path) -> None:
    """A sync callback's sends are flushed at the end of the read turn that ran it, in order."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()
    echoes: list[Any] = []

    async def scenario() -> None:
        all_back = asyncio.Event()

        def on_echo(sender: str, dataindex: str, data: Any) -> None:
            echoes.append(data)
            if len(echoes) == COUNT:
                all_back.set()

        def echo(sender: str, dataindex: str, data: Any) -> None:
            service.send(sender, "echo", data)

        service = Bus("echo.service", endpoints=cluster.endpoints, on_message=echo)
        client = Bus("echo.client", endpoints=cluster.endpoints, on_message=on_echo)
        async with service, client:
            for i in range(COUNT):
                client.send("echo.service", "n", i)
            await asyncio.wait_for(all_back.wait(), 30)
            assert echoes == list(range(COUNT))
            assert service.statistics().get("frames_out", 0) < COUNT

    run(scenario())


def test_a_request_is_sent_within_its_callers_step(procs: Processes, tmp_path: Path) -> None:
    """The request's frame is out before the loop runs anything else, not at the iteration's end."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()

    async def scenario() -> None:
        service = Bus("at.once", endpoints=cluster.endpoints,
                      on_request=lambda sender, dataindex, args: args)
        async with service, cluster.bus() as client:
            before = client.statistics()["frames_out"]
            task = asyncio.create_task(client.request("at.once", "echo", 1))
            # One turn of the loop: the task's first step, up to its await.
            # A flush scheduled by that step would run only in the next one.
            await asyncio.sleep(0)
            assert client.statistics()["frames_out"] == before + 1
            assert await task == 1

    run(scenario())


def test_a_request_on_a_closed_bus_raises_bus_closed(procs: Processes, tmp_path: Path) -> None:
    """After close(), request() raises BusClosed and leaves no waiter behind."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()

    async def scenario() -> None:
        client = cluster.bus()
        async with client:
            pass
        with pytest.raises(BusClosed):
            await client.request("anyone", "x")
        assert len(client.core.requests) == 0

    run(scenario())
