"""The kept index of big tables: its diffs and applies equal zdse.delta's."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zdse.node import delta, tableindex
from zdse.node.tableindex import TableIndex, run

cell = st.integers(0, 4) | st.text("ab", max_size=2) | st.none()
rows = st.lists(st.lists(cell, max_size=3), max_size=12)
maps = st.dictionaries(st.text("abc", max_size=2), st.integers(0, 3) | rows, max_size=6)


def _index(data: Any) -> TableIndex | None:
    return run(tableindex.index(data))


def _diff(old: Any, new: Any) -> list[Any] | None:
    return run(tableindex.diff(old, _index(old), new, _index(new)))


@given(rows | maps, rows | maps)
def test_indexed_diff_applies_to_the_new_data(old: Any, new: Any) -> None:
    """For any two tables, the indexed delta applied to the old gives the new."""
    change = _diff(old, new)
    if change is None:
        assert delta.same(old, new)
    else:
        assert delta.same(delta.apply(old, change), new)


@given(rows, rows)
def test_indexed_apply_equals_plain_apply_and_keeps_its_index(old: Any, new: Any) -> None:
    """The subscriber's indexed apply gives delta.apply's rows, and the index of its result."""
    change = _diff(old, new)
    if change is None:
        return
    view, index = tableindex.apply(old, _index(old), change)
    assert view == delta.apply(old, change)
    if index is not None:
        fresh = _index(view)
        assert fresh is not None
        assert index.rows == fresh.rows
        assert index.size == fresh.size


@given(rows, st.data())
def test_rows_in_place_diff_names_only_changed_rows(table: list[Any], data: st.DataObject) -> None:
    """Changing rows in place gives a delta of those rows only (rows that repeat cancel out)."""
    if not table:
        return
    i = data.draw(st.integers(0, len(table) - 1))
    new = list(table)
    new[i] = [*table[i], "changed"]
    change = _diff(table, new)
    assert change == ["rows", [new[i]], [table[i]]] or change == ["replace", new]


def test_slices_yield_so_a_shell_can_interleave(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table of several slices yields between them, and the result still holds."""
    monkeypatch.setattr(tableindex, "SLICE_ROWS", 10)
    old = [[i, "x"] for i in range(95)]
    new = [*old[:50], [50, "y"], *old[51:], [1000, "new"]]
    steps = tableindex.index(new)
    yields = 0
    while True:
        try:
            next(steps)
            yields += 1
        except StopIteration as done:
            new_index = done.value
            break
    assert yields >= 9
    change = run(tableindex.diff(old, _index(old), new, new_index))
    assert change == ["rows", [[50, "y"], [1000, "new"]], [[50, "x"]]]


def test_an_unpackable_row_is_a_protocol_error() -> None:
    """A row msgpack cannot hold is refused with the library's error."""
    from zdse.errors import ProtocolError

    with pytest.raises(ProtocolError, match="cannot encode"):
        run(tableindex.index([[object()]]))


@given(rows, st.text(max_size=3), st.integers(0, 2**40))
def test_a_message_built_from_packed_rows_is_the_same_bytes(table: list[Any], sid: str,
                                                            seq: int) -> None:
    """A snapshot or replace delta joined from packed rows equals the one packed whole."""
    from zdse.wire import codec

    index = TableIndex(rows=[msgpack.packb(r) for r in table])
    assert index.rows is not None
    snap = codec.Snapshot(sid, "vms", "e", seq, table)
    assert codec.encode_with_rows((sid, "vms", "e", seq), index.rows) == codec.encode_one(snap)
    replace = codec.Delta("vms", "e", seq, ["replace", table])
    assert codec.encode_with_rows(("vms", "e", seq), index.rows, "replace") \
        == codec.encode_one(replace)
