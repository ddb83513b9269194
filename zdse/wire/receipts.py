"""Bytes on their way from the cage to a node, and the node's receipts for them. Pure.

ZeroMQ does not say how many bytes wait in a pipe, so both ends count: the
cage what it queued for each connection, the node what it read from the
cage, each message by :func:`wire_cost`. The node sends the cumulative count
it read (:class:`~zdse.wire.codec.Receipt`) every RECEIPT_BYTES and at each
heartbeat; the cage holds what was sent but not yet acknowledged in an
:class:`Account` per connection and refuses a message that would put more
than its byte budget in flight (dropped and counted; the node is told once
it has caught up). A welcome carries the cage's count, so a node that
registers again on the same connection counts on from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from zdse.wire.codec import Receipt
from zdse.wire.limits import FRAME_COST, RECEIPT_BYTES

__all__ = ["Account", "ReadCount", "wire_cost"]


def wire_cost(*frames: bytes) -> int:
    """What one message from the cage to a node counts in its byte budget: its frames
    (``header, sender, key, body``, or ``sender, packed``) and FRAME_COST."""
    return sum(map(len, frames)) + FRAME_COST


@dataclass(slots=True)
class Account:
    """The cage's count of one connection: sent, acknowledged, refused."""

    #: Bytes queued for it, all told.
    sent: int = 0
    #: Bytes it said it read (never more than ``sent``).
    acked: int = 0
    #: Messages and bytes refused since it was last told.
    refused: int = 0
    refused_bytes: int = 0

    @property
    def unacked(self) -> int:
        """Bytes queued for it that it has not said it read: in the cage or on the way."""
        return self.sent - self.acked

    def admit(self, cost: int, budget: int) -> bool:
        """Count a message of ``cost`` as sent if it fits the budget, else as refused.

        A message always goes when nothing is unacknowledged, so one larger
        than the budget is slowed, never barred for good.
        """
        unacked = self.sent - self.acked
        if unacked and unacked + cost > budget:
            self.refused += 1
            self.refused_bytes += cost
            return False
        self.sent += cost
        return True

    def unsent(self, cost: int) -> None:
        """The transport dropped a message counted as sent: it will never be read."""
        self.sent -= cost
        self.acked = min(self.acked, self.sent)

    def receipt(self, read: int) -> None:
        """The node read ``read`` bytes in all (a lie past what was sent counts as all)."""
        self.acked = max(self.acked, min(read, self.sent))


@dataclass(slots=True)
class ReadCount:
    """A node's count of what it read from the cage, and when to say so."""

    read: int = 0
    #: The count its last receipt carried.
    told: int = 0

    def take(self, frames: list[bytes]) -> bool:
        """Count one message ``[header, sender, key, body]``; True when a receipt is due."""
        self.read += sum(map(len, frames)) + FRAME_COST
        return self.read - self.told >= RECEIPT_BYTES

    def welcomed(self, sent: int, frames: list[bytes]) -> None:
        """A welcome (``frames``) said the cage sent ``sent`` bytes before it: all read."""
        self.read = sent + sum(map(len, frames)) + FRAME_COST
        self.told = 0

    def receipt(self) -> Receipt | None:
        """The receipt to send, if anything was read since the last one."""
        if self.read == self.told:
            return None
        self.told = self.read
        return Receipt(self.read)
