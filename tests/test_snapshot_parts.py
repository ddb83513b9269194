"""Snapshots in parts, without sockets (FakeNet): whole views, and a resync when one is lost."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from zdse import codec, node
from zdse.assembly import LOST, Assemblies
from zdse.codec import Kind, Snapshot, SnapshotPart
from zdse.delta import same
from zdse.node import NodeCore
from zdse.subscriber import Update
from zdse.testing import FakeNet

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


def test_a_big_snapshot_comes_in_parts_and_makes_the_whole_view() -> None:
    """A table over PART_BYTES goes as several parts; the view is the table, then deltas apply."""
    parts: list[int] = []
    net, pub, sub, sid = _net(lambda f: parts.append(f[1][1]) and False)
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

    def drop_second_part(frames: list[bytes]) -> bool:
        if frames[1][1] == Kind.PART and not dropped:
            values = codec.decode_body(Kind.PART, frames[4])
            if any(isinstance(v, SnapshotPart) and v.part == 1 for v in values):
                dropped.append(True)
                return True
        return False

    net, _, sub, sid = _net(drop_second_part)
    assert dropped
    assert sub.subscriptions.stats["lost_parts"] == 1
    assert same(_views(net, sub, sid), _table())


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
    from zdse import assembly

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
