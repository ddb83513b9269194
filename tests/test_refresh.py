"""PollingService.refresh: which poll answers a refresh, and what it answers (no bus, no sleep)."""

from __future__ import annotations

import asyncio

import pytest

from zdse.node.bus import NotPolling
from zdse.node.service import PollingService, Service


class Gated(PollingService):
    """Each poll waits for the test to open its gate, and counts itself."""

    def __init__(self) -> None:
        super().__init__("gated", {"poll_interval": "3600"})
        self.polls = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.fail = False

    async def poll(self) -> None:
        self.polls += 1
        self.started.set()
        await self.gate.wait()
        self.gate.clear()
        if self.fail:
            raise RuntimeError("the API is down")


def test_a_refresh_asked_during_a_poll_is_answered_by_the_next_poll() -> None:
    """The poll under way may have fetched before the refresh was asked: another poll
    starts at once, and its end answers the refresh."""

    async def scenario() -> None:
        service = Gated()
        await service.start()
        await service.started.wait()
        service.started.clear()
        asked = asyncio.ensure_future(service.refresh())
        await asyncio.sleep(0)  # let the refresh register itself
        service.gate.set()  # the first poll ends: it does not answer the refresh
        await service.started.wait()
        assert not asked.done()
        assert service.polls == 2
        service.gate.set()
        assert await asked == {"published": {}, "seqs": {}}
        await service.stop()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_refresh_gets_the_poll_error_and_a_stop_ends_waiting_refreshes() -> None:
    """A failed poll raises its error to the refreshes it served; stopping answers those
    still waiting with NotPolling; a stopped service refuses a refresh."""

    async def scenario() -> None:
        service = Gated()
        await service.start()
        await service.started.wait()
        service.started.clear()
        service.fail = True
        service.gate.set()  # the first poll fails (and is retried after a second)
        failing = asyncio.ensure_future(service.refresh())
        await service.started.wait()
        service.started.clear()
        service.gate.set()
        with pytest.raises(RuntimeError, match="down"):
            await failing
        service.fail = False
        waiting = asyncio.ensure_future(service.refresh())
        await service.started.wait()
        await service.stop()
        with pytest.raises(NotPolling, match="stopped"):
            await waiting
        with pytest.raises(NotPolling, match="not running"):
            await service.refresh()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_plain_service_does_not_poll() -> None:
    """Service.refresh raises NotPolling, naming the service."""
    with pytest.raises(NotPolling, match="plain does not poll"):
        asyncio.run(Service("plain", {}).refresh())
