"""The changes of several notifications, merged into one change per table. Pure.

Under load the broker hands the bridge many deliveries at once (up to its
``prefetch``). Each notification changes a few tables
(:meth:`zdse_nodes.amqp_tables.Tables.take`); sending each change on its own
costs the bus a delta, a sequence number and a send per notification and
table. A :class:`Batch` takes the changes of all the notifications read in
one turn and gives back, per table, the one change they add up to, in the
order the tables were first changed:

- a window (rows): the rows added, less those evicted again within the
  batch (rows are matched by identity: :class:`~zdse_nodes.amqp_tables.Tables`
  evicts the very row objects it added), and the rows evicted that were
  there before the batch;
- a map (keys): the last value put for each key, and the keys deleted and
  not put again afterwards.

Applied to the tables as they were before the batch, the merged change
leaves them as the changes one by one would have. :meth:`Batch.merged`
also gives the changes each merged one stands for, so the shell can fall
back to them one by one when the merged change is refused (one value the
bus cannot carry must not lose the rest of the batch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .amqp_tables import Change, KeyChange, RowChange

__all__ = ["Batch", "Merged"]


@dataclass(frozen=True, slots=True)
class Merged:
    """One table's merged change, and the changes it stands for, in order."""

    change: Change
    parts: list[Change]


@dataclass(slots=True)
class _Rows:
    added: dict[int, dict[str, Any]] = field(default_factory=dict)
    removed: list[dict[str, Any]] = field(default_factory=list)

    def take(self, change: RowChange) -> None:
        for row in change.add:
            self.added[id(row)] = row
        for row in change.remove:
            if self.added.pop(id(row), None) is None:
                self.removed.append(row)


@dataclass(slots=True)
class _Keys:
    put: dict[str, Any] = field(default_factory=dict)
    deleted: dict[str, None] = field(default_factory=dict)

    def take(self, change: KeyChange) -> None:
        for key in change.delete:
            self.put.pop(key, None)
            self.deleted[key] = None
        for key, value in change.put.items():
            self.deleted.pop(key, None)
            self.put[key] = value


class Batch:
    """Changes to merge, table by table."""

    def __init__(self) -> None:
        self._rows: dict[str, _Rows] = {}
        self._keys: dict[str, _Keys] = {}
        #: Each table's changes as taken, tables in the order first changed.
        self._parts: dict[str, list[Change]] = {}

    def __len__(self) -> int:
        """How many changes were taken."""
        return sum(len(parts) for parts in self._parts.values())

    def take(self, changes: Iterable[Change]) -> None:
        """Add the changes of one notification.

        Raises:
            ValueError: a table changed both as rows and as keys.
        """
        for change in changes:
            name = change.dataindex
            if isinstance(change, RowChange):
                if name in self._keys:
                    raise ValueError(f"table {name!r} changed both as keys and as rows")
                self._rows.setdefault(name, _Rows()).take(change)
            else:
                if name in self._rows:
                    raise ValueError(f"table {name!r} changed both as rows and as keys")
                self._keys.setdefault(name, _Keys()).take(change)
            self._parts.setdefault(name, []).append(change)

    def merged(self) -> list[Merged]:
        """One change per table, in the order the tables were first changed."""
        out: list[Merged] = []
        for name, parts in self._parts.items():
            change: Change
            rows = self._rows.get(name)
            if rows is not None:
                change = RowChange(name, list(rows.added.values()), rows.removed)
            else:
                keys = self._keys[name]
                change = KeyChange(name, keys.put, list(keys.deleted))
            out.append(Merged(change, parts))
        return out
