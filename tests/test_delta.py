"""Deltas between versions of a table: apply(old, diff(old, new)) == new."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zdse.errors import ProtocolError
from zdse.node import delta

rows = st.lists(st.lists(st.integers(0, 4) | st.text("ab", max_size=2), max_size=3), max_size=8)
maps = st.dictionaries(st.text("abc", max_size=2), st.integers(0, 3) | rows, max_size=6)
anything = rows | maps | st.integers() | st.none() | st.text(max_size=3)


@given(anything, anything)
def test_apply_of_diff_gives_the_new_data(old: object, new: object) -> None:
    """For any two versions, applying their delta to the old gives the new."""
    change = delta.diff(old, new)
    if change is None:
        assert delta.same(old, new)
    else:
        assert delta.same(delta.apply(old, change), new)


@given(rows)
def test_no_change_means_no_delta(table: list[list[object]]) -> None:
    """The same rows in another order are no change at all."""
    assert delta.diff(table, list(reversed(table))) is None


def test_one_changed_row_is_one_row_out_and_one_in() -> None:
    """A list table's delta names only the rows that changed."""
    old = [["vm1", "on"], ["vm2", "on"], ["vm3", "on"]]
    new = [["vm1", "on"], ["vm2", "off"], ["vm3", "on"]]
    assert delta.diff(old, new) == ["rows", [["vm2", "off"]], [["vm2", "on"]]]


def test_duplicate_rows_count_as_a_multiset() -> None:
    """Removing one of two equal rows removes exactly one."""
    assert delta.diff([[1], [1]], [[1]]) == ["rows", [], [[1]]]
    assert delta.apply([[1], [1]], ["rows", [], [[1]]]) == [[1]]


def test_dict_tables_send_changed_and_removed_keys() -> None:
    """A dict table's delta carries set keys and removed keys."""
    assert delta.diff({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == ["keys", {"b": 3, "c": 4}, []]
    assert delta.diff({"a": 1}, {}) == ["keys", {}, ["a"]]


def test_a_change_of_shape_is_sent_whole() -> None:
    """From a list to a dict (or scalars), the delta replaces the data."""
    assert delta.diff([[1]], {"a": 1}) == ["replace", {"a": 1}]


@pytest.mark.parametrize(
    ("data", "change"),
    [([], "x"), ([], []), ([], ["rows", 1, []]), ({}, ["rows", [], []]), ([], ["keys", {}, []]),
     (1, ["bogus"])],
)
def test_malformed_deltas_are_protocol_errors(data: object, change: object) -> None:
    """A delta that does not fit its data raises ProtocolError."""
    with pytest.raises(ProtocolError):
        delta.apply(data, change)
