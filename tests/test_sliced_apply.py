"""A delta to a big view applied in slices (Subscriptions.advance): whole, and in order."""

from __future__ import annotations

import copy
import sys
from typing import Any

import pytest

from zdse.node import subscriptions, tableindex
from zdse.node.delta import ROWS, same
from zdse.node.effects import Send
from zdse.node.publications import Publications
from zdse.node.subscriptions import Subscriptions, Update
from zdse.node.tableindex import SLICED_ROWS
from zdse.testing import FakeNet
from zdse.wire.codec import Delta, Snapshot, Subscribe

PUB = "pub.a"
#: Rows of the test view: past the (lowered) SLICED_ROWS, many slices.
N = 3_000


@pytest.fixture(autouse=True)
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Views from 2,000 rows are applied in slices of 100 rows: dozens of slices."""
    monkeypatch.setattr(subscriptions, "SLICED_ROWS", 2_000)
    monkeypatch.setattr(tableindex, "SLICED_ROWS", 2_000)
    monkeypatch.setattr(tableindex, "SLICE_ROWS", 100)
    monkeypatch.setattr(tableindex, "_COPY_ROWS", 500)


def table(tag: str = "v0") -> list[list[Any]]:
    """N distinct rows."""
    return [[f"vm{i}", tag, i] for i in range(N)]


def change(seq: int, rows: list[list[Any]]) -> tuple[Delta, list[list[Any]]]:
    """A delta changing every 100th row of ``rows`` (tagged with ``seq``), and the rows after it."""
    new = [list(r) for r in rows]
    added, removed = [], []
    for i in range(0, N, 100):
        removed.append(rows[i])
        new[i] = [rows[i][0], f"v{seq}", i]
        added.append(new[i])
    return Delta("vms", "e1", seq, [ROWS, added, removed]), new


def live() -> tuple[Subscriptions, str]:
    """Subscriptions with one live feed of PUB's 'vms' at seq 1, holding table()."""
    subs = Subscriptions(refresh=10.0)
    sid, _ = subs.subscribe("pubs", "vms", 0.0, sid="s0")
    subs.on_snapshot(PUB, Snapshot(sid, "vms", "e1", 1, table()), 0.0)
    return subs, sid


def view(subs: Subscriptions) -> Any:
    return subs.view("s0")[PUB]


def drain(subs: Subscriptions, during: Any = None) -> tuple[list[Update], int]:
    """Advance until nothing is applying; return the updates and the slices taken.

    ``during(slice)`` runs between slices, as a loop's other callbacks would.
    """
    updates: list[Update] = []
    slices = 0
    while subs.slicing:
        got, _ = subs.advance(1.0)
        updates += got
        slices += 1
        if during is not None:
            during(slices)
    return updates, slices


def test_a_delta_to_a_big_view_applies_in_slices_and_the_view_equals_the_data() -> None:
    """The delta takes many slices, yields its update at the last, and leaves view == data."""
    subs, _ = live()
    d, new = change(2, table())
    assert subs.on_delta(PUB, d, 1.0) == ([], [])
    assert subs.slicing
    updates, slices = drain(subs)
    assert slices > 10
    assert [(u.kind, u.seq) for u in updates] == [("delta", 2)]
    assert same(view(subs), new)
    assert updates[0].view is view(subs)
    assert subs.subdata()["s0"]["publishers"][PUB]["seq"] == 2


def test_no_reader_sees_a_delta_half_applied() -> None:
    """Between any two slices the view, and its seq, are the ones before the delta."""
    subs, _ = live()
    before = table()
    held = view(subs)  # a reader holding the view object, as a callback may
    d, new = change(2, before)
    subs.on_delta(PUB, d, 1.0)
    seen: list[bool] = []

    def check(_: int) -> None:
        if subs.slicing:
            seen.append(same(view(subs), before) and same(held, before)
                        and subs.subdata()["s0"]["publishers"][PUB]["seq"] == 1)

    drain(subs, check)
    assert seen
    assert all(seen)
    assert same(held, new)  # changed in place, at once, with the last slice


def test_deltas_that_come_during_a_sliced_apply_follow_it_in_order() -> None:
    """Deltas 3 and 4 come while 2 is in slices: updates 2, 3, 4, and the view is 4's data."""
    subs, _ = live()
    d2, after2 = change(2, table())
    d3, after3 = change(3, after2)
    d4, after4 = change(4, after3)
    subs.on_delta(PUB, d2, 1.0)
    subs.advance(1.0)
    # One by itself, one in a frame's batch (the fanout path), and a copy of 3
    # by another cage: waiting behind the slices, never applied past them.
    assert subs.on_delta(PUB, d3, 1.0) == ([], [])
    fields = [[d.dataindex, d.epoch, d.seq, d.delta] for d in (d3, d4)]
    assert subs.on_deltas(PUB, fields, 1.0) == ([], [])
    assert same(view(subs), table())
    updates, _ = drain(subs)
    assert [u.seq for u in updates] == [2, 3, 4]
    assert same(view(subs), after4)
    assert subs.stats["gaps"] == subs.stats["resyncs"] == 0


def test_a_snapshot_during_a_sliced_apply_supersedes_it_and_later_deltas_follow() -> None:
    """A newer snapshot drops the half-done apply; a delta past the snapshot still applies."""
    subs, sid = live()
    d2, after2 = change(2, table())
    d3, after3 = change(3, after2)
    subs.on_delta(PUB, d2, 1.0)
    subs.advance(1.0)
    subs.on_delta(PUB, d3, 1.0)
    updates, _ = subs.on_snapshot(PUB, Snapshot(sid, "vms", "e1", 2, copy.deepcopy(after2)), 1.0)
    assert [(u.kind, u.seq) for u in updates] == [("snapshot", 2)]
    more, _ = drain(subs)
    assert [(u.kind, u.seq) for u in more] == [("delta", 3)]
    assert same(view(subs), after3)


def test_a_bad_delta_found_in_slices_resyncs() -> None:
    """A malformed rows delta is counted and asks for a snapshot; the view is untouched."""
    subs, _ = live()
    subs.on_delta(PUB, Delta("vms", "e1", 2, [ROWS, "not rows", []]), 1.0)
    assert subs.slicing
    actions: list[Any] = []
    while subs.slicing:
        actions += subs.advance(1.0)[1]
    assert subs.stats["bad_deltas"] == 1
    assert [type(a.message) for a in actions if isinstance(a, Send)] == [Subscribe]
    assert subs.subdata()["s0"]["publishers"][PUB]["state"] == "resync"
    assert same(view(subs), table())


def test_too_many_deltas_behind_a_sliced_apply_resync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_BUFFERED_DELTAS waiting, the apply is dropped and a snapshot asked."""
    monkeypatch.setattr(subscriptions, "MAX_BUFFERED_DELTAS", 2)
    subs, _ = live()
    d2, after2 = change(2, table())
    d3, after3 = change(3, after2)
    d4, after4 = change(4, after3)
    d5, _ = change(5, after4)
    subs.on_delta(PUB, d2, 1.0)
    subs.on_delta(PUB, d3, 1.0)
    subs.on_delta(PUB, d4, 1.0)
    _, actions = subs.on_delta(PUB, d5, 1.0)
    assert not subs.slicing
    assert [type(a.message) for a in actions if isinstance(a, Send)] == [Subscribe]
    assert subs.stats["resyncs"] == 1
    assert same(view(subs), table())


def test_an_unsubscribe_during_a_sliced_apply_ends_it_and_the_view_is_freed_in_slices() -> None:
    """The feed goes with its apply; its big view is emptied a slice at a time, no update."""
    subs, sid = live()
    subs.on_delta(PUB, change(2, table())[0], 1.0)
    subs.unsubscribe(sid)
    # Nobody holds the view (holding it would keep it whole): a slice a
    # SLICE_ROWS rows of it.
    updates, slices = drain(subs)
    assert updates == []
    assert slices == N // tableindex.SLICE_ROWS


def test_a_dropped_view_someone_holds_is_left_whole() -> None:
    """A view a callback kept is never emptied: its holder frees it."""
    subs, _ = live()
    kept = view(subs)
    subs.on_left(PUB)
    assert subs.slicing
    drain(subs)
    assert same(kept, table())


def test_through_fakenet_two_quick_publishes_of_a_big_table_reach_the_view_in_order() -> None:
    """Publisher and subscriber cores: the second delta comes while the first is in slices."""
    net = FakeNet(refresh=10.0)
    pub = net.add("pub")
    pub.publish("vms", table())
    sub = net.add("sub")
    sid = sub.subscribe("pub", "vms", net.clock.now)
    net.run()
    _, after2 = change(2, table())
    _, after3 = change(3, after2)
    pub.publish("vms", after2)
    with pytest.raises(AssertionError, match="still busy"):
        net.run(rounds=3)  # the delta reached the subscriber: slices under way
    assert sub.slicing
    pub.publish("vms", after3)
    net.run()
    deltas = [u.seq for u in net.events(sub) if isinstance(u, Update) and u.kind == "delta"]
    assert deltas == [2, 3]
    assert same(sub.subscriptions.view(sid)["pub"], after3)


def test_a_replaced_big_version_is_freed_in_slices_unless_the_module_holds_it() -> None:
    """The publisher's old version (and its index) go a slice at a time; one still held stays."""
    net = FakeNet(refresh=10.0)
    pub = net.add("pub")
    held = table()
    pub.publish("vms", held)
    pub.publish("vms", table("v1"))  # held by the test: left whole
    assert pub.slicing
    slices = 0
    while pub.slicing:
        pub.advance(net.clock.now)
        slices += 1
    assert same(held, table())
    # Its index (nobody else holds it) went a slice at a time.
    assert slices == N // tableindex.SLICE_ROWS + 1
    pub.publish("vms", table("v2"))  # v1, held by nobody now: rows and index
    slices = 0
    while pub.slicing:
        pub.advance(net.clock.now)
        slices += 1
    assert slices == 2 * N // tableindex.SLICE_ROWS


def test_publications_with_no_owner_freeing_slices_keep_no_replaced_version() -> None:
    """The cage's tables (Publications with no Dropped) let a replaced big version go at
    once: nobody there frees slices, so one kept would stay for good."""
    pubs = Publications("cage", "e")
    old = [[i, "x"] for i in range(SLICED_ROWS)]
    pubs.publish("t", old)
    pubs.publish("t", [[i, "y"] for i in range(SLICED_ROWS)])
    assert sys.getrefcount(old) == 2  # this name and getrefcount's argument
