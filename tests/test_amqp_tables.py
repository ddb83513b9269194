"""The amqp bridge's tables: recent windows, latest-state tables, and the deltas they make."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zdse_nodes.amqp_envelope import Notification
from zdse_nodes.amqp_tables import (
    EVENT_TYPES,
    KeyChange,
    Latest,
    RowChange,
    TableConfig,
    Tables,
    Window,
    latest_name,
)

from zdse.node import delta


def note(event_type: str = "compute.instance.update", message_id: str = "m1",
         payload: Any = None, timestamp: str = "t") -> Notification:
    """A notification with the fields these tests care about."""
    return Notification(message_id=message_id, event_type=event_type, priority="INFO",
                        publisher_id="compute.host1", timestamp=timestamp,
                        payload=payload if payload is not None else {}, context={},
                        envelope="2.0")


def row(message_id: str) -> dict[str, Any]:
    """A minimal row."""
    return {"message_id": message_id}


def test_window_keeps_the_newest_rows_oldest_first() -> None:
    """Past its size the window drops the oldest row."""
    window = Window(size=3, max_bytes=1000)
    evicted = [window.add(f"m{i}", row(f"m{i}"), 1) for i in range(5)]
    assert [r["message_id"] for r in window.rows()] == ["m2", "m3", "m4"]
    assert evicted == [[], [], [], [row("m0")], [row("m1")]]


def test_window_holds_each_message_id_once() -> None:
    """A redelivered message id changes nothing."""
    window = Window(size=3, max_bytes=1000)
    assert window.add("m1", row("m1"), 1) == []
    assert window.add("m1", {"message_id": "m1", "other": True}, 1) is None
    assert window.rows() == [row("m1")]


def test_window_byte_bound_drops_oldest_but_keeps_the_newest() -> None:
    """Past its byte bound the window drops old rows; a lone oversized row stays."""
    window = Window(size=100, max_bytes=10)
    window.add("a", row("a"), 4)
    window.add("b", row("b"), 4)
    window.add("c", row("c"), 4)
    assert [r["message_id"] for r in window.rows()] == ["b", "c"]
    assert window.bytes == 8
    window.add("huge", row("huge"), 50)
    assert [r["message_id"] for r in window.rows()] == ["huge"]


@pytest.mark.parametrize("bad", [(0, 10), (10, 0)])
def test_bounds_below_one_are_refused(bad: tuple[int, int]) -> None:
    """A window of no rows or no bytes is a configuration mistake."""
    with pytest.raises(ValueError, match="at least 1"):
        Window(*bad)


@pytest.mark.parametrize(
    ("payload", "taken", "key"),
    [
        ({"instance_id": "i-1"}, True, "i-1"),
        ({"instance_id": 7}, True, "7"),
        ({"instance_id": 1.5}, True, "1.5"),
        ({"instance_id": True}, False, None),
        ({"instance_id": None}, False, None),
        ({"instance_id": ["i-1"]}, False, None),
        ({"other": "i-1"}, False, None),
        (["instance_id"], False, None),
        ("instance_id", False, None),
    ],
)
def test_latest_keys_rows_by_a_scalar_payload_field(
    payload: Any, taken: bool, key: str | None
) -> None:
    """Only a string or number field keys a latest-state table."""
    latest = Latest("instance_id", size=10, max_bytes=1000)
    change = latest.add(payload, row("m1"), 1)
    assert (change is not None) is taken
    assert latest.table() == ({key: row("m1")} if taken else {})
    if change is not None:
        assert (change.put, change.delete) == ({key: row("m1")}, [])


def test_latest_replaces_a_key_and_evicts_the_least_recently_changed() -> None:
    """An update moves its key to the young end; the oldest unchanged key goes first."""
    latest = Latest("id", size=2, max_bytes=1000)
    latest.add({"id": "a"}, row("m1"), 1)
    latest.add({"id": "b"}, row("m2"), 1)
    latest.add({"id": "a"}, row("m3"), 1)
    change = latest.add({"id": "c"}, row("m4"), 1)
    assert latest.table() == {"a": row("m3"), "c": row("m4")}
    assert change is not None
    assert (change.put, change.delete) == ({"c": row("m4")}, ["b"])
    assert latest.bytes == 2


def test_take_gives_the_changes_of_window_latest_and_event_types() -> None:
    """One notification adds a row to its window, a key to its latest table and @event_types."""
    tables = Tables(TableConfig(window=10, keys={"compute.instance.update": ("instance_id",)}))
    n = note(payload={"instance_id": "i-1", "state": "building"}, timestamp="t1")
    assert tables.take(n, 100) == [
        RowChange("compute.instance.update", [n.row()], []),
        KeyChange(latest_name("compute.instance.update", "instance_id"), {"i-1": n.row()}, []),
        KeyChange(EVENT_TYPES, {"compute.instance.update": {"count": 1, "last": "t1"}}, []),
    ]
    other = note(event_type="port.create.end", message_id="m2", timestamp="t2")
    assert tables.take(other, 100) == [
        RowChange("port.create.end", [other.row()], []),
        KeyChange(EVENT_TYPES, {"port.create.end": {"count": 1, "last": "t2"}}, []),
    ]


def test_initial_tables_are_empty_and_named_from_the_config() -> None:
    """Configured event types start as empty tables, so early subscribers get a snapshot."""
    tables = Tables(TableConfig(keys={"a.b": ("x", "y")}, event_types=("c.d", "a.b")))
    assert tables.initial() == [
        ("a.b", []), ("a.b@x", {}), ("a.b@y", {}), ("c.d", []), (EVENT_TYPES, {})
    ]


def test_redelivery_publishes_nothing_and_is_counted() -> None:
    """The same message id again (AMQP at-least-once) is a duplicate, not a new row."""
    tables = Tables(TableConfig())
    assert tables.take(note(), 1)
    assert tables.take(note(), 1) == []
    assert tables.duplicates == 1


def test_notifications_without_message_id_each_get_a_row() -> None:
    """Senders without oslo's ids still get one row per notification."""
    tables = Tables(TableConfig())
    tables.take(note(message_id=""), 1)
    (added, *_) = tables.take(note(message_id=""), 1)
    assert isinstance(added, RowChange)
    assert added.add[0]["message_id"] == "local-2"
    window = tables.windows["compute.instance.update"].rows()
    assert [r["message_id"] for r in window] == ["local-1", "local-2"]


def test_unkeyed_payloads_are_counted_and_stay_in_the_window() -> None:
    """A payload without the key field is in the window, not in the latest-state table."""
    tables = Tables(TableConfig(keys={"compute.instance.update": ("instance_id",)}))
    out = {c.dataindex: c for c in tables.take(note(payload={"no": "key"}), 1)}
    assert "compute.instance.update@instance_id" not in out
    assert len(tables.windows["compute.instance.update"]) == 1
    assert tables.unkeyed == 1


def test_event_types_past_the_bound_are_refused() -> None:
    """A sender inventing event types cannot grow the bridge without bound."""
    tables = Tables(TableConfig(max_event_types=2))
    assert tables.take(note(event_type="a", message_id="1"), 1)
    assert tables.take(note(event_type="b", message_id="2"), 1)
    assert tables.take(note(event_type="c", message_id="3"), 1) == []
    assert tables.take(note(event_type="a", message_id="4"), 1)
    assert tables.refused == 1


# --- properties --------------------------------------------------------------

steps = st.lists(
    st.tuples(st.sampled_from(["a.x", "b.y", "c.z"]), st.integers(0, 15), st.integers(0, 3)),
    max_size=60,
)


@given(steps, st.integers(1, 6), st.integers(1, 4))
def test_tables_match_a_model_and_each_notification_is_one_small_change(
    script: list[tuple[str, int, int]], size: int, latest_size: int
) -> None:
    """Windows equal a model; each notification adds just its row; changes rebuild every table."""
    tables = Tables(TableConfig(window=size, keys={"a.x": ("k",)}, latest_size=latest_size))
    model: dict[str, list[str]] = {}
    rebuilt: dict[str, Any] = {}
    for event_type, number, key in script:
        message_id = f"m{number}"
        n = note(event_type=event_type, message_id=message_id, payload={"k": key})
        ids = model.setdefault(event_type, [])
        new = message_id not in ids
        if new:
            ids.append(message_id)
            del ids[:-size]
        changes = tables.take(n, 1)
        assert bool(changes) == new
        if not new:
            continue
        window_change = changes[0]
        assert isinstance(window_change, RowChange)
        assert window_change.add == [n.row()]
        assert len(window_change.remove) <= 1
        for change in changes:
            if isinstance(change, RowChange):
                wire = ["rows", change.add, change.remove]
                rebuilt[change.dataindex] = delta.apply(rebuilt.get(change.dataindex, []), wire)
            else:
                wire = ["keys", change.put, change.delete]
                rebuilt[change.dataindex] = delta.apply(rebuilt.get(change.dataindex, {}), wire)
        assert [r["message_id"] for r in tables.windows[event_type].rows()] == ids
    for event_type, window in tables.windows.items():
        assert delta.same(rebuilt[event_type], window.rows())
    for name, latest in tables.latest.items():
        assert rebuilt[name] == latest.table()
    assert rebuilt.get(EVENT_TYPES, {}) == tables.event_types
