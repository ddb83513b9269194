"""One browser stream's events, bounded in bytes. Pure: no asyncio, no clock.

A stream's subscriptions feed :meth:`Feed.take` with the bus's updates; the
shell (:mod:`zdse.web.stream`) sends what :meth:`Feed.drain` returns. Each
event is one JSON text::

    {"t": "snapshot", "p": publisher, "d": dataindex, "seq": n, "data": view}
    {"t": "delta", "p": publisher, "d": dataindex, "seq": n, "delta": delta}
    {"t": "lost", "p": publisher, "d": dataindex}
    {"t": "noroute", "key": key}
    ... and what the shell adds (``pubdata``, ``gone``)

A delta is the wire form of :mod:`zdse.node.delta`; the page applies it to its
copy of the table, so a change costs the browser the delta, not the table.

A browser that reads slower than deltas arrive must not make this process
hold them without a bound: past ``budget`` bytes queued, a table's queued
deltas are dropped and the table is owed one snapshot of its newest view
(which the bus holds anyway), sent at the next drain. A snapshot that
arrives is owed the same way, so a burst of resyncs costs one encoding.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from zdse.node.subscriptions import Update
from zdse.web.encode import to_json

__all__ = ["FEED_BUDGET", "Feed"]

#: Bytes of encoded events one stream may queue before its deltas give way
#: to a snapshot: a few seconds of a busy table, well under a snapshot of a
#: big one.
FEED_BUDGET = 4 * 1024 * 1024

#: The delta forms the page's script applies (zdse.node.delta); another form is
#: sent as a snapshot of the view.
DELTA_FORMS = frozenset({"rows", "keys", "replace"})

Table = tuple[str, str]


class Feed:
    """The events one browser stream still has to send.

    Args:
        budget: bytes of queued events past which a table's deltas are
            replaced by a snapshot owed.
    """

    def __init__(self, budget: int = FEED_BUDGET) -> None:
        self.budget = budget
        self._queue: deque[tuple[Table | None, str]] = deque()
        self._bytes = 0
        #: Each table's newest (seq, view), for the snapshots owed.
        self._views: dict[Table, tuple[int, Any]] = {}
        #: Tables owed a snapshot, in the order they became owed.
        self._owed: dict[Table, None] = {}
        #: Deltas dropped for a snapshot because the stream fell behind.
        self.coalesced = 0

    def __bool__(self) -> bool:
        return bool(self._queue or self._owed)

    @property
    def queued_bytes(self) -> int:
        """Bytes of encoded events queued (snapshots owed not counted: not encoded yet)."""
        return self._bytes

    def take(self, update: Update) -> None:
        """Queue what the browser must see of one update of a subscription."""
        if update.kind == "noroute":
            self.add({"t": "noroute", "key": update.data})
            return
        table = (update.publisher, update.dataindex)
        if update.kind == "lost":
            self._views.pop(table, None)
            self._owed.pop(table, None)
            self._push(table, to_json({"t": "lost", "p": table[0], "d": table[1]}))
            return
        if update.kind not in ("snapshot", "delta"):
            return
        self._views[table] = (update.seq, update.view)
        if table in self._owed:
            return  # the snapshot owed will show it
        delta = update.data
        if (update.kind == "snapshot" or not isinstance(delta, list) or not delta
                or delta[0] not in DELTA_FORMS):
            self._owe(table)
            return
        text = to_json({"t": "delta", "p": table[0], "d": table[1], "seq": update.seq,
                        "delta": delta})
        if self._bytes + len(text) > self.budget:
            self.coalesced += 1
            self._owe(table)
            return
        self._push(table, text)

    def add(self, event: dict[str, Any]) -> None:
        """Queue an event of no table (small, never dropped)."""
        self._push(None, to_json(event))

    def drain(self) -> list[str]:
        """Return the events to send now, oldest first, and forget them."""
        out = []
        for table in self._owed:
            seq, view = self._views[table]
            out.append(to_json({"t": "snapshot", "p": table[0], "d": table[1], "seq": seq,
                                "data": view}))
        self._owed.clear()
        out.extend(text for _, text in self._queue)
        self._queue.clear()
        self._bytes = 0
        return out

    def _push(self, table: Table | None, text: str) -> None:
        self._queue.append((table, text))
        self._bytes += len(text)

    def _owe(self, table: Table) -> None:
        """Owe ``table`` a snapshot; drop its queued events, which the snapshot covers."""
        self._owed[table] = None
        if any(t == table for t, _ in self._queue):
            kept = deque(item for item in self._queue if item[0] != table)
            self._bytes = sum(len(text) for _, text in kept)
            self._queue = kept
