"""A polling service polls only between start() and stop(), and again after a new start()."""

from __future__ import annotations

import asyncio

from tests.harness import run
from zdse.node.service import PollingService


class Counting(PollingService):
    """Counts its polls; each poll sets an event a test can wait on."""

    poll_interval = 0.01

    def __init__(self) -> None:
        super().__init__("counting", {})
        self.polls = 0
        self.polled = asyncio.Event()

    async def poll(self) -> None:
        self.polls += 1
        self.polled.set()


def poll_tasks() -> list[asyncio.Task[object]]:
    """The tasks that could call poll(): the service's poll loop."""
    return [t for t in asyncio.all_tasks() if t.get_name() == "poll counting" and not t.done()]


def test_polls_only_between_start_and_stop() -> None:
    """No poll loop exists before start() or after stop(); start() again polls again."""
    async def scenario() -> None:
        service = Counting()
        assert poll_tasks() == []
        await asyncio.sleep(0)  # a turn of the loop: nothing polls unstarted
        assert service.polls == 0

        await service.start()
        await service.polled.wait()  # the first poll comes at once
        await service.stop()
        assert poll_tasks() == []
        polls = service.polls
        service.poll_now()  # nothing is left to wake
        await asyncio.sleep(0)
        assert service.polls == polls
        assert not service.running

        service.polled.clear()
        await service.start()
        await service.polled.wait()
        assert service.polls > polls
        await service.stop()
        assert poll_tasks() == []

    run(scenario(), timeout=10)


def test_modules_declare_default_addresses_used_without_address_flags() -> None:
    """The amqp bridge listens on NAME.# unless told otherwise; file has no default."""
    from zdse_nodes.amqp import AmqpBridge
    from zdse_nodes.file import FileService

    assert AmqpBridge.addresses_for("openstack1") == ["openstack1.#"]
    assert FileService.addresses_for("files.a") == []
