"""Gathered requests a node already took, when it hears each through several cages. Pure.

With several cages a gathered request (``request_all``) goes through every
one of them with the same correlation id (docs/redundancy.md), so a
service registered with two cages hears it twice. It runs its handler for
the first and drops the others: :class:`SeenRequests` remembers each
``(requester, cid)`` for the request's timeout, and at most
MAX_SEEN_REQUESTS of them (the oldest forgotten first).
"""

from __future__ import annotations

from zdse.wire.limits import MAX_SEEN_REQUESTS, REQUEST_TIMEOUT

__all__ = ["SeenRequests"]


class SeenRequests:
    """``(requester, cid)`` pairs taken recently, each until its request's deadline.

    Args:
        limit: how many to remember at most.
    """

    def __init__(self, limit: int = MAX_SEEN_REQUESTS) -> None:
        self.limit = limit
        # Insertion order, oldest first: (requester, cid) -> (forget after,
        # the cage it came by first).
        self._until: dict[tuple[str, int], tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._until)

    def first(self, requester: str, cid: int, timeout: float, now: float, cage: int = 0) -> bool:
        """True the first time ``(requester, cid)`` comes; False when it came before.

        Args:
            timeout: the seconds the requester waits for it (0: not said, the
                default REQUEST_TIMEOUT is assumed); remembered that long.
            cage: the cage it came by (the answer goes back that way).
        """
        self._forget(now)
        key = (requester, cid)
        held = self._until.get(key)
        if held is not None and held[0] >= now:
            return False
        self._until[key] = (now + (timeout if timeout > 0 else REQUEST_TIMEOUT), cage)
        if len(self._until) > self.limit:
            del self._until[next(iter(self._until))]
        return True

    def note(self, requester: str, cid: int, timeout: float, now: float, cage: int) -> None:
        """Remember the cage a plain request came by (it comes once: never dropped)."""
        self._forget(now)
        key = (requester, cid)
        self._until.pop(key, None)  # a new request under an old id: the newest wins
        self._until[key] = (now + (timeout if timeout > 0 else REQUEST_TIMEOUT), cage)
        if len(self._until) > self.limit:
            del self._until[next(iter(self._until))]

    def cage_of(self, requester: str, cid: int) -> int | None:
        """The cage request ``cid`` of ``requester`` came by first, if remembered."""
        held = self._until.get((requester, cid))
        return None if held is None else held[1]

    def _forget(self, now: float) -> None:
        """Drop the oldest pairs whose time is up (those behind them go at their turn)."""
        until = self._until
        while until:
            key = next(iter(until))
            if until[key][0] >= now:
                return
            del until[key]
