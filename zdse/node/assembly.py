"""Snapshots that travel in parts, put back together on the subscriber's side. Pure.

A publisher sends a table too big for one message as
:class:`~zdse.wire.codec.SnapshotPart` values, in order, through the cage's
ROUTER (which keeps their order between two nodes), each once the
subscriber said it took the one before (:class:`~zdse.wire.codec.PartTaken`).
:class:`Assemblies` keeps, per publisher and subscription, the parts of the
snapshot under way:

    part     state                    ->  what happens
    0        any                      ->  a new snapshot under way (replaces any other)
    next     same (epoch, seq, shape) ->  its rows kept; the last one completes it
    other    any                      ->  "lost": dropped; the subscriber asks again
    none for two refresh intervals    ->  "stalled": dropped; the subscriber asks again
    past MAX_SNAPSHOT_BYTES            ->  "too_big": dropped; asked again only by
                                          the subscription's next re-announce

It holds one table's rows per subscription at most (up to
MAX_SNAPSHOT_BYTES; only for subscriptions the subscriber holds): what the view will
hold anyway, and packs each part's rows as it comes, so that the view's
index (:mod:`zdse.node.tableindex`) is ready with the table, built a part at a
time rather than at its first delta, in one long pause. A dict table's parts
are packed too, only to count their bytes against the bound.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from zdse.node import tableindex
from zdse.node.tableindex import TableIndex
from zdse.wire.codec import Snapshot, SnapshotPart
from zdse.wire.limits import MAX_SNAPSHOT_BYTES

__all__ = ["LOST", "TOO_BIG", "Assemblies"]

#: What :meth:`Assemblies.take` returns when a part is missing.
LOST = "lost"
#: What it returns when the parts outgrow MAX_SNAPSHOT_BYTES.
TOO_BIG = "too_big"


@dataclass(slots=True)
class _Assembly:
    epoch: str
    seq: int
    parts: int
    #: The rows of a list table, or the entries of a dict table.
    rows: list[Any] | dict[Any, Any]
    next: int = 0
    packed: list[bytes] = field(default_factory=list)
    size: int = 0
    #: When its last part came.
    came: float = 0.0


class Assemblies:
    """The snapshots in parts under way, by (publisher, subscription id)."""

    def __init__(self) -> None:
        self._under_way: dict[tuple[str, str], _Assembly] = {}

    def take(self, sender: str, part: SnapshotPart,
             now: float = 0.0) -> tuple[Snapshot, TableIndex | None] | str | None:
        """Keep a part; with the last, the whole snapshot and its index; LOST if one is missing.

        A list table's index is built from its parts; a dict table has none.

        Raises:
            ProtocolError: a row msgpack cannot pack again (it never comes from msgpack).
        """
        key = (sender, part.sid)
        rows = part.rows
        if part.part == 0:
            if part.parts < 1:
                self._under_way.pop(key, None)
                return LOST
            empty: list[Any] | dict[Any, Any] = [] if isinstance(rows, list) else {}
            under = self._under_way[key] = _Assembly(part.epoch, part.seq, part.parts, empty)
        else:
            found = self._under_way.get(key)
            if found is None or (found.epoch, found.seq, found.parts, found.next) \
                    != (part.epoch, part.seq, part.parts, part.part) \
                    or type(found.rows) is not type(rows):
                self._under_way.pop(key, None)
                return LOST
            under = found
        under.came = now
        packed = tableindex.run(tableindex.index(rows))
        if isinstance(under.rows, list):
            if not isinstance(rows, list) or packed is None or packed.rows is None:
                raise AssertionError("checked: every part of a list table is a list")
            under.rows += rows
            # Hashed now, a part at a time (bytes keep their hash): else the
            # first delta's look-ups would hash the whole view at once.
            deque(map(hash, packed.rows), maxlen=0)
            under.packed += packed.rows
        else:
            # Counted as packed, as a list table's: the bound is the same.
            under.rows.update(rows)
        under.size += 0 if packed is None else packed.size
        if under.size > MAX_SNAPSHOT_BYTES:
            del self._under_way[key]
            return TOO_BIG
        under.next += 1
        if under.next < under.parts:
            return None
        del self._under_way[key]
        index = TableIndex(rows=under.packed, size=under.size) \
            if isinstance(under.rows, list) else None
        return Snapshot(part.sid, part.dataindex, part.epoch, part.seq, under.rows), index

    def stalled(self, before: float) -> list[tuple[str, str]]:
        """Drop and return the (publisher, sid) of snapshots whose last part came before ``before``.

        Parts are paced (the next comes when the subscriber took the one
        before): one lost on its way stalls the snapshot, which only this
        shows.
        """
        gone = [key for key, under in self._under_way.items() if under.came < before]
        for key in gone:
            del self._under_way[key]
        return gone

    def coming(self, sender: str, sid: str) -> bool:
        """Whether a snapshot in parts from ``sender`` for ``sid`` is under way."""
        return (sender, sid) in self._under_way

    def under_way(self, sid: str) -> dict[str, list[Any]]:
        """``{publisher: [epoch, seq]}`` of the snapshots in parts under way for ``sid``."""
        return {sender: [a.epoch, a.seq] for (sender, s), a in self._under_way.items()
                if s == sid}

    def forget(self, sender: str | None = None, sid: str | None = None) -> None:
        """Drop what is under way from ``sender`` (any if None) for ``sid`` (any if None)."""
        for key in [k for k in self._under_way
                    if (sender is None or k[0] == sender) and (sid is None or k[1] == sid)]:
            del self._under_way[key]

    def __len__(self) -> int:
        return len(self._under_way)
