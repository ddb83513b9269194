"""Deltas between two versions of published data. Pure.

A *table* is either a list of rows (a multiset: order is not part of the
data, as in Congress) or a dict (keys to values). Anything else, or a change
of shape, is sent whole. The wire forms are::

    ["rows", added_rows, removed_rows]      # list tables
    ["keys", {key: new_value}, [removed]]    # dict tables
    ["replace", data]                        # anything else
    ["snapshot"]                             # too big for one message: ask a snapshot

``apply(old, diff(old, new))`` equals ``new`` (as a multiset for lists).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from typing import Any

from zdse.errors import ProtocolError

__all__ = ["apply", "diff", "freeze", "patch", "same"]

ROWS = "rows"
KEYS = "keys"
REPLACE = "replace"
#: A change too big for one message: the subscriber asks for a snapshot
#: (which travels in parts); :func:`apply` cannot apply it.
SNAPSHOT = "snapshot"


def _freeze(value: Any) -> Hashable:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return ("\x00map", tuple(sorted((repr(k), _freeze(v)) for k, v in value.items())))
    return value  # type: ignore[no-any-return]


#: A row's hashable form: equal rows (as data) freeze equal.
freeze = _freeze


def _row_counts(rows: list[Any]) -> Counter[Hashable]:
    return Counter(_freeze(row) for row in rows)


def same(a: Any, b: Any) -> bool:
    """Tell whether two versions are equal as data (list tables as multisets)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and _row_counts(a) == _row_counts(b)
    return bool(a == b) and type(a) is type(b)


def diff(old: Any, new: Any) -> list[Any] | None:
    """Return the delta from ``old`` to ``new``, or None when nothing changed."""
    if isinstance(old, list) and isinstance(new, list):
        before, after = _row_counts(old), _row_counts(new)
        if before == after:
            return None
        added_keys = after - before
        removed_keys = before - after
        added = _pick(new, added_keys)
        removed = _pick(old, removed_keys)
        # A delta bigger than the table is worse than the table itself.
        if len(added) + len(removed) > len(new):
            return [REPLACE, new]
        return [ROWS, added, removed]
    if isinstance(old, dict) and isinstance(new, dict):
        changed = {k: v for k, v in new.items() if k not in old or not same(old[k], v)}
        removed = [k for k in old if k not in new]
        if not changed and not removed:
            return None
        return [KEYS, changed, removed]
    if same(old, new):
        return None
    return [REPLACE, new]


def _pick(rows: list[Any], wanted: Counter[Hashable]) -> list[Any]:
    """Return the original rows whose frozen form is in ``wanted``, with multiplicity."""
    left = Counter(wanted)
    out = []
    for row in rows:
        key = _freeze(row)
        if left[key] > 0:
            left[key] -= 1
            out.append(row)
    return out


def apply(data: Any, delta: Any) -> Any:
    """Return ``data`` changed by ``delta`` (a new value; ``data`` is not mutated).

    Raises:
        ProtocolError: the delta is malformed or does not fit the data's shape.
    """
    if isinstance(data, list | dict):
        data = data.copy()  # the table's own containers: its rows are never changed
    return patch(data, delta)


def patch(data: Any, delta: Any) -> Any:
    """Change ``data`` by ``delta`` in place where it can; return the new data.

    What :func:`apply` gives, at a cost that follows the change rather than
    the table: a ``keys`` delta changes the dict it is given, a ``rows``
    delta the list (removed rows are looked for from its start, where a
    window keeps its oldest), a ``replace`` returns a copy of its value. ``data`` is
    left as it was when the delta is refused.

    Raises:
        ProtocolError: the delta is malformed or does not fit the data's shape.
    """
    if not isinstance(delta, list) or not delta:
        raise ProtocolError(f"delta must be a non-empty array, got {type(delta).__name__}")
    op = delta[0]
    if op == REPLACE and len(delta) == 2:
        # Not the delta's own list or map: the view changes in place later,
        # and the delta was handed to callbacks too.
        value = delta[1]
        return value.copy() if isinstance(value, list | dict) else value
    if op == ROWS and len(delta) == 3 and isinstance(data, list):
        added, removed = delta[1], delta[2]
        if not isinstance(added, list) or not isinstance(removed, list):
            raise ProtocolError("rows delta needs two arrays")
        if removed:
            at = _find(data, removed)
            if len(at) <= 8:
                for i in reversed(at):
                    del data[i]
            else:  # one pass, not a move of the tail per row
                drop = set(at)
                data[:] = [row for i, row in enumerate(data) if i not in drop]
        data.extend(added)
        return data
    if op == KEYS and len(delta) == 3 and isinstance(data, dict):
        changed, removed = delta[1], delta[2]
        if not isinstance(changed, dict) or not isinstance(removed, list):
            raise ProtocolError("keys delta needs a map and an array")
        for key in removed:
            try:
                data.pop(key, None)
            except TypeError:  # an unhashable key from the wire: held by no dict
                continue
        data.update(changed)
        return data
    raise ProtocolError(f"cannot apply delta {op!r} to {type(data).__name__}")


def _find(rows: list[Any], removed: list[Any]) -> list[int]:
    """The positions of the rows to remove (one per removed row held), in order.

    A few rows are compared with ``==`` (equality as data, like the frozen
    forms) from the start, where a window holds its oldest: a window's
    delta then costs a comparison or two. Many are counted by frozen form,
    in one pass.
    """
    at: list[int] = []
    if len(removed) <= 4:
        for gone in removed:
            for i, row in enumerate(rows):
                if i not in at and row == gone:
                    at.append(i)
                    break
        return sorted(at)
    counts = _row_counts(removed)
    left = len(removed)
    for i, row in enumerate(rows):
        key = _freeze(row)
        if counts[key] > 0:
            counts[key] -= 1
            at.append(i)
            left -= 1
            if not left:
                break
    return at
