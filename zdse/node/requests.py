"""Requests waiting for replies, by correlation id. Pure: the shell owns the timers.

A plain request completes with its first reply. A gathering request learns
from the cage how many services it reached (a Fanout) and completes when all
of them answered; replies may come before the Fanout, so both orders work.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any

from zdse.wire.codec import Reply

__all__ = ["Failure", "Gathered", "Outcome", "PendingRequests"]


@dataclass(slots=True)
class _Pending:
    key: str
    gather: bool
    expected: int | None = None
    replies: dict[str, Reply] = field(default_factory=dict)


class Failure(enum.StrEnum):
    """Why a request ended without completing (:attr:`Outcome.error`); equal to its string."""

    #: Nothing listens on the key: the cage said so at once.
    NOROUTE = "noroute"
    #: The deadline passed first (some replies of a gathering request may have come).
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a request ended: its replies by sender, or why it got none.

    ``error`` is None (complete) or a :class:`Failure`.
    """

    cid: int
    key: str
    replies: dict[str, Reply]
    error: Failure | None = None
    expected: int | None = None


@dataclass(frozen=True, slots=True)
class Gathered:
    """The answers to a request to every service on a key.

    ``answers`` holds each answer by the service's name (an error answer as
    its :class:`~zdse.errors.RemoteError`); ``reached`` is how many services
    the cage said the request reached (None if that word never came).
    """

    answers: dict[str, Any]
    reached: int | None

    @property
    def complete(self) -> bool:
        """Whether every service the request reached answered."""
        return self.reached is not None and len(self.answers) >= self.reached


class PendingRequests:
    """The table of requests in flight."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def new(self, key: str, gather: bool = False) -> int:
        """Record a request to ``key``; return its correlation id."""
        cid = next(self._ids)
        self._pending[cid] = _Pending(key, gather)
        return cid

    def on_reply(self, sender: str, reply: Reply) -> Outcome | None:
        """Take a reply; return the outcome if it completes its request."""
        pending = self._pending.get(reply.cid)
        if pending is None:
            return None  # late, duplicate, or for a request already timed out
        pending.replies.setdefault(sender, reply)
        return self._complete_if_done(reply.cid, pending)

    def on_fanout(self, cid: int, count: int) -> Outcome | None:
        """The cage says gather request ``cid`` reached ``count`` services."""
        pending = self._pending.get(cid)
        if pending is None:
            return None
        pending.expected = count
        return self._complete_if_done(cid, pending)

    def on_noroute(self, cid: int) -> Outcome | None:
        """Nobody listens on the request's key: it ends now."""
        pending = self._pending.pop(cid, None)
        if pending is None:
            return None
        return Outcome(cid, pending.key, pending.replies, Failure.NOROUTE, 0)

    def timeout(self, cid: int) -> Outcome | None:
        """The deadline passed: end the request with what it has."""
        pending = self._pending.pop(cid, None)
        if pending is None:
            return None
        return Outcome(cid, pending.key, pending.replies, Failure.TIMEOUT, pending.expected)

    def cancel(self, cid: int) -> None:
        """Forget a request whose waiter went away."""
        self._pending.pop(cid, None)

    def cids(self) -> list[int]:
        """The correlation ids still waiting."""
        return list(self._pending)

    def _complete_if_done(self, cid: int, pending: _Pending) -> Outcome | None:
        if pending.gather and (pending.expected is None or len(pending.replies) < pending.expected):
            return None
        del self._pending[cid]
        return Outcome(cid, pending.key, pending.replies, None, pending.expected)

