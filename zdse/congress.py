"""zdse updates as Congress's events: sets of tuples inserted and deleted. Pure.

A Congress policy engine sees each table as a *set of tuples* and is told
of changes as ``(inserts, deletes)``. zdse sends a snapshot, then deltas in
one of three forms (see :mod:`zdse.node.delta`); this module turns each into the
two sets.

How a table becomes tuples (:func:`row_tuple`):

- a list table: each row is a tuple; a list row keeps its order, a dict row
  gives its values in the order of its sorted keys, a scalar is a 1-tuple;
- a dict table: each entry ``key: value`` is ``(key, *row_tuple(value))``;
- nested lists and dicts inside a row become tuples (hashable), so a row
  ``["vm1", ["10.0.0.1"]]`` is ``("vm1", ("10.0.0.1",))``;
- None (never published) is the empty table.

Rows are a multiset in zdse and a set in Congress: a row is inserted when
its first copy arrives and deleted when its last copy goes.

Use :class:`CongressView` as (or inside) a subscription callback::

    view = CongressView()

    def on_update(update):
        inserts, deletes = view.take(update)
        engine.receive_data(update.publisher, update.dataindex, inserts, deletes)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from zdse.errors import ProtocolError
from zdse.node.delta import KEYS, REPLACE, ROWS
from zdse.node.subscriptions import Update

__all__ = ["CongressTable", "CongressView", "Row", "changes", "row_tuple", "table_rows"]

#: One Congress row.
Row = tuple[Any, ...]


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(value[k])) for k in sorted(value, key=repr))
    return value


def row_tuple(row: Any) -> Row:
    """The Congress tuple of one row of a list table."""
    if isinstance(row, list | tuple):
        return tuple(_hashable(v) for v in row)
    if isinstance(row, dict):
        return tuple(_hashable(row[k]) for k in sorted(row, key=repr))
    return (_hashable(row),)


def _entry_tuple(key: Any, value: Any) -> Row:
    return (_hashable(key), *row_tuple(value))


def table_rows(data: Any) -> set[Row]:
    """The set of tuples a whole table is, to Congress.

    Raises:
        ProtocolError: ``data`` is not a table (a list, a dict or None).
    """
    if data is None:
        return set()
    if isinstance(data, list):
        return {row_tuple(r) for r in data}
    if isinstance(data, dict):
        return {_entry_tuple(k, v) for k, v in data.items()}
    raise ProtocolError(f"a {type(data).__name__} is not a table (a list or a dict)")


class CongressTable:
    """One publisher's dataindex as a set of tuples, kept up to date by deltas.

    A ``rows`` or ``keys`` delta costs what it holds, not the table's size;
    a snapshot or ``replace`` is compared with the whole table.
    """

    def __init__(self) -> None:
        self._counts: Counter[Row] = Counter()
        #: For a dict table: key -> its tuple (to delete it when it changes).
        self._entries: dict[Any, Row] = {}

    @property
    def rows(self) -> set[Row]:
        """The current set of tuples."""
        return set(self._counts)

    def reset(self, data: Any) -> tuple[set[Row], set[Row]]:
        """Take a whole table (a snapshot, a ``replace``); return (inserts, deletes).

        Raises:
            ProtocolError: ``data`` is not a table.
        """
        before = set(self._counts)
        self._counts = Counter()
        self._entries = {}
        if isinstance(data, dict):
            for key, value in data.items():
                entry = self._entries[_hashable(key)] = _entry_tuple(key, value)
                self._counts[entry] += 1
        elif isinstance(data, list):
            self._counts.update(row_tuple(r) for r in data)
        elif data is not None:
            raise ProtocolError(f"a {type(data).__name__} is not a table (a list or a dict)")
        after = set(self._counts)
        return after - before, before - after

    def apply(self, delta: Any) -> tuple[set[Row], set[Row]]:
        """Take a delta in any of its forms; return (inserts, deletes).

        Raises:
            ProtocolError: the delta is malformed or does not fit the table.
        """
        if not isinstance(delta, list) or not delta:
            raise ProtocolError("a delta is a non-empty array")
        op = delta[0]
        if op == REPLACE and len(delta) == 2:
            return self.reset(delta[1])
        if len(delta) != 3:
            raise ProtocolError(f"a {op!r} delta has 3 fields")
        if op == ROWS and isinstance(delta[1], list) and isinstance(delta[2], list):
            return self._rows(delta[1], delta[2])
        if op == KEYS and isinstance(delta[1], dict) and isinstance(delta[2], list):
            return self._keys(delta[1], delta[2])
        raise ProtocolError(f"cannot take delta {op!r}")

    def _rows(self, added: list[Any], removed: list[Any]) -> tuple[set[Row], set[Row]]:
        if self._entries:
            raise ProtocolError("a rows delta for a dict table")
        counts = self._counts
        touched = {row_tuple(r) for r in added} | {row_tuple(r) for r in removed}
        had = {t for t in touched if counts[t] > 0}
        for row in removed:
            t = row_tuple(row)
            if counts[t] > 0:
                counts[t] -= 1
                if not counts[t]:
                    del counts[t]
        counts.update(row_tuple(r) for r in added)
        has = {t for t in touched if counts[t] > 0}
        return has - had, had - has

    def _keys(self, changed: dict[Any, Any], removed: list[Any]) -> tuple[set[Row], set[Row]]:
        if self._counts and not self._entries:
            raise ProtocolError("a keys delta for a list table")
        inserts: set[Row] = set()
        deletes: set[Row] = set()
        for key in removed:
            old = self._entries.pop(_hashable(key), None)
            if old is not None:
                del self._counts[old]
                deletes.add(old)
        for key, value in changed.items():
            new = _entry_tuple(key, value)
            old = self._entries.get(_hashable(key))
            if old == new:
                continue
            if old is not None:
                del self._counts[old]
                deletes.add(old)
            self._entries[_hashable(key)] = new
            self._counts[new] = 1
            inserts.add(new)
        # A key removed and set again in one delta is a change, not two.
        both = inserts & deletes
        return inserts - both, deletes - both


def changes(before: Any, delta: Any) -> tuple[set[Row], set[Row]]:
    """The (inserts, deletes) that ``delta`` makes to table ``before``.

    Raises:
        ProtocolError: the delta is malformed or does not fit ``before``.
    """
    table = CongressTable()
    table.reset(before)
    return table.apply(delta)


class CongressView:
    """Every feed of one or more subscriptions, as Congress tables.

    :meth:`take` turns each :class:`~zdse.node.subscriptions.Update` into the
    ``(inserts, deletes)`` it makes to its publisher's table: a snapshot is
    compared with what was held (a resync inserts and deletes only what
    changed), a delta is taken as it is, a ``lost`` publisher's rows are all
    deleted, and ``noroute`` and ``unpublished`` change nothing.
    """

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], CongressTable] = {}

    def take(self, update: Update) -> tuple[set[Row], set[Row]]:
        """Apply one update; return (inserts, deletes) for its publisher's dataindex.

        Raises:
            ProtocolError: a delta that does not fit the table held.
        """
        fkey = (update.publisher, update.dataindex)
        if update.kind == "lost":
            table = self.tables.pop(fkey, None)
            return (set(), table.rows) if table is not None else (set(), set())
        if update.kind not in ("snapshot", "delta"):
            return set(), set()
        table = self.tables.setdefault(fkey, CongressTable())
        if update.kind == "snapshot":
            return table.reset(update.data)
        return table.apply(update.data)
