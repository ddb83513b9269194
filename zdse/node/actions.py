"""What the pure cores ask their shell to do. Values only."""

from __future__ import annotations

from dataclasses import dataclass

from zdse.wire.codec import MessageValue

__all__ = ["Action", "AddFilter", "RemoveFilter", "Send"]


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to ``key`` through the cage (a DELTA goes to its PUB)."""

    key: str
    message: MessageValue


@dataclass(frozen=True, slots=True)
class AddFilter:
    """Subscribe the SUB socket to ``topic``."""

    topic: bytes


@dataclass(frozen=True, slots=True)
class RemoveFilter:
    """Unsubscribe the SUB socket from ``topic``."""

    topic: bytes


Action = Send | AddFilter | RemoveFilter
