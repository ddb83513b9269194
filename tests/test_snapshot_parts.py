"""Snapshots in parts, without sockets (FakeNet): whole views, and a resync when one is lost."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest

from zdse.node import core as node
from zdse.node.assembly import LOST, Assemblies
from zdse.node.core import NodeCore
from zdse.node.delta import same
from zdse.node.subscriptions import Update
from zdse.node.tableindex import INDEX_MIN_ROWS
from zdse.testing import FakeNet, routed
from zdse.wire import codec
from zdse.wire.codec import Kind, Snapshot, SnapshotPart
from zdse.wire.limits import MIN_QUEUE_BYTES

#: Rows of the test table: past INDEX_MIN_ROWS, so it is indexed.
ROWS = 2_000


def _table(tag: str = "x") -> list[list[Any]]:
    # About 400 bytes a row: 800 KB, so parts of 300 KB outgrow a batch
    # (MAX_BATCH_BYTES) and travel one a frame, as big parts do.
    return [[i, tag * 400] for i in range(ROWS)]


def _views(net: FakeNet, sub: NodeCore, sid: str) -> Any:
    return sub.subscriptions.view(sid).get("pub")


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of about 300 KB, so the test table takes three."""
    monkeypatch.setattr(node, "PART_BYTES", 300_000)


def _net(drop_routed: Any = None) -> tuple[FakeNet, NodeCore, NodeCore, str]:
    net = FakeNet(refresh=1.0, drop_routed=drop_routed)
    pub = net.add("pub")
    pub.publish("t", _table())
    sub = net.add("sub")
    sid = sub.subscribe("pub", "t", net.clock.now)
    net.run()
    return net, pub, sub, sid


def _dropping_part_1(dropped: list[bool]) -> Any:
    """A FakeNet drop rule: the first frame holding a part 1 is lost (noted in ``dropped``)."""
    def drop(frames: list[bytes]) -> bool:
        kind, body = routed(frames)
        if kind == Kind.PART and not dropped:
            values = codec.decode_body(Kind.PART, body)
            if any(isinstance(v, SnapshotPart) and v.part == 1 for v in values):
                dropped.append(True)
                return True
        return False
    return drop


def test_a_big_snapshot_comes_in_parts_and_makes_the_whole_view() -> None:
    """A table over PART_BYTES goes as several parts; the view is the table, then deltas apply."""
    parts: list[int] = []
    net, pub, sub, sid = _net(lambda f: parts.append(routed(f)[0]) and False)
    assert parts.count(Kind.PART) == 3
    assert pub.stats["parted_snapshots"] == 1
    assert same(_views(net, sub, sid), _table())
    changed = [*_table()[:-1], [ROWS - 1, "y"]]
    pub.publish("t", changed)
    net.run()
    kinds = [u.kind for u in net.events(sub) if isinstance(u, Update)]
    assert kinds[-1] == "delta"
    assert same(_views(net, sub, sid), changed)


def test_a_lost_part_brings_a_resync_never_a_wrong_view() -> None:
    """The cage drops one part: the subscriber counts it, asks again and gets the whole table."""
    dropped: list[bool] = []
    drop_second_part = _dropping_part_1(dropped)
    net, _, sub, sid = _net(drop_second_part)
    assert dropped
    assert _views(net, sub, sid) is None  # part 2 waits for part 1 to be taken
    net.advance(3.0)  # past two refresh intervals: the stalled snapshot is asked again
    assert sub.subscriptions.stats["lost_parts"] == 1
    assert same(_views(net, sub, sid), _table())


def test_a_reannounce_while_parts_are_under_way_does_not_start_them_over() -> None:
    """The subscription's re-announce during a snapshot in parts shows it under way: the
    publisher answers with a Current and carries on; the table comes once, three parts."""
    parts: list[int] = []
    net = FakeNet(refresh=1.0, drop_routed=lambda f: parts.append(routed(f)[0]) and False)
    pub = net.add("pub")
    pub.publish("t", _table())
    sub = net.add("sub")
    net.pause(pub)
    sid = sub.subscribe("pub", "t", net.clock.now)
    net.run()
    net.resume(pub)  # it reads the subscribe and sends part 0...
    net.pause(pub)  # ...and is slow to read the word that it was taken
    net.run()
    net.advance(1.0)  # the re-announce falls due meanwhile
    assert _views(net, sub, sid) is None
    net.resume(pub)
    net.run()
    assert parts.count(Kind.PART) == 3
    assert same(_views(net, sub, sid), _table())
    assert sub.subscriptions.stats["lost_parts"] == 0


def test_a_change_too_big_for_one_message_asks_for_a_snapshot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A delta over the message limit goes as a "snapshot" marker: subscribers resync to it."""
    net, pub, sub, sid = _net()
    monkeypatch.setattr(node, "MAX_MESSAGE_BYTES", 500_000)
    monkeypatch.setattr(codec, "MAX_MESSAGE_BYTES", 500_000)
    new = _table("z")
    pub.publish("t", new)
    net.run()
    assert sub.subscriptions.stats["resyncs"] == 1
    assert same(_views(net, sub, sid), new)


def test_parts_out_of_order_or_of_another_snapshot_are_lost() -> None:
    """Assemblies take parts in order only, of one (epoch, seq); a new part 0 starts over."""
    asm = Assemblies()

    def part(i: int, seq: int = 1, n: int = 3) -> SnapshotPart:
        return SnapshotPart("s", "t", "e", seq, i, n, [[i]])

    assert asm.take("p", part(0)) is None
    assert asm.take("p", part(2)) == LOST
    assert len(asm) == 0
    assert asm.take("p", part(0)) is None
    assert asm.take("p", part(1, seq=2)) == LOST
    assert asm.take("p", part(0)) is None
    assert asm.take("p", part(1)) is None
    whole = asm.take("p", part(2))
    assert isinstance(whole, tuple)
    assert whole[0] == Snapshot("s", "t", "e", 1, [[0], [1], [2]])
    assert whole[1].rows == [msgpack.packb([i]) for i in range(3)]
    assert asm.take("p", part(1)) == LOST


def test_parts_past_the_snapshot_bound_or_for_unknown_subscriptions_are_not_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An assembly over MAX_SNAPSHOT_BYTES is dropped as lost; parts for a sid we do not
    hold are never kept (and the publisher is told to stop)."""
    from zdse.node import assembly

    monkeypatch.setattr(assembly, "MAX_SNAPSHOT_BYTES", 10)
    asm = Assemblies()
    assert asm.take("p", SnapshotPart("s", "t", "e", 1, 0, 3, [["x" * 20]])) == assembly.TOO_BIG
    assert len(asm) == 0
    monkeypatch.setattr(assembly, "MAX_SNAPSHOT_BYTES", 2**40)
    net, _, sub, _ = _net()
    updates, actions = sub.subscriptions.on_part(
        "pub", SnapshotPart("nobody", "t", "e", 1, 0, 9, [[1]]), net.clock.now)
    assert updates == []
    assert [type(a.message).__name__ for a in actions] == ["Unsubscribe"]  # type: ignore[union-attr]
    assert len(sub.subscriptions._parts) == 0


def test_a_whole_publish_after_an_incremental_change_diffs_against_the_change() -> None:
    """change_rows on a big (indexed) table, then publish() whole: the view is that data."""
    net, pub, sub, sid = _net()
    assert pub.publications.index("t") is not None
    table = _table()
    pub.change_rows("t", add=[[ROWS, "new"]], remove=[table[0], table[5]])
    net.run()
    assert pub.publications.index("t") is None  # the kept index is of the older version
    assert same(_views(net, sub, sid), pub.publications.data("t"))
    # Rows 0 and 5 back, row 7 changed: against the stale index this diff came out wrong.
    again = [*table[:7], [7, "changed"], *table[8:]]
    pub.publish("t", again)
    net.run()
    assert same(pub.publications.data("t"), again)
    assert same(_views(net, sub, sid), again)
    assert sub.subscriptions.stats["resyncs"] == 0
    assert pub.publications.index("t") is not None  # indexed again by the whole publish


def test_snapshots_over_the_byte_budget_are_paced_by_the_subscriber_and_never_dropped(
) -> None:
    """Snapshots twice the cage's byte budget for a subscriber not reading: one part of each
    waits for it, the next goes once it took that one; nothing dropped, the views fill."""
    net = FakeNet(refresh=1.0, queue_bytes=MIN_QUEUE_BYTES)
    pub = net.add("pub")
    pub.publish("t", _table())  # 800 KB in three parts: two snapshots overflow the budget
    sub = net.add("sub")
    net.pause(sub)
    sids = [sub.subscribe("pub", "t", net.clock.now) for _ in range(2)]
    net.run()
    parts = [f for f in net.held(sub) if f[0] == codec.header(Kind.PART)]
    got = [(v.sid, v.part) for f in parts for v in codec.decode_body(Kind.PART, f[3])
           if isinstance(v, SnapshotPart)]
    assert sorted(got) == sorted((sid, 0) for sid in sids)
    net.resume(sub)
    net.run()
    net.advance(3.0)
    assert net.cage.over_budget_kinds["part"] == 0
    assert sub.subscriptions.stats["lost_parts"] == 0
    for sid in sids:
        assert same(_views(net, sub, sid), _table())
    pub.change_rows("t", add=[["one", "more"]])
    net.run()
    assert same(_views(net, sub, sids[1]), [*_table(), ["one", "more"]])


def test_a_big_view_is_changed_in_place_and_its_index_follows_it_below_and_back() -> None:
    """Deltas to a big view change that list, through an index dropped when the view shrinks
    under INDEX_MIN_ROWS and built again when it grows back, never stale."""
    rows = [[i, "r"] for i in range(INDEX_MIN_ROWS)]
    net = FakeNet(refresh=1.0)
    pub = net.add("pub")
    pub.publish("t", rows)
    sub = net.add("sub")
    sid = sub.subscribe("pub", "t", net.clock.now)
    net.run()
    view = _views(net, sub, sid)
    steps: list[tuple[list[Any], list[Any]]] = [
        ([], [rows[0]]), ([], [rows[1]]), ([["a"], ["b"]], []), ([], [rows[5]])]
    for add, remove in steps:
        pub.change_rows("t", add, remove)
        net.run()
        assert _views(net, sub, sid) is view
        assert same(view, pub.publications.data("t"))
    assert sub.subscriptions.stats["resyncs"] == 0


# --- dict tables, and tables changed in place -------------------------------------

#: How each kind of table is made, then changed: (make, change) on a publisher's core.
_KINDS: dict[str, tuple[Any, Any]] = {
    "dict published whole": (
        lambda pub: pub.publish("t", {f"k{i}": row for i, row in enumerate(_table())}),
        lambda pub: pub.publish("t", {**pub.publications.data("t"), "k1": [1, "y"], "new": 2}),
    ),
    "dict changed in place": (
        lambda pub: pub.change_keys("t", {f"k{i}": row for i, row in enumerate(_table())}),
        lambda pub: pub.change_keys("t", {"k1": [1, "y"], "new": 2}, ["k2"]),
    ),
    "list changed in place": (
        lambda pub: pub.change_rows("t", _table()),
        lambda pub: pub.change_rows("t", [[ROWS, "new"]], [_table()[3]]),
    ),
}


def _kind_net(kind: str, drop_routed: Any = None) -> tuple[FakeNet, NodeCore, NodeCore, str]:
    net = FakeNet(refresh=1.0, drop_routed=drop_routed)
    pub = net.add("pub")
    _KINDS[kind][0](pub)
    sub = net.add("sub")
    sid = sub.subscribe("pub", "t", net.clock.now)
    net.run()
    return net, pub, sub, sid


@pytest.mark.parametrize("kind", sorted(_KINDS))
def test_a_dict_or_in_place_table_comes_in_parts_then_takes_its_deltas(kind: str) -> None:
    """Over PART_BYTES, a dict table or a table changed in place goes in three parts; the
    view is the data, and after a change (a delta, no resync) still is."""
    parts: list[int] = []
    net, pub, sub, sid = _kind_net(kind, lambda f: parts.append(routed(f)[0]) and False)
    assert parts.count(Kind.PART) == 3
    assert same(_views(net, sub, sid), pub.publications.data("t"))
    _KINDS[kind][1](pub)
    net.run()
    kinds = [u.kind for u in net.events(sub) if isinstance(u, Update)]
    assert kinds[-1] == "delta"
    assert same(_views(net, sub, sid), pub.publications.data("t"))
    assert sub.subscriptions.stats["resyncs"] == 0


@pytest.mark.parametrize("kind", sorted(_KINDS))
def test_a_lost_part_of_a_dict_or_in_place_table_brings_a_resync(kind: str) -> None:
    """The cage drops part 1: the stalled snapshot is counted lost, asked again, and the
    view becomes the data, never a part of it."""
    dropped: list[bool] = []
    drop_second_part = _dropping_part_1(dropped)
    net, pub, sub, sid = _kind_net(kind, drop_second_part)
    assert dropped
    assert _views(net, sub, sid) is None
    net.advance(3.0)
    assert sub.subscriptions.stats["lost_parts"] == 1
    assert same(_views(net, sub, sid), pub.publications.data("t"))


@pytest.mark.parametrize("kind", sorted(_KINDS))
def test_a_change_while_parts_go_is_not_in_them_but_follows_as_a_delta(kind: str) -> None:
    """A change made between two parts: the parts stay of the snapshot's version, and the
    change reaches the view after them, as a delta (resent from the publisher's history:
    it left before the subscriber's filter was on), with no second snapshot."""
    net = FakeNet(refresh=1.0)
    pub = net.add("pub")
    _KINDS[kind][0](pub)
    sub = net.add("sub")
    net.pause(pub)
    sid = sub.subscribe("pub", "t", net.clock.now)
    net.run()
    net.resume(pub)  # it reads the subscribe and sends part 0...
    net.pause(pub)  # ...and not yet the word that it was taken
    net.run()
    before = copy.deepcopy(pub.publications.data("t"))
    _KINDS[kind][1](pub)
    net.run()
    assert _views(net, sub, sid) is None
    net.events(sub)
    net.resume(pub)
    # Round by round: a snapshot from parts is the view itself, which the
    # delta then changes in place; what each update showed is copied as it came.
    got: list[tuple[str, Any]] = []
    while net.step():
        got += [(u.kind, copy.deepcopy(u.data)) for u in net.events(sub)
                if isinstance(u, Update)]
    assert [kind for kind, _ in got] == ["snapshot", "delta"]
    assert same(got[0][1], before)
    assert same(_views(net, sub, sid), pub.publications.data("t"))
    net.advance(3.0)
    assert same(_views(net, sub, sid), pub.publications.data("t"))
    assert sub.subscriptions.stats["lost_parts"] == 0
    assert sub.subscriptions.stats["resyncs"] == 0


def test_dict_parts_assemble_into_one_table_with_no_index() -> None:
    """Parts that are maps make a dict snapshot; a list part among them is a lost one."""
    asm = Assemblies()
    assert asm.take("p", SnapshotPart("s", "t", "e", 1, 0, 2, {"a": 1})) is None
    whole = asm.take("p", SnapshotPart("s", "t", "e", 1, 1, 2, {"b": 2}))
    assert whole == (Snapshot("s", "t", "e", 1, {"a": 1, "b": 2}), None)
    assert asm.take("p", SnapshotPart("s", "t", "e", 1, 0, 2, {"a": 1})) is None
    assert asm.take("p", SnapshotPart("s", "t", "e", 1, 1, 2, [["b"]])) == LOST


def test_entry_parts_put_an_entry_bigger_than_a_part_alone_and_keep_the_count() -> None:
    """Entries go in the part their first byte falls in: a big one leaves empty parts after
    it, and the parts hold every entry once, in as many parts as announced."""
    from zdse.node.parts import EntryParts

    data = {"a": "x" * 10, "big": "y" * 100, "b": 1, "c": 2}
    size = sum(len(msgpack.packb(k)) + len(msgpack.packb(v)) for k, v in data.items())
    source = EntryParts(data, size, 30)
    got: dict[str, Any] = {}
    shapes = []
    for i in range(len(source)):
        (part,) = codec.decode_body(Kind.PART, source.body(("s", "t", "e", 1, i, len(source)), i))
        assert isinstance(part, SnapshotPart)
        assert isinstance(part.rows, dict)
        shapes.append(sorted(part.rows))
        got.update(part.rows)
    assert got == data
    assert len(source) == -(-size // 30)
    assert shapes[0] == ["a", "big"]
    assert [] in shapes


def test_a_resync_waiting_on_slow_parts_does_not_ask_again_and_start_them_over(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A feed resyncing whose snapshot comes in parts slower than a refresh: its retry
    waits for them (a big dict table's parts take that long), the parts go once."""
    net, pub, sub, sid = _net()
    monkeypatch.setattr(node, "MAX_MESSAGE_BYTES", 500_000)
    monkeypatch.setattr(codec, "MAX_MESSAGE_BYTES", 500_000)
    new = _table("z")
    pub.publish("t", new)  # too big a change: a "snapshot" delta, the subscriber resyncs
    net.pause(pub)
    net.run()
    net.resume(pub)  # it reads the ask and sends part 0...
    net.pause(pub)  # ...and is slow to read the word that it was taken
    net.run()
    net.advance(1.5)  # past a refresh: the resync's retry falls due; a stall is 2
    net.resume(pub)
    net.run()
    assert same(_views(net, sub, sid), new)
    assert pub.stats["parted_snapshots"] == 2  # the first snapshot, and the resync's
    assert sub.subscriptions.stats["lost_parts"] == 0
