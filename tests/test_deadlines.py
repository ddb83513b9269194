"""Deadlines: one loop timer for every waiting request's deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zdse.node.deadlines import COMPACT_FLOOR, Deadlines


def test_a_request_past_its_deadline_gets_timeout_error() -> None:
    """A waiting request's future is woken with TimeoutError once its deadline passes."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        waiting: dict[int, asyncio.Future[Any]] = {1: loop.create_future()}
        deadlines = Deadlines(loop, waiting)
        deadlines.add(loop.time() + 0.01, 1)
        with pytest.raises(TimeoutError):
            await waiting[1]

    asyncio.run(scenario())


def test_deadlines_fire_in_order_whatever_order_they_came() -> None:
    """A later-added earlier deadline re-arms the timer; each fires at its turn."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        late: asyncio.Future[None] = loop.create_future()
        early: asyncio.Future[None] = loop.create_future()
        late.add_done_callback(lambda _: order.append("late"))
        early.add_done_callback(lambda _: order.append("early"))
        deadlines = Deadlines(loop, {1: late, 2: early})
        deadlines.add(loop.time() + 0.05, 1)
        deadlines.add(loop.time() + 0.01, 2)
        await asyncio.gather(early, late, return_exceptions=True)
        assert order == ["early", "late"]
        assert isinstance(early.exception(), TimeoutError)
        assert isinstance(late.exception(), TimeoutError)

    asyncio.run(scenario())


def test_a_request_answered_before_its_deadline_is_left_alone() -> None:
    """A request answered in time keeps its result; the next deadline still fires."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[str] = loop.create_future()
        still: asyncio.Future[str] = loop.create_future()
        waiting: dict[int, asyncio.Future[Any]] = {1: answered, 2: still}
        deadlines = Deadlines(loop, waiting)
        deadlines.add(loop.time() + 0.01, 1)
        deadlines.add(loop.time() + 0.02, 2)
        answered.set_result("ok")
        del waiting[1]
        with pytest.raises(TimeoutError):
            await still
        assert answered.result() == "ok"
        assert len(deadlines) == 0

    asyncio.run(scenario())


def test_answered_requests_do_not_pile_up() -> None:
    """Entries of requests no longer waiting are dropped: the heap stays near what waits."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        waiting: dict[int, asyncio.Future[Any]] = {}
        deadlines = Deadlines(loop, waiting)
        far = loop.time() + 3600
        for cid in range(20 * COMPACT_FLOOR):
            waiting[cid] = loop.create_future()
            deadlines.add(far, cid)
            if cid % 100:
                del waiting[cid]
        assert len(deadlines) <= 2 * max(COMPACT_FLOOR, 2 * len(waiting)) + 1
        deadlines.close()
        assert len(deadlines) == 0
        assert not any(fut.done() for fut in waiting.values())

    asyncio.run(scenario())
