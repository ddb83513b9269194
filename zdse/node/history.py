"""A publisher's recent deltas, per dataindex, to resend what a subscriber missed. Pure.

A delta a subscriber misses is usually one that left before its SUB filter
took effect at the cage's PUB socket (the start race: its first snapshot
came by the ROUTER, the filter goes on afterwards, by another connection),
or one a cage lost on its way. Rather than a whole snapshot, the publisher
resends the deltas it still holds from the seq the subscriber says it has
(docs/protocol.md, "Replay").

Each dataindex keeps the bodies of its latest deltas exactly as they were
packed to send (``[dataindex, epoch, seq, delta]``: no packing here), in
seq order and without a hole, at most :data:`HISTORY_DELTAS` of them and
:data:`HISTORY_BYTES` of bodies; past either, the oldest go first, down to
seven eighths of the bounds (so a publish costs a pop only now and then,
not each time). All dataindexes together hold at most
:data:`HISTORY_TOTAL_BYTES`: past it, the biggest histories go whole
(their subscribers get a snapshot if they miss a delta). A delta bigger than
the byte bound, or one that does not follow on from the last held,
starts the history over. So what a history holds always ends at the
publisher's latest seq, once that was recorded::

    recorded      history before        history after
    seq n + 1     seqs m .. n           seqs m .. n + 1 (past a bound, the oldest dropped)
    any other     anything              that delta alone (or nothing, if too big)
    forget        anything              nothing (the shell sent nothing: nobody listens)
"""

from __future__ import annotations

from collections import deque

from zdse.wire.limits import HISTORY_BYTES, HISTORY_DELTAS, HISTORY_TOTAL_BYTES

__all__ = ["History"]


class _Tail:
    """One dataindex's latest deltas: one body each, the last of seq ``next - 1``."""

    __slots__ = ("bodies", "bytes", "next")

    def __init__(self) -> None:
        self.next = 0
        self.bytes = 0
        self.bodies: deque[bytes] = deque()


class History:
    """The latest packed deltas of every dataindex a node publishes.

    Args:
        max_deltas: deltas kept per dataindex.
        max_bytes: bytes of packed deltas kept per dataindex.
        max_total: bytes of packed deltas kept, all dataindexes together.
    """

    def __init__(self, max_deltas: int = HISTORY_DELTAS, max_bytes: int = HISTORY_BYTES,
                 max_total: int = HISTORY_TOTAL_BYTES) -> None:
        self.max_deltas = max_deltas
        self.max_bytes = max_bytes
        self.max_total = max_total
        #: Bytes held, all dataindexes together.
        self.bytes = 0
        self._tails: dict[str, _Tail] = {}

    def record(self, dataindex: str, seq: int, body: bytes) -> None:
        """Keep the packed delta that made ``seq`` (called once per delta published)."""
        tail = self._tails.get(dataindex)
        if tail is None or tail.next != seq:
            # The first, or a hole: what was held no longer leads up to seq.
            if tail is not None:
                self.bytes -= tail.bytes
            tail = self._tails[dataindex] = _Tail()
        bodies = tail.bodies
        bodies.append(body)
        tail.next = seq + 1
        size = len(body)
        tail.bytes += size
        self.bytes += size
        if tail.bytes > self.max_bytes or len(bodies) > self.max_deltas:
            self._trim(dataindex, tail)
        if self.bytes > self.max_total:
            self._shed()

    def _trim(self, dataindex: str, tail: _Tail) -> None:
        """Drop the oldest down to 7/8 of the bounds: a publish past them then costs a
        pop only once every eighth of the history (the common path stays one append)."""
        bodies = tail.bodies
        most_bytes, most_deltas = self.max_bytes * 7 // 8, self.max_deltas * 7 // 8
        while bodies and (tail.bytes > most_bytes or len(bodies) > most_deltas):
            size = len(bodies.popleft())
            tail.bytes -= size
            self.bytes -= size
        if not bodies:
            # A delta bigger than the bound on its own: not kept, nor what led to it.
            del self._tails[dataindex]

    def _shed(self) -> None:
        """Past the bound of all histories together: drop the biggest whole, down to 7/8."""
        most = self.max_total * 7 // 8
        for dataindex in sorted(self._tails, key=lambda d: self._tails[d].bytes, reverse=True):
            if self.bytes <= most:
                break
            self.forget(dataindex)

    def forget(self, dataindex: str) -> None:
        """Drop what ``dataindex`` holds: a delta was not recorded (nobody subscribed)."""
        tail = self._tails.pop(dataindex, None)
        if tail is not None:
            self.bytes -= tail.bytes

    def since(self, dataindex: str, held: int, seq: int) -> bytes | None:
        """The packed deltas ``held + 1`` to ``seq``, back to back; None unless all are held.

        ``seq`` is the publisher's current seq: a history that does not end
        there (a delta went unrecorded) gives None, as does one that starts
        after ``held + 1``.
        """
        tail = self._tails.get(dataindex)
        if tail is None or held >= seq or tail.next != seq + 1:
            return None
        bodies = tail.bodies
        start = held + 1 - (tail.next - len(bodies))
        if start < 0:
            return None
        if start == 0:
            return b"".join(bodies)
        return b"".join([bodies[i] for i in range(start, len(bodies))])

    def statistics(self) -> dict[str, int]:
        """Deltas and bytes held, all dataindexes together."""
        return {"history_deltas": sum(len(t.bodies) for t in self._tails.values()),
                "history_bytes": self.bytes}
