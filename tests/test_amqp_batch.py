"""The amqp bridge's batches: many notifications' changes merged into one change per table."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zdse_nodes.amqp_batch import Batch
from zdse_nodes.amqp_envelope import Notification
from zdse_nodes.amqp_tables import Change, KeyChange, RowChange, TableConfig, Tables

from zdse.node.table import KeyTable, RowTable

EVENT = "compute.instance.update"


def note(n: int, instance: int, event_type: str = EVENT) -> Notification:
    """Notification ``n`` about ``instance``."""
    return Notification(message_id=f"m{n}", event_type=event_type, priority="INFO",
                        publisher_id="compute.host1", timestamp=f"t{n}",
                        payload={"instance_id": f"i{instance}", "n": n}, context={},
                        envelope="2.0")


class Published:
    """The tables as the bus holds them, changed as the bridge changes them."""

    def __init__(self, tables: Tables) -> None:
        self.rows: dict[str, RowTable] = {}
        self.keys: dict[str, KeyTable] = {}
        for name, data in tables.initial():
            if isinstance(data, list):
                self.rows[name] = RowTable(data)
            else:
                self.keys[name] = KeyTable(data)

    def apply(self, change: Change) -> None:
        if isinstance(change, RowChange):
            table = self.rows.setdefault(change.dataindex, RowTable([]))
            table.commit(table.plan(change.add, change.remove))
        else:
            keys = self.keys.setdefault(change.dataindex, KeyTable({}))
            keys.commit(keys.plan(change.put, change.delete))

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: sorted(r["message_id"] for r in table.rows())
                               for name, table in self.rows.items()}
        out.update({name: dict(table.data) for name, table in self.keys.items()})
        return out


def bridge_tables(window: int, latest: int) -> Tables:
    """Tables with small bounds, so batches evict what they add."""
    return Tables(TableConfig(window=window, keys={EVENT: ("instance_id",)},
                              latest_size=latest, event_types=("other.event",)))


@given(
    window=st.integers(1, 6),
    latest=st.integers(1, 6),
    batches=st.lists(st.lists(st.tuples(st.integers(0, 8), st.booleans()), max_size=12),
                     max_size=6),
)
def test_merged_changes_leave_the_tables_as_the_changes_one_by_one(
    window: int, latest: int, batches: list[list[tuple[int, bool]]],
) -> None:
    """Whatever a batch adds and evicts again, its merged changes equal its changes in turn."""
    one_by_one_tables, merged_tables = bridge_tables(window, latest), bridge_tables(window, latest)
    one_by_one, merged = Published(one_by_one_tables), Published(merged_tables)
    n = 0
    for notes in batches:
        batch = Batch()
        for instance, other in notes:
            n += 1
            event = "other.event" if other else EVENT
            for change in one_by_one_tables.take(note(n, instance, event), 100):
                one_by_one.apply(change)
            batch.take(merged_tables.take(note(n, instance, event), 100))
        for part in batch.merged():
            merged.apply(part.change)
        assert merged.state() == one_by_one.state()


def test_a_batch_gives_one_change_per_table_in_first_changed_order() -> None:
    """Three notifications, two instances: one window change, one latest, one event types."""
    tables, batch = bridge_tables(window=2, latest=10), Batch()
    for n, instance in enumerate([1, 2, 1]):
        batch.take(tables.take(note(n, instance), 100))
    merged = batch.merged()
    assert [m.change.dataindex for m in merged] == [EVENT, f"{EVENT}@instance_id",
                                                    "@event_types"]
    window, latest, types = (m.change for m in merged)
    assert isinstance(window, RowChange)
    assert isinstance(latest, KeyChange)
    # m0 was added and evicted within the batch: neither added nor removed.
    assert [r["message_id"] for r in window.add] == ["m1", "m2"]
    assert window.remove == []
    assert {k: v["message_id"] for k, v in latest.put.items()} == {"i1": "m2", "i2": "m1"}
    assert isinstance(types, KeyChange)
    assert types.put[EVENT]["count"] == 3
    assert [len(m.parts) for m in merged] == [3, 3, 3]
    assert len(batch) == 9


def test_a_table_changed_as_rows_and_as_keys_is_refused() -> None:
    """One dataindex is either a list table or a map table within a batch."""
    batch = Batch()
    batch.take([RowChange("t", [{"a": 1}], [])])
    with pytest.raises(ValueError, match="both"):
        batch.take([KeyChange("t", {"a": 1}, [])])
