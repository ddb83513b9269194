"""A published table changed in place, at a cost that follows the change. Pure.

``publish()`` stores the module's own value and diffs it against the last
one. An incremental change (put and delete keys, add and remove rows) needs
a table the publisher owns and can change in place, plus what makes each
change cheap:

- :class:`KeyTable`, a dict table: a put or a delete is one dict operation.
- :class:`RowTable`, a list table (a multiset of rows, as :mod:`zdse.node.delta`
  treats it): each distinct row's count, keyed by its frozen form, tells in
  O(1) whether a row to remove is there; removed rows are only marked, and
  the list is compacted when half of it is marked, or when it is read whole
  (a snapshot or a request, which cost as much anyway).

Both keep :attr:`bytes`, the packed size of their content, so that a change
that would make a snapshot too large is refused without packing the table.

A change is planned first (:meth:`KeyTable.plan`, :meth:`RowTable.plan`:
what it really changes, nothing touched), then committed: whatever is
refused in between leaves the table as it was.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from zdse.errors import ProtocolError
from zdse.node.delta import freeze, same

__all__ = ["KeyPlan", "KeyTable", "RowPlan", "RowTable", "packed_size"]

# Its own packer (the codec's is not exported): sizes only, never sent.
_pack = msgpack.Packer(use_bin_type=True).pack

#: Marked rows past which a RowTable compacts, at least: a small table
#: compacts rarely rather than at every other removal.
_COMPACT_MIN = 64


def packed_size(value: Any) -> int:
    """The size of ``value`` in msgpack.

    Raises:
        ProtocolError: msgpack cannot represent it.
    """
    try:
        return len(_pack(value))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode value: {exc}") from exc


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """What a change of a dict table really changes: keys put (changed or new), keys deleted."""

    put: dict[Any, Any]
    delete: list[Any]
    #: How many bytes the packed table grows by (may be negative).
    grow: int


class KeyTable:
    """A dict table the publisher owns.

    Args:
        data: the entries to start from (copied).
    """

    __slots__ = ("bytes", "data")

    def __init__(self, data: Mapping[Any, Any]) -> None:
        self.data: dict[Any, Any] = dict(data)
        self.bytes = sum(packed_size(k) + packed_size(v) for k, v in self.data.items())

    def plan(self, put: Mapping[Any, Any], delete: Iterable[Any] = ()) -> KeyPlan:
        """What putting ``put`` and deleting ``delete`` changes; nothing is changed yet.

        A put of a value equal to the one held, or a delete of a key not
        held, changes nothing and is left out.

        Raises:
            ValueError: a key is both put and deleted, or cannot be a dict key.
            ProtocolError: msgpack cannot represent a key or value.
        """
        data = self.data
        grow = 0
        changed: dict[Any, Any] = {}
        for key, value in put.items():
            _check_key(key)
            old = data.get(key, _MISSING)
            if old is not _MISSING and same(old, value):
                continue
            grow += packed_size(value) - (
                packed_size(old) if old is not _MISSING else -packed_size(key))
            changed[key] = value
        deleted: list[Any] = []
        seen: set[Any] = set()
        for key in delete:
            _check_key(key)
            if key in seen:
                continue
            if key in put:
                raise ValueError(f"key {key!r} is both put and deleted")
            seen.add(key)
            if key in data:
                deleted.append(key)
                grow -= packed_size(key) + packed_size(data[key])
        return KeyPlan(changed, deleted, grow)

    def commit(self, plan: KeyPlan) -> None:
        """Make the planned change."""
        data = self.data
        for key in plan.delete:
            del data[key]
        data.update(plan.put)
        self.bytes += plan.grow


@dataclass(frozen=True, slots=True)
class RowPlan:
    """What a change of a list table really changes: rows added, rows removed."""

    add: list[Any]
    remove: list[Any]
    add_keys: list[Hashable]
    remove_keys: list[Hashable]
    grow: int


class RowTable:
    """A list table the publisher owns: a multiset of rows with an index.

    Args:
        rows: the rows to start from (copied).
    """

    __slots__ = ("_counts", "_dead", "_keys", "_marked", "_rows", "bytes")

    def __init__(self, rows: Iterable[Any]) -> None:
        self._rows: list[Any] = []
        #: The frozen form of each row of _rows, at the same position.
        self._keys: list[Hashable] = []
        #: Each distinct live row (frozen) -> how many times it is held.
        self._counts: dict[Hashable, int] = {}
        #: Rows removed but still in _rows, by frozen form; _marked in all.
        self._dead: dict[Hashable, int] = {}
        self._marked = 0
        self.bytes = 0
        for row in rows:
            self._append(freeze(row), row)
            self.bytes += packed_size(row)

    def __len__(self) -> int:
        return len(self._rows) - self._marked

    def rows(self) -> list[Any]:
        """The rows, held by the table: read them, never change them."""
        if self._marked:
            self._compact()
        return self._rows

    def plan(self, add: Iterable[Any] = (), remove: Iterable[Any] = ()) -> RowPlan:
        """What adding ``add`` and removing ``remove`` changes; nothing is changed yet.

        Removals apply to the rows held before the change (as the wire's
        ``rows`` delta does): a row to remove that is not held, or not as
        many times, is left out.

        Raises:
            ProtocolError: msgpack cannot represent a row.
        """
        added = list(add)
        add_keys = [freeze(row) for row in added]
        grow = sum(packed_size(row) for row in added)
        removed: list[Any] = []
        remove_keys: list[Hashable] = []
        taken: dict[Hashable, int] = {}
        counts = self._counts
        for row in remove:
            key = freeze(row)
            if counts.get(key, 0) - taken.get(key, 0) > 0:
                taken[key] = taken.get(key, 0) + 1
                removed.append(row)
                remove_keys.append(key)
                grow -= packed_size(row)
        return RowPlan(added, removed, add_keys, remove_keys, grow)

    def commit(self, plan: RowPlan) -> None:
        """Make the planned change."""
        counts, dead = self._counts, self._dead
        for key in plan.remove_keys:
            left = counts[key] - 1
            if left:
                counts[key] = left
            else:
                del counts[key]
            dead[key] = dead.get(key, 0) + 1
        self._marked += len(plan.remove_keys)
        for key, row in zip(plan.add_keys, plan.add, strict=True):
            self._append(key, row)
        self.bytes += plan.grow
        if self._marked > max(_COMPACT_MIN, len(self._rows) // 2):
            self._compact()

    def _append(self, key: Hashable, row: Any) -> None:
        self._rows.append(row)
        self._keys.append(key)
        self._counts[key] = self._counts.get(key, 0) + 1

    def _compact(self) -> None:
        """Drop the marked rows: the oldest copies of each, so a row added since stays."""
        dead = self._dead
        rows: list[Any] = []
        keys: list[Hashable] = []
        for key, row in zip(self._keys, self._rows, strict=True):
            owed = dead.get(key, 0)
            if owed:
                dead[key] = owed - 1
            else:
                rows.append(row)
                keys.append(key)
        self._rows, self._keys = rows, keys
        self._dead = {}
        self._marked = 0


class _Missing:
    """No value held (None may be one)."""


_MISSING: Any = _Missing()


def _check_key(key: Any) -> None:
    try:
        hash(key)
    except TypeError:
        raise ValueError(f"a {type(key).__name__} cannot be a table's key") from None
