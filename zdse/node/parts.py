"""A snapshot in parts on its way to one subscription, a part at a time. Pure.

The publisher sends part 0, then each next part when the subscriber says it
took the one before (see :mod:`zdse.node.assembly` for the other end). Two
sources of parts, one per kind of table:

- :class:`RowParts`, a list table: its rows already packed (the kept index
  of a table published whole, or the packed rows a table changed in place
  holds), cut into ranges under the part size once.
- :class:`EntryParts`, a dict table: its entries packed as each part goes,
  from a dict no one changes while the parts go (the module's value, or a
  copy of a table changed in place). The number of parts is known at once
  from the table's packed size: an entry goes in the part its first byte
  falls in, so a part holds at most the part size plus one entry (entries
  are bounded to leave room for that) and may be empty.

Both hold the version the snapshot is of: a change meanwhile does not reach
them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack

from zdse.errors import ProtocolError
from zdse.node import tableindex
from zdse.wire import codec

__all__ = ["EntryParts", "PartStream", "RowParts"]

_pack = msgpack.Packer(use_bin_type=True).pack


class RowParts:
    """The parts of a list table, from its packed rows."""

    __slots__ = ("_ranges", "_rows")

    def __init__(self, rows: list[bytes], limit: int) -> None:
        self._rows = rows
        self._ranges = tableindex.parts(rows, limit)

    def __len__(self) -> int:
        return len(self._ranges)

    def body(self, fields: tuple[Any, ...], part: int) -> bytes:
        """Part ``part`` encoded, its message's other ``fields`` first."""
        start, stop = self._ranges[part]
        return codec.encode_with_rows(fields, self._rows[start:stop])


class EntryParts:
    """The parts of a dict table, packed as they go.

    Args:
        data: the entries; never changed while the parts go.
        size: their packed size (keys and values), which sets the number of parts.
        limit: the bytes of entries a part starts with, at most.
    """

    __slots__ = ("_count", "_entries", "_limit", "_offset", "_pending")

    def __init__(self, data: dict[Any, Any], size: int, limit: int) -> None:
        self._entries: Iterator[tuple[Any, Any]] = iter(data.items())
        self._limit = limit
        self._count = max(1, -(-size // limit))
        #: Bytes of the entries packed so far.
        self._offset = 0
        #: A packed entry read past the end of the part before.
        self._pending: list[bytes] = []

    def __len__(self) -> int:
        return self._count

    def body(self, fields: tuple[Any, ...], part: int) -> bytes:
        """Part ``part`` (the one after the last asked for) encoded, ``fields`` first.

        Raises:
            ProtocolError: msgpack cannot represent an entry (the table
                checked each as it came: not expected).
        """
        last = part + 1 == self._count
        end = (part + 1) * self._limit
        out: list[bytes] = []
        pending = self._pending
        if pending:
            if not last and self._offset - len(pending[0]) - len(pending[1]) >= end:
                # An entry bigger than a part: this one stays empty.
                return codec.encode_with_entries(fields, out)
            out, self._pending = pending, []
        try:
            for key, value in self._entries:
                entry = [_pack(key), _pack(value)]
                start = self._offset
                self._offset += len(entry[0]) + len(entry[1])
                if not last and start >= end:
                    self._pending = entry
                    break
                out += entry
        except (TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError(f"cannot encode an entry: {exc}") from exc
        return codec.encode_with_entries(fields, out)


#: What a stream sends its parts from.
PartSource = RowParts | EntryParts


class PartStream:
    """One snapshot's parts on their way to one subscription.

    Args:
        fields: the snapshot's sid, dataindex, epoch and seq.
        source: its parts.
    """

    __slots__ = ("fields", "sent", "source")

    def __init__(self, fields: tuple[str, str, str, int], source: PartSource) -> None:
        self.fields = fields
        self.source = source
        #: The part sent last.
        self.sent = 0

    def body(self) -> bytes:
        """Part ``sent`` encoded."""
        return self.source.body((*self.fields, self.sent, len(self.source)), self.sent)

    @property
    def done(self) -> bool:
        """Whether the part sent last was the last."""
        return self.sent + 1 == len(self.source)
