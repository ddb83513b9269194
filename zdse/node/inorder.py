"""Acting on events in order when some of the actions are async.

A node's callbacks may be plain functions or coroutines. The plain ones
run inline, in the read that brought their event: no task, no loop
iteration. An async one is awaited by a task, and every event that comes
while it runs waits behind it, so callbacks see events in the order they
came and never overlap. Past a limit of waiting events the owner is told
how many wait (to stop reading: ZeroMQ's queues hold the rest), and told
again (zero) once the queue is empty. *Urgent* events (a reply to a request, say) never
wait: a callback that awaits a request must get its reply.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Generic, TypeVar

__all__ = ["InOrder"]

T = TypeVar("T")


class InOrder(Generic[T]):
    """Run ``act`` on each item, in order; an awaitable result holds back the rest.

    Args:
        act: acts on one item; returns an awaitable if there is more to wait
            for (which must not raise: log failures inside it), else None.
        spawn: starts a coroutine as an owned task.
        settle: called after each run of items acted on (e.g. to send what
            they queued).
        hold: called with the number of items waiting whenever more than
            ``limit`` do, and with 0 once none do.
        limit: items waiting before ``hold`` is called.
        urgent: items it says True for are acted on at once, even while an
            async action runs (their actions must be sync).
    """

    def __init__(
        self,
        act: Callable[[T], Awaitable[None] | None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        settle: Callable[[], None],
        hold: Callable[[int], None],
        limit: int,
        urgent: Callable[[T], bool] = lambda item: False,
    ) -> None:
        self._act = act
        self._spawn = spawn
        self._settle = settle
        self._hold = hold
        self._limit = limit
        self._urgent = urgent
        self._waiting: deque[T] = deque()
        self._busy = False  # an awaitable is being awaited
        self._held = False

    @property
    def waiting(self) -> int:
        """Items waiting behind an async action."""
        return len(self._waiting)

    def feed(self, items: Iterable[T]) -> None:
        """Act on ``items`` now, or queue them behind a running async action."""
        if self._busy:
            self._queue(items)
            return
        iterator = iter(items)
        for item in iterator:
            pending = self._act(item)
            if pending is not None:
                self._busy = True
                self._queue(iterator)
                self._spawn(self._catch_up(pending))
                break
        self._settle()

    def _queue(self, items: Iterable[T]) -> None:
        urgent, waiting = self._urgent, self._waiting
        for item in items:
            if urgent(item):
                self._act(item)
            else:
                waiting.append(item)
        if len(waiting) > self._limit:
            self._held = True
            self._hold(len(waiting))

    async def _catch_up(self, pending: Awaitable[None] | None) -> None:
        waiting, act = self._waiting, self._act
        try:
            while pending is not None:
                await pending
                pending = None
                while waiting and pending is None:
                    pending = act(waiting.popleft())
                self._settle()
        finally:
            self._busy = False
            if self._held:
                self._held = False
                self._hold(0)
