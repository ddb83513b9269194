"""A publisher's history of recent deltas, and what it resends (zdse.node.history)."""

from __future__ import annotations

from collections.abc import Callable

from zdse.node.core import NodeCore
from zdse.node.effects import Send, SendPacked
from zdse.node.history import History
from zdse.node.publications import Publications
from zdse.node.subscriptions import Update
from zdse.testing import FakeNet
from zdse.wire import codec
from zdse.wire.codec import Current, Snapshot, Subscribe
from zdse.wire.limits import HISTORY_BYTES, HISTORY_DELTAS


def _body(seq: int, size: int = 10) -> bytes:
    return codec.encode_one(codec.Delta("t", "e", seq, ["replace", "x" * size]))


def test_the_history_resends_exactly_what_was_recorded_from_any_seq_it_holds() -> None:
    """since(held, seq) is the recorded bodies held+1..seq back to back; None for a seq
    older than the history, or for a history that does not reach the current seq."""
    history = History(max_deltas=8)
    bodies = {seq: _body(seq) for seq in range(1, 11)}
    for seq, body in bodies.items():
        history.record("t", seq, body)
    # Past 8, the oldest went down to 7 (seq 3 to 9), then seq 10 came: 3 to 10.
    assert history.since("t", 8, 10) == bodies[9] + bodies[10]
    assert history.since("t", 2, 10) == b"".join(bodies[s] for s in range(3, 11))
    assert history.since("t", 1, 10) is None  # seq 2 was dropped: older than the history
    assert history.since("t", 8, 11) is None  # seq 11 was never recorded
    assert history.since("t", 10, 10) is None  # nothing missing
    assert history.since("other", 0, 1) is None
    values = codec.decode_body(codec.Kind.REPLAY, history.since("t", 8, 10) or b"")
    assert [v.seq for v in values if isinstance(v, codec.Replay)] == [9, 10]


def test_the_history_is_bounded_in_bytes_and_count_and_starts_over_at_a_hole() -> None:
    """However many deltas, at most max_deltas and max_bytes are held; one bigger than
    max_bytes is not kept; a seq that does not follow on starts the history over."""
    history = History(max_deltas=100, max_bytes=10_000)
    for seq in range(1, 2001):
        history.record("t", seq, _body(seq, 1000))
        held = history.statistics()
        assert held["history_bytes"] <= 10_000
        assert held["history_deltas"] <= 100
    # Bodies of ~1 KB: past 10,000 bytes the oldest go down to 8,750 (8 bodies).
    assert history.statistics()["history_deltas"] == 8
    assert history.since("t", 1992, 2000) is not None
    assert history.since("t", 1991, 2000) is None
    history.record("t", 2001, _body(2001, 20_000))  # too big: nothing held
    assert history.statistics() == {"history_deltas": 0, "history_bytes": 0}
    assert history.since("t", 2000, 2001) is None
    history.record("t", 2002, _body(2002))
    history.record("t", 2004, _body(2004))  # a hole: only 2004 is held now
    assert history.since("t", 2003, 2004) == _body(2004)
    assert history.since("t", 2002, 2004) is None
    history.forget("t")
    assert history.statistics()["history_deltas"] == 0


def test_a_node_s_history_stays_within_its_bounds_under_big_and_many_deltas() -> None:
    """A publisher with a subscriber publishing thousands of deltas, then big ones: its
    history never holds more than HISTORY_DELTAS deltas or HISTORY_BYTES bytes a table."""
    net = FakeNet()
    pub, sub = net.add("pub"), net.add("sub")
    pub.publish("t", 0)
    sub.subscribe("pub", "t", net.clock.now)
    net.run()
    for i in range(1, HISTORY_DELTAS * 3):
        pub.publish("t", i)
        assert pub.history.statistics()["history_deltas"] <= HISTORY_DELTAS
    assert pub.history.statistics()["history_deltas"] >= HISTORY_DELTAS * 7 // 8
    for i in range(20):
        pub.publish("t", str(i) * (HISTORY_BYTES // 8))
        assert pub.history.statistics()["history_bytes"] <= HISTORY_BYTES
    net.run()
    assert sub.subscriptions.stats["resyncs"] == 0


def test_a_table_nobody_subscribes_to_keeps_no_history() -> None:
    """Deltas sent to nobody are not kept (nobody can miss them): no memory for them."""
    core = NodeCore(codec.Register("pub", [], {}), "e", 1.0, 0.0)
    for i in range(100):
        core.publish("t", i)
    assert core.history.statistics() == {"history_deltas": 0, "history_bytes": 0}


def test_the_publisher_resends_a_gap_it_holds_and_never_answers_a_gap_with_a_current() -> None:
    """Publications' answers: a sync after a snapshot, or a subscriber saying it misses the
    deltas after its seq (GAP), get them resent if the history holds them; a gap it no
    longer holds gets a snapshot, never a Current; a re-announce crossing deltas, a Current."""
    history = History(max_deltas=3)
    pubs = Publications("pub", "e", history)
    for seq in range(1, 3):
        assert pubs.publish("t", seq) is None  # nobody subscribes yet: nothing recorded

    def publish(value: int) -> None:
        d = pubs.publish("t", value)
        assert d is not None
        history.record("t", d.seq, codec.encode_one(d))

    def announce(seen: list[object]) -> Send | SendPacked:
        (answer,) = pubs.on_subscribe("sub", Subscribe("s1", "t", {"pub": seen}, 30), 0)
        return answer

    first = announce([])
    assert isinstance(first, Send)
    assert isinstance(first.message, Snapshot)
    assert first.message.seq == 2
    publish(3)
    sync = announce(["e", 2])  # the sync after the snapshot: delta 3 may be lost
    assert isinstance(sync, SendPacked)
    assert sync.kind is codec.Kind.REPLAY
    assert sync.body == history.since("t", 2, 3)
    publish(4)
    crossed = announce(["e", 3])  # delta 4 is on its way by the PUB
    assert isinstance(crossed, Send)
    assert crossed.message == Current("s1", "t", "e", 4)
    gap = announce(["e", 3, codec.GAP])  # it says it misses delta 4
    assert isinstance(gap, SendPacked)
    assert gap.body == history.since("t", 3, 4)
    for value in range(5, 9):
        publish(value)
    old = announce(["e", 4, codec.GAP])  # seqs 5..8, the history holds 6..8 only
    assert isinstance(old, Send)
    assert isinstance(old.message, Snapshot)
    assert announce(["e", 8, codec.GAP]) == Send("sub", Current("s1", "t", "e", 8))
    other = announce(["e", 6, "nonsense"])  # not the GAP mark: no view of ours
    assert isinstance(other, Send)
    assert isinstance(other.message, Snapshot)


def _drop_seqs(seqs: set[int]) -> Callable[[list[bytes]], bool]:
    def drop(frames: list[bytes]) -> bool:
        if frames[0] != codec.topic("pub", "t"):
            return False
        return int(codec.decode_fields(codec.Kind.DELTA, frames[2])[0][2]) in seqs
    return drop


def _lose(seqs: set[int], history: int | None) -> tuple[FakeNet, NodeCore, NodeCore, str]:
    """A live subscriber whose PUB loses ``seqs`` of publishes 2..8; ``history``: kept deltas."""
    net = FakeNet(drop=_drop_seqs(seqs))
    pub, sub = net.add("pub"), net.add("sub")
    if history is not None:
        pub.history.max_deltas = history
    pub.publish("t", [1])
    sid = sub.subscribe("pub", "t", net.clock.now)
    net.run()
    for i in range(2, 9):
        pub.publish("t", list(range(1, i + 1)))
        net.run()
    return net, pub, sub, sid


def test_deltas_a_live_subscriber_missed_are_resent_from_the_history_not_snapshotted() -> None:
    """Seqs 3 to 6 lost on the PUB: seq 7 shows the gap, the subscriber asks, the publisher
    resends 3 to 7 from its history; every seq once and in order, one snapshot in all."""
    net, pub, sub, sid = _lose({3, 4, 5, 6}, None)
    kinds = [(u.kind, u.seq) for u in net.events(sub) if isinstance(u, Update)]
    assert kinds == [("snapshot", 1), *[("delta", s) for s in range(2, 9)]]
    assert sub.subscriptions.view(sid)["pub"] == pub.publications.data("t")
    stats = sub.subscriptions.stats
    assert (stats["gaps"], stats["resyncs"], stats["repairs"], stats["repaired"]) \
        == (0, 0, 1, 1), stats


def test_a_gap_older_than_the_history_gets_a_snapshot() -> None:
    """The same losses with a history of 3 deltas: seq 3 is no longer held when seq 7
    shows the gap, so the publisher sends a snapshot, and the view converges."""
    net, pub, sub, sid = _lose({3, 4, 5, 6}, 3)
    kinds = [(u.kind, u.seq) for u in net.events(sub) if isinstance(u, Update)]
    assert kinds == [("snapshot", 1), ("delta", 2), ("snapshot", 7), ("delta", 8)]
    assert sub.subscriptions.view(sid)["pub"] == pub.publications.data("t")
    stats = sub.subscriptions.stats
    assert (stats["gaps"], stats["resyncs"], stats["repairs"]) == (1, 1, 1), stats


def test_the_histories_of_every_dataindex_together_are_bounded_in_bytes() -> None:
    """Past max_total, the biggest histories go whole until 7/8 of it is held; the byte
    count stays exact through trims, holes and forgets."""
    history = History(max_deltas=1000, max_bytes=10_000, max_total=12_000)
    size = len(_body(1, 900))
    for seq in range(1, 6):  # "big" holds 5 bodies
        history.record("big", seq, _body(seq, 900))
    for name in ("a", "b", "c"):
        for seq in range(1, 5):  # 4 each
            history.record(name, seq, _body(seq, 900))
    assert history.bytes <= 12_000
    assert history.since("big", 1, 5) is None  # the biggest went first
    assert history.since("c", 1, 4) is not None  # the one being recorded was kept
    held = history.bytes
    assert held == sum(len(b) for t in history._tails.values() for b in t.bodies)
    history.record("c", 9, _body(9, 900))  # a hole: "c" starts over
    assert history.bytes == held - 4 * size + size
    history.forget("c")
    assert history.bytes == held - 4 * size
    assert history.statistics()["history_bytes"] == history.bytes
