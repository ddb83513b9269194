"""InOrder: sync actions inline, async ones awaited one at a time, order kept."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any

from zdse.node.inorder import InOrder


class Recorder:
    """Acts on ints: odd ones are async (they wait for their gate), even ones sync."""

    def __init__(self, limit: int = 100) -> None:
        self.log: list[str] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.started: dict[int, asyncio.Event] = {}
        self.holds: list[int] = []
        self.settles = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.running = 0
        # Multiples of 100 are urgent (and even: sync).
        self.inorder: InOrder[int] = InOrder(self.act, self.spawn, self.settle,
                                             self.holds.append, limit,
                                             urgent=lambda item: item % 100 == 0)

    def act(self, item: int) -> Awaitable[None] | None:
        if item % 2 == 0:
            assert self.running == 0 or item % 100 == 0, \
                "a sync action that is not urgent ran while an async one was running"
            self.log.append(f"sync {item}")
            return None
        gate = self.gates.setdefault(item, asyncio.Event())
        return self._slow(item, gate)

    async def _slow(self, item: int, gate: asyncio.Event) -> None:
        assert self.running == 0, "two async actions overlapped"
        self.running += 1
        self.log.append(f"start {item}")
        self.started.setdefault(item, asyncio.Event()).set()
        await gate.wait()
        self.log.append(f"end {item}")
        self.running -= 1

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))

    def settle(self) -> None:
        self.settles += 1

    async def wait_started(self, item: int) -> None:
        await self.started.setdefault(item, asyncio.Event()).wait()

    def open(self, item: int) -> None:
        self.gates.setdefault(item, asyncio.Event()).set()

    async def idle(self) -> None:
        """Until every spawned task is done."""
        while not all(t.done() for t in self.tasks):
            await asyncio.gather(*self.tasks)


def test_sync_actions_run_inline_in_order() -> None:
    """Items whose actions are sync are acted on within feed(), in order, then settled once."""

    async def scenario() -> None:
        r = Recorder()
        r.inorder.feed([2, 4, 6])
        assert r.log == ["sync 2", "sync 4", "sync 6"]
        assert r.settles == 1
        assert not r.tasks

    asyncio.run(scenario())


def test_an_async_action_holds_back_everything_after_it() -> None:
    """Items after an async action, from the same feed or later ones, wait until it ends."""

    async def scenario() -> None:
        r = Recorder()
        r.inorder.feed([2, 3, 4])
        r.inorder.feed([6, 5, 8])
        assert r.log == ["sync 2"]
        await r.wait_started(3)
        assert r.log == ["sync 2", "start 3"]
        assert r.inorder.waiting == 4
        r.open(5)  # opening a later gate first changes nothing: 3 still runs
        r.open(3)
        await r.idle()
        assert r.log == ["sync 2", "start 3", "end 3", "sync 4", "sync 6",
                         "start 5", "end 5", "sync 8"]
        assert r.inorder.waiting == 0
        r.inorder.feed([10])  # caught up: inline again
        assert r.log[-1] == "sync 10"

    asyncio.run(scenario())


def test_too_many_waiting_items_hold_the_source_until_caught_up() -> None:
    """Past the limit, hold(number waiting) at each feed; hold(0) once caught up."""

    async def scenario() -> None:
        r = Recorder(limit=3)
        r.inorder.feed([1])
        r.inorder.feed([2, 4])
        assert r.holds == []
        r.inorder.feed([6, 8])
        r.inorder.feed([10])
        assert r.holds == [4, 5]
        r.open(1)
        await r.idle()
        assert r.holds == [4, 5, 0]
        assert r.log[-1] == "sync 10"
        assert r.inorder.waiting == 0

    asyncio.run(scenario())


def test_one_feed_past_the_limit_holds_at_once() -> None:
    """The items behind an async action in the very feed that started it count too."""

    async def scenario() -> None:
        r = Recorder(limit=2)
        r.inorder.feed([1, 2, 4, 6])
        assert r.holds == [3]
        r.open(1)
        await r.idle()
        assert r.holds == [3, 0]

    asyncio.run(scenario())


def test_urgent_items_never_wait_behind_an_async_action() -> None:
    """An urgent item is acted on at once while an async action runs; the rest wait."""

    async def scenario() -> None:
        r = Recorder()
        r.inorder.feed([1, 2, 100, 4])
        assert r.log == ["sync 100"]
        await r.wait_started(1)
        r.inorder.feed([200, 6])
        assert r.log == ["sync 100", "start 1", "sync 200"]
        r.open(1)
        await r.idle()
        assert r.log == ["sync 100", "start 1", "sync 200", "end 1", "sync 2", "sync 4",
                         "sync 6"]

    asyncio.run(scenario())
