"""A published table changed in place, at a cost that follows the change. Pure.

``publish()`` stores the module's own value and diffs it against the last
one. An incremental change (put and delete keys, add and remove rows) needs
a table the publisher owns and can change in place, plus what makes each
change cheap:

- :class:`KeyTable`, a dict table: a put or a delete is one dict operation.
- :class:`RowTable`, a list table (a multiset of rows, as :mod:`zdse.node.delta`
  treats it): each distinct row's count, keyed by its packed bytes (packed
  anyway for its size), tells in O(1) whether a row to remove is there;
  removed rows are only marked, and the list is compacted when half of it
  is marked, or when it is read whole (a snapshot or a request, which cost
  as much anyway). Equal rows pack equal unless their maps list the same
  keys in another order: a row to remove whose bytes are not held is looked
  up as data, through an index of frozen rows built the first time that
  happens and kept from then on (a module that builds its rows one way
  never pays for it).

Both keep :attr:`bytes`, the packed size of their content, so that a big
table's snapshot is known to go in parts without packing the table.

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
    return len(_packed(value))


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """What a change of a dict table really changes: keys put (changed or new), keys deleted."""

    put: dict[Any, Any]
    delete: list[Any]
    #: How many bytes the packed table grows by (may be negative).
    grow: int
    #: The largest entry put (key and value, packed).
    largest: int


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
        grow = largest = 0
        changed: dict[Any, Any] = {}
        for key, value in put.items():
            _check_key(key)
            old = data.get(key, _MISSING)
            if old is not _MISSING and same(old, value):
                continue
            key_size, value_size = packed_size(key), packed_size(value)
            largest = max(largest, key_size + value_size)
            grow += value_size - (packed_size(old) if old is not _MISSING else -key_size)
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
        return KeyPlan(changed, deleted, grow, largest)

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
    #: The packed form of each row added, and of each row held that goes.
    add_keys: list[bytes]
    remove_keys: list[bytes]
    grow: int
    #: The largest row added, packed.
    largest: int


class RowTable:
    """A list table the publisher owns: a multiset of rows with an index.

    Args:
        rows: the rows to start from (copied).

    Raises:
        ProtocolError: msgpack cannot represent a row.
    """

    __slots__ = ("_counts", "_dead", "_frozen", "_keys", "_marked", "_rows", "bytes")

    def __init__(self, rows: Iterable[Any]) -> None:
        self._rows: list[Any] = []
        #: The packed form of each row of _rows, at the same position.
        self._keys: list[bytes] = []
        #: Each distinct live row (packed) -> how many times it is held.
        self._counts: dict[bytes, int] = {}
        #: Rows removed but still in _rows, by packed form; _marked in all.
        self._dead: dict[bytes, int] = {}
        self._marked = 0
        #: Once a removal missed its bytes: each live row as data -> its packed forms.
        self._frozen: _Frozen | None = None
        self.bytes = 0
        for row in rows:
            key = _packed(row)
            self._append(key, row)
            self.bytes += len(key)

    def __len__(self) -> int:
        return len(self._rows) - self._marked

    def rows(self) -> list[Any]:
        """The rows, held by the table: read them, never change them."""
        if self._marked:
            self._compact()
        return self._rows

    def packed(self) -> list[bytes]:
        """Each row packed, aligned with :meth:`rows`: read them, never change them."""
        if self._marked:
            self._compact()
        return self._keys

    def plan(self, add: Iterable[Any] = (), remove: Iterable[Any] = ()) -> RowPlan:
        """What adding ``add`` and removing ``remove`` changes; nothing is changed yet.

        Removals apply to the rows held before the change (as the wire's
        ``rows`` delta does): a row to remove that is not held, or not as
        many times, is left out.

        Raises:
            ProtocolError: msgpack cannot represent a row.
        """
        added = list(add)
        add_keys = [_packed(row) for row in added]
        grow = sum(map(len, add_keys))
        removed: list[Any] = []
        remove_keys: list[bytes] = []
        taken: dict[bytes, int] = {}
        counts = self._counts
        for row in remove:
            key = _packed(row)
            if counts.get(key, 0) - taken.get(key, 0) <= 0:
                held = self._held_as_data(row, taken)
                if held is None:
                    continue
                key = held
            taken[key] = taken.get(key, 0) + 1
            removed.append(row)
            remove_keys.append(key)
            grow -= len(key)
        return RowPlan(added, removed, add_keys, remove_keys, grow,
                       max(map(len, add_keys), default=0))

    def commit(self, plan: RowPlan) -> None:
        """Make the planned change."""
        counts, dead, frozen = self._counts, self._dead, self._frozen
        for key in plan.remove_keys:
            left = counts[key] - 1
            if left:
                counts[key] = left
            else:
                del counts[key]
                if frozen is not None:
                    frozen.forget(key)
            dead[key] = dead.get(key, 0) + 1
        self._marked += len(plan.remove_keys)
        for key, row in zip(plan.add_keys, plan.add, strict=True):
            self._append(key, row)
        self.bytes += plan.grow
        if self._marked > max(_COMPACT_MIN, len(self._rows) // 2):
            self._compact()

    def _held_as_data(self, row: Any, taken: Mapping[bytes, int]) -> bytes | None:
        """The packed form of a live row equal to ``row`` as data, not yet taken; or None."""
        if self._frozen is None:
            self._frozen = _Frozen()
            rows = self.rows()  # compacted: only live rows
            for key, held in zip(self._keys, rows, strict=True):
                self._frozen.add(key, held)
        for key in self._frozen.forms(row):
            if self._counts.get(key, 0) - taken.get(key, 0) > 0:
                return key
        return None

    def _append(self, key: bytes, row: Any) -> None:
        self._rows.append(row)
        self._keys.append(key)
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._frozen is not None:
            self._frozen.add(key, row)

    def _compact(self) -> None:
        """Drop the marked rows: the oldest copies of each, so a row added since stays."""
        dead = self._dead
        rows: list[Any] = []
        keys: list[bytes] = []
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


class _Frozen:
    """Live rows as data (frozen) -> the packed forms they are held under."""

    __slots__ = ("_forms", "_of")

    def __init__(self) -> None:
        self._forms: dict[Hashable, dict[bytes, None]] = {}
        self._of: dict[bytes, Hashable] = {}

    def add(self, key: bytes, row: Any) -> None:
        if key not in self._of:
            frozen = self._of[key] = freeze(row)
            self._forms.setdefault(frozen, {})[key] = None

    def forget(self, key: bytes) -> None:
        """``key`` is no longer held."""
        frozen = self._of.pop(key, None)
        if frozen is not None:
            forms = self._forms[frozen]
            del forms[key]
            if not forms:
                del self._forms[frozen]

    def forms(self, row: Any) -> list[bytes]:
        """The packed forms of the live rows equal to ``row`` as data."""
        return list(self._forms.get(freeze(row), ()))


def _packed(value: Any) -> bytes:
    try:
        return _pack(value)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode value: {exc}") from exc


class _Missing:
    """No value held (None may be one)."""


_MISSING: Any = _Missing()


def _check_key(key: Any) -> None:
    try:
        hash(key)
    except TypeError:
        raise ValueError(f"a {type(key).__name__} cannot be a table's key") from None
