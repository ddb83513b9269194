"""Requests' deadlines under one loop timer, instead of a timer per request.

Each request used to arm its own ``loop.call_later`` and cancel it when the
reply came: a TimerHandle built, pushed on the loop's heap and left there
cancelled, per request (benchmarks/README.md, issue 15). :class:`Deadlines`
keeps ``(when, cid)`` in a heap of its own and one loop timer armed at the
earliest ``when``: a request whose deadline is not the earliest (the usual
case: requests made one after the other with the same timeout) arms
nothing, and a request that completes is not touched at all. When the timer
fires, every request past its deadline that still waits (its future in the
``waiting`` map it was built with, not done) gets :class:`TimeoutError`.

Entries of requests that no longer wait are left in the heap (lazy
deletion) and dropped when they reach its top; the heap is rebuilt from the
requests still waiting whenever it grows past twice what its last rebuild
left (and past :data:`COMPACT_FLOOR`), so it holds a few entries per request
in flight, not the request rate times the timeout, at an amortised O(1) per
request. An entry is two numbers: it keeps no future, so no reply's value
lives on in it.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Mapping
from typing import Any

__all__ = ["COMPACT_FLOOR", "Deadlines"]

#: Entries the heap may hold before it is compacted at all: below this a
#: rebuild costs more than the memory it frees.
COMPACT_FLOOR = 1024


class Deadlines:
    """Wake waiting requests with :class:`TimeoutError` at their deadlines, on the loop's clock.

    Args:
        loop: the running event loop; deadlines are in its ``time()``.
        waiting: each waiting request's future by its id (the owner removes
            a request once it no longer waits).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 waiting: Mapping[int, asyncio.Future[Any]]) -> None:
        self._loop = loop
        self._waiting = waiting
        self._heap: list[tuple[float, int]] = []
        #: Entries the heap may hold before the next rebuild.
        self._limit = COMPACT_FLOOR
        self._timer: asyncio.TimerHandle | None = None
        self._armed = float("inf")

    def __len__(self) -> int:
        """Entries held, those of requests no longer waiting not yet dropped included."""
        return len(self._heap)

    def add(self, when: float, cid: int) -> None:
        """Set ``TimeoutError`` on request ``cid``'s future at loop time ``when``, if it
        still waits then."""
        heap = self._heap
        heapq.heappush(heap, (when, cid))
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
        heap, waiting = self._heap, self._waiting
        now = self._loop.time()
        while heap and (heap[0][0] <= now or heap[0][1] not in waiting):
            _, cid = heapq.heappop(heap)
            fut = waiting.get(cid)
            if fut is not None and not fut.done():
                fut.set_exception(TimeoutError())
        if heap:
            self._arm(heap[0][0])

    def _compact(self) -> None:
        """Keep only the entries of requests still waiting."""
        waiting = self._waiting
        kept = [entry for entry in self._heap if entry[1] in waiting]
        heapq.heapify(kept)
        self._heap = kept
        self._limit = max(COMPACT_FLOOR, 2 * len(kept))
