"""Requests' deadlines under one loop timer, instead of a timer per request.

Each request used to arm its own ``loop.call_later`` and cancel it when the
reply came: a TimerHandle built, pushed on the loop's heap and left there
cancelled, per request (benchmarks/README.md, issue 15). :class:`Deadlines`
keeps ``(when, seq, future)`` in a heap of its own and one loop timer armed at
the earliest ``when``: a request whose deadline is not the earliest (the
usual case: requests made one after the other with the same timeout) arms
nothing, and a request that completes is not touched at all. When the timer
fires, every future past its deadline gets :class:`TimeoutError`.

Entries whose future is done are left in the heap (lazy deletion) and
dropped when they reach its top; the heap is rebuilt from the futures still
waiting whenever it grows past twice what its last rebuild left (and past
:data:`COMPACT_FLOOR`), so its memory stays proportional to the requests in
flight, not to the request rate times the timeout, at an amortised O(1)
per request.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any

__all__ = ["COMPACT_FLOOR", "Deadlines"]

#: Entries the heap may hold before it is compacted at all: below this a
#: rebuild costs more than the memory it frees.
COMPACT_FLOOR = 1024


class Deadlines:
    """Wake futures with :class:`TimeoutError` at their deadlines, on the loop's clock.

    Args:
        loop: the running event loop; deadlines are in its ``time()``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, asyncio.Future[Any]]] = []
        self._seq = itertools.count()
        #: Entries the heap may hold before the next rebuild.
        self._limit = COMPACT_FLOOR
        self._timer: asyncio.TimerHandle | None = None
        self._armed = float("inf")

    def __len__(self) -> int:
        """Entries held, done ones not yet dropped included."""
        return len(self._heap)

    def add(self, when: float, fut: asyncio.Future[Any]) -> None:
        """Set ``TimeoutError`` on ``fut`` at loop time ``when``, unless it is done by then."""
        heap = self._heap
        heapq.heappush(heap, (when, next(self._seq), fut))
        if len(heap) > self._limit:
            self._compact()
        if when < self._armed:
            self._arm(when)

    def close(self) -> None:
        """Forget every deadline and disarm the timer (the futures are the owner's to end)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = float("inf")
        self._heap.clear()

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed = float("inf")
        heap = self._heap
        now = self._loop.time()
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_exception(TimeoutError())
        if heap:
            self._arm(heap[0][0])

    def _compact(self) -> None:
        """Keep only the futures still waiting."""
        waiting = [entry for entry in self._heap if not entry[2].done()]
        heapq.heapify(waiting)
        self._heap = waiting
        self._limit = max(COMPACT_FLOOR, 2 * len(waiting))
