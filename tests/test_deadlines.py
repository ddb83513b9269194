"""Deadlines: one loop timer for every waiting request's deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zdse.node.deadlines import COMPACT_FLOOR, Deadlines


def test_a_future_past_its_deadline_gets_timeout_error() -> None:
    """A waiting future is woken with TimeoutError once its deadline passes."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        fut: asyncio.Future[None] = loop.create_future()
        deadlines.add(loop.time() + 0.01, fut)
        with pytest.raises(TimeoutError):
            await fut

    asyncio.run(scenario())


def test_deadlines_fire_in_order_whatever_order_they_came() -> None:
    """A later-added earlier deadline re-arms the timer; each fires at its turn."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        order: list[str] = []
        late: asyncio.Future[None] = loop.create_future()
        early: asyncio.Future[None] = loop.create_future()
        late.add_done_callback(lambda _: order.append("late"))
        early.add_done_callback(lambda _: order.append("early"))
        deadlines.add(loop.time() + 0.05, late)
        deadlines.add(loop.time() + 0.01, early)
        await asyncio.gather(early, late, return_exceptions=True)
        assert order == ["early", "late"]
        assert isinstance(early.exception(), TimeoutError)
        assert isinstance(late.exception(), TimeoutError)

    asyncio.run(scenario())


def test_a_future_done_before_its_deadline_is_left_alone() -> None:
    """A future answered in time keeps its result; the next deadline still fires."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        answered: asyncio.Future[str] = loop.create_future()
        waiting: asyncio.Future[str] = loop.create_future()
        deadlines.add(loop.time() + 0.01, answered)
        deadlines.add(loop.time() + 0.02, waiting)
        answered.set_result("ok")
        with pytest.raises(TimeoutError):
            await waiting
        assert answered.result() == "ok"
        assert len(deadlines) == 0

    asyncio.run(scenario())


def test_answered_futures_do_not_pile_up() -> None:
    """Entries of answered futures are dropped: the heap stays near what still waits."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        far = loop.time() + 3600
        still: list[asyncio.Future[Any]] = []
        for i in range(20 * COMPACT_FLOOR):
            fut: asyncio.Future[Any] = loop.create_future()
            deadlines.add(far, fut)
            if i % 100:
                fut.set_result(i)
            else:
                still.append(fut)
        assert len(deadlines) <= 2 * max(COMPACT_FLOOR, 2 * len(still)) + 1
        deadlines.close()
        assert len(deadlines) == 0
        assert not any(fut.done() for fut in still)

    asyncio.run(scenario())
