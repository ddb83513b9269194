"""zdse deltas as Congress's (inserts, deletes): every delta form, and against a brute force."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zdse.congress import CongressTable, CongressView, changes, row_tuple, table_rows
from zdse.errors import ProtocolError
from zdse.node import delta
from zdse.node.subscriptions import Update


def _update(kind: str, data: Any, publisher: str = "p", dataindex: str = "t") -> Update:
    return Update("sid", publisher, dataindex, kind, 1, data, None)


@pytest.mark.parametrize(
    ("before", "change", "inserts", "deletes"),
    [
        # rows: added and removed rows; a duplicate's copy going is no delete
        ([["a", 1], ["b", 2]], ["rows", [["c", 3]], [["a", 1]]], {("c", 3)}, {("a", 1)}),
        ([["a"], ["a"]], ["rows", [], [["a"]]], set(), set()),
        ([["a"]], ["rows", [["a"]], []], set(), set()),
        ([], ["rows", [{"id": "s1", "ip": ["10.0.0.1"]}], []], {("s1", ("10.0.0.1",))}, set()),
        # rows: one removed and added again in the same delta changes nothing
        ([["a"]], ["rows", [["a"]], [["a"]]], set(), set()),
        # keys: a changed key deletes its old tuple and inserts its new one
        ({"vm1": "on", "vm2": "on"}, ["keys", {"vm1": "off", "vm3": "on"}, ["vm2"]],
         {("vm1", "off"), ("vm3", "on")}, {("vm1", "on"), ("vm2", "on")}),
        ({"vm1": {"state": "on", "host": "h1"}}, ["keys", {"vm1": {"state": "off", "host": "h1"}},
                                                 []],
         {("vm1", "h1", "off")}, {("vm1", "h1", "on")}),
        ({"vm1": "on"}, ["keys", {"vm1": "on"}, []], set(), set()),
        ({"vm1": "on"}, ["keys", {}, ["nope"]], set(), set()),
        # replace: compared with the whole table
        ([["a"], ["b"]], ["replace", [["b"], ["c"]]], {("c",)}, {("a",)}),
        ([["a"]], ["replace", {"k": 1}], {("k", 1)}, {("a",)}),
        (None, ["replace", [["a"]]], {("a",)}, set()),
        ([["a"]], ["replace", None], set(), {("a",)}),
    ],
)
def test_changes_of_each_delta_form(before: Any, change: Any, inserts: set[Any],
                                    deletes: set[Any]) -> None:
    """Each delta form gives the tuples it inserts and deletes, as sets."""
    assert changes(before, change) == (inserts, deletes)


tables = st.one_of(
    st.lists(st.lists(st.sampled_from(["a", "b", "c", 1, 2]), max_size=2), max_size=6),
    st.dictionaries(st.sampled_from(["k1", "k2", "k3"]),
                    st.sampled_from(["x", "y", 1, None]), max_size=3),
)


@given(tables, tables)
def test_changes_match_the_sets_before_and_after_whatever_the_diff(old: Any, new: Any) -> None:
    """For any two tables, the delta zdse sends gives exactly new - old and old - new."""
    change = delta.diff(old, new)
    if change is None:
        return
    before, after = table_rows(old), table_rows(new)
    assert changes(old, change) == (after - before, before - after)


def test_a_table_kept_over_many_deltas_equals_the_view() -> None:
    """A CongressTable fed a snapshot and deltas holds the set of the subscriber's view."""
    table = CongressTable()
    view: Any = [["a"], ["b"]]
    table.reset(view)
    for new in ([["b"], ["c"]], [["c"], ["c"], ["d"]], [["d"]], []):
        change = delta.diff(view, new)
        assert change is not None
        table.apply(change)
        view = delta.apply(view, change)
        assert table.rows == table_rows(view)


def test_a_view_turns_updates_into_events_per_publisher() -> None:
    """Snapshots insert what is new, deltas what they hold, lost deletes every row of that
    publisher; noroute and unpublished change nothing; a resync snapshot gives only the
    difference."""
    view = CongressView()
    assert view.take(_update("unpublished", None)) == (set(), set())
    assert view.take(_update("snapshot", [["a"], ["b"]])) == ({("a",), ("b",)}, set())
    assert view.take(_update("snapshot", [["a"], ["b"]], publisher="q")) == (
        {("a",), ("b",)}, set())
    assert view.take(_update("delta", ["rows", [["c"]], [["a"]]])) == ({("c",)}, {("a",)})
    assert view.take(_update("snapshot", [["b"], ["d"]])) == ({("d",)}, {("c",)})
    assert view.take(_update("lost", None)) == (set(), {("b",), ("d",)})
    assert view.take(_update("noroute", "key")) == (set(), set())
    assert set(view.tables) == {("q", "t")}


def test_deltas_that_do_not_fit_raise_protocol_errors() -> None:
    """A malformed delta, or one of the other table shape, is a ProtocolError."""
    table = CongressTable()
    table.reset({"k": 1})
    for bad in ([], "rows", ["rows", [["a"]], []], ["keys", [], []], ["what", 1, 2]):
        with pytest.raises(ProtocolError):
            table.apply(bad)
    with pytest.raises(ProtocolError):
        table.reset("not a table")


def test_row_tuples() -> None:
    """List rows keep their order, dict rows are ordered by key, nested values are tuples."""
    assert row_tuple(["a", [1, 2]]) == ("a", (1, 2))
    assert row_tuple({"b": 2, "a": {"x": [1]}}) == ((("x", (1,)),), 2)
    assert row_tuple("scalar") == ("scalar",)
