"""The kept index of a big table: each row (or value) packed once. Pure.

:func:`zdse.node.delta.diff` freezes every row of both versions at each publish,
some 20 us a row: seconds for a million rows. A :class:`TableIndex` packs each
row of a version once, with msgpack (its bytes are the row's identity: equal
rows pack equal), and is kept with the version it indexes. The next diff then
packs only the new version, and compares packed rows:

- rows in place: a list table whose rows mostly keep their positions (a poll
  that sorts its rows, a file rewritten) compares row ``i`` with row ``i``, in
  C; only the rows that differ are looked at in Python;
- otherwise: multisets of packed rows (sets when no row repeats).

Everything long is a generator that yields between slices of
:data:`SLICE_ROWS` rows, so a shell can run it on its event loop without a
pause longer than one slice (:func:`run` drives one to its end at once).
Results equal :func:`zdse.node.delta.diff` and :func:`zdse.node.delta.apply` as data.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Generator, Hashable
from itertools import accumulate, compress, islice
from operator import ne
from typing import Any, TypeVar

import msgpack

from zdse.errors import ProtocolError
from zdse.node import delta as deltas

__all__ = [
    "INDEX_MIN_ROWS", "SLICED_ROWS", "SLICE_ROWS", "TableIndex", "apply", "apply_rows", "diff",
    "index", "is_rows", "run",
]

#: Rows handled between two yields: packing a 13-column row takes about
#: 0.6 us, so a slice keeps the caller's loop busy some 6 ms, under a
#: quarter of even a fast heartbeat (0.2 s) on a machine loaded ten times.
SLICE_ROWS = 10_000

#: Tables from this many rows are prepared in slices by a shell (a Bus
#: publishes them between loop turns, and applies a delta to a view this
#: big the same way): below it, the whole job takes less than a few slices
#: and is done at once.
SLICED_ROWS = 50_000

#: Rows copied between two yields when a view is rebuilt: a copy is a
#: pointer each, some ten times cheaper than packing a row.
_COPY_ROWS = 5 * SLICE_ROWS

#: Tables below this many rows are diffed and applied the plain way
#: (:mod:`zdse.node.delta`): an index would cost more than it saves.
INDEX_MIN_ROWS = 1_000

#: Positions that may differ for the in-place comparison to be worth it;
#: past this share of the rows, multisets are cheaper.
_IN_PLACE_SHARE = 4

_pack = msgpack.Packer(use_bin_type=True).pack

T = TypeVar("T")
Steps = Generator[None, None, T]


class TableIndex:
    """The packed form of one version of a table.

    Attributes:
        rows: for a list table, each row packed, aligned with the rows.
        keys: for a dict table, each key's value packed.
        size: the bytes of all packed rows (or keys and values).
        largest: the bytes of the largest packed row, if known (else -1).
    """

    __slots__ = ("keys", "largest", "rows", "size")

    def __init__(self, rows: list[bytes] | None = None,
                 keys: dict[Hashable, bytes] | None = None, size: int = 0,
                 largest: int = -1) -> None:
        self.rows = rows
        self.keys = keys
        self.size = size
        self.largest = largest


def run(steps: Steps[T]) -> T:
    """Drive a sliced computation to its end at once; return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _packed(values: list[Any]) -> Steps[list[bytes]]:
    out, _, _ = yield from _measured(values)
    return out


def _measured(values: list[Any]) -> Steps[tuple[list[bytes], int, int]]:
    """Each value packed, their total size and the largest, in slices."""
    out: list[bytes] = []
    size = largest = 0
    try:
        for start in range(0, len(values), SLICE_ROWS):
            chunk = list(map(_pack, values[start:start + SLICE_ROWS]))
            sizes = list(map(len, chunk))
            size += sum(sizes)
            largest = max(largest, max(sizes, default=0))
            out += chunk
            if start + SLICE_ROWS < len(values):
                yield
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode a row: {exc}") from exc
    return out, size, largest


def index(data: Any) -> Steps[TableIndex | None]:
    """Index ``data`` (None for anything but a list or dict table).

    Raises:
        ProtocolError: a row msgpack cannot represent.
    """
    if isinstance(data, list):
        rows, size, largest = yield from _measured(data)
        return TableIndex(rows=rows, size=size, largest=largest)
    if isinstance(data, dict):
        keys = list(data)
        values = yield from _packed(list(data.values()))
        packed_keys = yield from _packed(keys)
        size = sum(map(len, values)) + sum(map(len, packed_keys))
        return TableIndex(keys=dict(zip(keys, values, strict=True)), size=size)
    return None


def diff(old: Any, old_index: TableIndex | None, new: Any,
         new_index: TableIndex | None) -> Steps[list[Any] | None]:
    """The delta from ``old`` to ``new`` (None if no change), as :func:`zdse.node.delta.diff`."""
    if old_index is None or new_index is None:
        return deltas.diff(old, new)
    if old_index.rows is not None and new_index.rows is not None:
        return (yield from _diff_rows(old, old_index.rows, new, new_index.rows))
    if old_index.keys is not None and new_index.keys is not None:
        return (yield from _diff_keys(new, old_index.keys, new_index.keys))
    return [deltas.REPLACE, new]


def _diff_rows(old: list[Any], before: list[bytes], new: list[Any],
               after: list[bytes]) -> Steps[list[Any] | None]:
    if len(before) == len(after):
        # Rows in place: only the positions that differ can change anything.
        where: list[int] = []
        for start in range(0, len(after), SLICE_ROWS):
            stop = start + SLICE_ROWS
            where.extend(compress(range(start, min(stop, len(after))),
                                  map(ne, before[start:stop], after[start:stop])))
            yield
        if not where:
            return None
        if len(where) * _IN_PLACE_SHARE <= len(after):
            gone = Counter(before[i] for i in where)
            came = Counter(after[i] for i in where)
            added_c, removed_c = came - gone, gone - came
            if not added_c and not removed_c:
                return None  # rows swapped places: the same multiset
            yield
            added = _pick_at(new, after, where, added_c)
            yield
            removed = _pick_at(old, before, where, removed_c)
            return _rows_delta(new, added, removed)
    added_m, removed_m = yield from _multiset_minus(before, after)
    if not added_m and not removed_m:
        return None
    added = yield from _pick(new, after, added_m)
    removed = yield from _pick(old, before, removed_m)
    return _rows_delta(new, added, removed)


def _rows_delta(new: list[Any], added: list[Any], removed: list[Any]) -> list[Any]:
    # A delta bigger than the table is worse than the table itself.
    if len(added) + len(removed) > len(new):
        return [deltas.REPLACE, new]
    return [deltas.ROWS, added, removed]


def _pick_at(rows: list[Any], packed: list[bytes], where: list[int],
             wanted: Counter[bytes]) -> list[Any]:
    out = []
    for i in where:
        key = packed[i]
        if wanted[key] > 0:
            wanted[key] -= 1
            out.append(rows[i])
    return out


def _pick(rows: list[Any], packed: list[bytes], wanted: Counter[bytes]) -> Steps[list[Any]]:
    """The rows whose packed form is in ``wanted``, with multiplicity."""
    out: list[Any] = []
    if not wanted:
        return out
    for start in range(0, len(packed), SLICE_ROWS):
        stop = start + SLICE_ROWS
        hits = compress(range(start, min(stop, len(packed))),
                        map(wanted.__contains__, packed[start:stop]))
        out.extend(_pick_at(rows, packed, list(hits), wanted))
        yield
    return out


def _multiset_minus(before: list[bytes],
                    after: list[bytes]) -> Steps[tuple[Counter[bytes], Counter[bytes]]]:
    """``(after - before, before - after)`` as multisets of packed rows, sliced."""
    old: set[bytes] = set()
    new: set[bytes] = set()
    for packed, into in ((before, old), (after, new)):
        for start in range(0, len(packed), SLICE_ROWS):
            into.update(packed[start:start + SLICE_ROWS])
            yield
    if len(old) == len(before) and len(new) == len(after):
        # No row repeats (the usual table): sets say it all, in C.
        added: set[bytes] = set()
        removed: set[bytes] = set()
        for source, other, into in ((after, old, added), (before, new, removed)):
            for start in range(0, len(source), SLICE_ROWS):
                into.update(set(source[start:start + SLICE_ROWS]).difference(other))
                yield
        return Counter(added), Counter(removed)
    counts_old: Counter[bytes] = Counter()
    counts_new: Counter[bytes] = Counter()
    for packed, counts in ((before, counts_old), (after, counts_new)):
        for start in range(0, len(packed), SLICE_ROWS):
            counts.update(packed[start:start + SLICE_ROWS])
            yield
    plus: Counter[bytes] = Counter()
    minus: Counter[bytes] = Counter()
    for counts, against, result in ((counts_new, counts_old, plus),
                                    (counts_old, counts_new, minus)):
        items = iter(counts.items())
        while batch := list(islice(items, SLICE_ROWS)):
            for key, n in batch:
                left = n - against.get(key, 0)
                if left > 0:
                    result[key] = left
            yield
    return plus, minus


def _diff_keys(new: dict[Any, Any], before: dict[Hashable, bytes],
               after: dict[Hashable, bytes]) -> Steps[list[Any] | None]:
    changed: dict[Any, Any] = {}
    keys = list(after.items())
    for start in range(0, len(keys), SLICE_ROWS):
        for key, packed in keys[start:start + SLICE_ROWS]:
            if before.get(key) != packed:
                changed[key] = new[key]
        yield
    removed = [key for key in before if key not in after]
    if not changed and not removed:
        return None
    return [deltas.KEYS, changed, removed]


def apply(view: Any, view_index: TableIndex | None,
          change: Any) -> tuple[Any, TableIndex | None]:
    """``(view, index)`` changed by ``change``, as :func:`zdse.node.delta.apply` (a new list).

    Raises:
        ProtocolError: the delta is malformed or does not fit the view's shape.
    """
    if view_index is None or view_index.rows is None or not is_rows(change):
        return deltas.apply(view, change), None
    return run(apply_rows(view, view_index, change))


def is_rows(change: Any) -> bool:
    """Whether ``change`` is a ``rows`` delta (the one kind an index applies)."""
    return type(change) is list and len(change) == 3 and change[0] == deltas.ROWS


def apply_rows(view: list[Any], view_index: TableIndex | None,
               change: list[Any]) -> Steps[tuple[list[Any], TableIndex]]:
    """A ``rows`` delta applied to a list view through its index, in slices.

    Builds the index first if ``view_index`` is None. ``view`` is only read:
    the result is a new list (and its index), for the caller to put in place
    once whole, so that nobody sees a delta half applied.

    Raises:
        ProtocolError: the delta is malformed, or a row cannot be packed.
    """
    added, removed = change[1], change[2]
    if not isinstance(added, list) or not isinstance(removed, list):
        raise ProtocolError("rows delta needs two arrays")
    if view_index is None or view_index.rows is None:
        view_index = yield from index(view)
        assert view_index is not None  # a list's
        assert view_index.rows is not None
    packed = view_index.rows
    gone = Counter((yield from _packed(removed)))
    yield
    added_packed = yield from _packed(added)
    yield
    size = view_index.size + sum(map(len, added_packed))
    drop: list[int] = []
    if gone:
        for start in range(0, len(packed), SLICE_ROWS):
            stop = start + SLICE_ROWS
            for i in compress(range(start, min(stop, len(packed))),
                              map(gone.__contains__, packed[start:stop])):
                key = packed[i]
                if gone[key] > 0:
                    gone[key] -= 1
                    drop.append(i)
                    size -= len(key)
            yield
    # What lies between the dropped rows, copied a stretch at a time (a
    # memory copy each): a delta removes few rows of a big view.
    kept: list[Any] = []
    kept_packed: list[bytes] = []
    start = copied = 0
    for i in [*drop, len(packed)]:
        kept += view[start:i]
        kept_packed += packed[start:i]
        copied += i - start
        start = i + 1
        if copied >= _COPY_ROWS:
            copied = 0
            yield
    kept += added
    kept_packed += added_packed
    return kept, TableIndex(rows=kept_packed, size=size)


def parts(rows: list[bytes], limit: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of packed rows, each under ``limit`` bytes.

    A row bigger than ``limit`` makes a part of its own.
    """
    ends = list(accumulate(map(len, rows)))
    out: list[tuple[int, int]] = []
    start = base = 0
    while start < len(ends):
        stop = max(bisect_right(ends, base + limit, lo=start), start + 1)
        out.append((start, stop))
        base = ends[stop - 1]
        start = stop
    return out
