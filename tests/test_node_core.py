"""Publish/subscribe/request logic of whole nodes, joined by an in-memory network."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zdse.errors import MessageTooLarge, ProtocolError
from zdse.node import subscriptions as subscriber
from zdse.node.core import NodeCore
from zdse.node.delta import same
from zdse.node.effects import AddFilter, RemoveFilter, Send
from zdse.node.publications import Publications
from zdse.node.requests import Outcome
from zdse.node.subscriptions import FeedState, Subscriptions, Update
from zdse.testing import FakeNet
from zdse.testing import routed as routed_kind_body
from zdse.wire import codec
from zdse.wire.codec import Delta, Snapshot, Subscribe
from zdse.wire.limits import MAX_MESSAGE_BYTES, MAX_WAITING_SUBSCRIPTIONS


def updates(net: FakeNet, core: object) -> list[Update]:
    """The subscription updates a node received since the last call."""
    return [e for e in net.events(core) if isinstance(e, Update)]  # type: ignore[arg-type]


def one_feed() -> tuple[FakeNet, NodeCore, NodeCore, str]:
    """A publisher of t = [[1]] and a subscriber to it, the snapshot delivered."""
    net = FakeNet()
    pub = net.add("pub")
    pub.publish("t", [[1]])
    sub = net.add("sub")
    sid = sub.subscribe("pub", "t", net.clock.now)
    net.run()
    return net, pub, sub, sid


def test_snapshot_then_one_delta_per_change_through_the_pub_socket() -> None:
    """Subscribers get a snapshot, then each change once, as one PUB frame for all."""
    net = FakeNet()
    pub = net.add("pub", ["tables"])
    subs = [net.add(f"sub{i}") for i in range(3)]
    pub.publish("t", [[1], [2]])
    sids = [s.subscribe("tables", "t", net.clock.now) for s in subs]
    net.run()
    for s, sid in zip(subs, sids, strict=True):
        assert s.subscriptions.view(sid) == {"pub": [[1], [2]]}
        assert [u.kind for u in updates(net, s)] == ["snapshot"]
    before = net.cage.stats["published"]
    pub.publish("t", [[1], [3]])
    net.run()
    assert net.cage.stats["published"] == before + 1
    for s, sid in zip(subs, sids, strict=True):
        (u,) = updates(net, s)
        assert (u.kind, u.seq, u.data) == ("delta", 2, ["rows", [[3]], [[2]]])
        assert same(s.subscriptions.view(sid)["pub"], [[1], [3]])


def test_nothing_is_sent_when_nothing_changed_or_nobody_listens() -> None:
    """An unchanged publish, or one without subscribers, queues no message."""
    net = FakeNet()
    pub = net.add("pub")
    pub.publish("t", [[1]])
    assert pub.outbox == []
    sub = net.add("sub")
    sub.subscribe("pub", "t", net.clock.now)
    net.run()
    pub.publish("t", [[1]])
    assert pub.outbox == []


def test_one_subscription_keeps_one_view_per_publisher() -> None:
    """Two publishers on a shared address stay apart in the subscriber's views."""
    net = FakeNet()
    boston = net.add("vSphere.Boston", ["vSphere.node.list"])
    chicago = net.add("vSphere.Chicago", ["vSphere.node.list"])
    boston.publish("vms", [["b1"]])
    chicago.publish("vms", [["c1"]])
    sub = net.add("policy")
    sid = sub.subscribe("vSphere.node.list", "vms", net.clock.now)
    net.run()
    chicago.publish("vms", [["c1"], ["c2"]])
    net.run()
    assert sub.subscriptions.view(sid) == {"vSphere.Boston": [["b1"]],
                                           "vSphere.Chicago": [["c1"], ["c2"]]}


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.lists(st.integers(0, 5), max_size=4), min_size=1,
                                       max_size=15))
def test_views_converge_whatever_deltas_are_lost(seed: int, versions: list[list[int]]) -> None:
    """With PUB frames dropped at random, every view ends equal to the publisher's data."""
    rng = random.Random(seed)
    net = FakeNet(drop=lambda frames: rng.random() < 0.3)
    pub = net.add("pub")
    sub = net.add("sub")
    pub.publish("t", [])
    sid = sub.subscribe("pub", "t", net.clock.now)
    net.run()
    for version in versions:
        pub.publish("t", [[v] for v in version])
        net.run()
    net.advance(net.refresh * 2)
    assert same(sub.subscriptions.view(sid)["pub"], [[v] for v in versions[-1]])


def test_a_restarted_publisher_is_resynced_by_its_new_epoch() -> None:
    """A publisher that comes back under the same name gets a fresh snapshot."""
    net, pub, sub, sid = one_feed()
    net.kill(pub)
    net.advance(4)  # the cage expires the silent publisher
    assert [u.kind for u in updates(net, sub)] == ["snapshot", "lost"]
    again = net.add("pub")
    again.publish("t", [[2]])
    net.run()
    assert sub.subscriptions.view(sid) == {"pub": [[2]]}
    # It announced itself before it published: a snapshot of nothing yet.
    assert [u.kind for u in updates(net, sub)] == ["unpublished", "delta"]


def test_a_restarted_cage_is_refilled_and_views_converge() -> None:
    """After a cage restart, nodes register again and subscriptions resume."""
    net = FakeNet()
    pub = net.add("pub", ["all.pubs"])
    pub.publish("t", [[1]])
    sub = net.add("sub")
    sid = sub.subscribe("all.pubs", "t", net.clock.now)
    net.run()
    net.restart_cage()
    pub.publish("t", [[1], [2]])  # lost: the new cage does not know pub yet
    net.advance(3)
    assert {"pub", "sub"} <= set(net.cage.names)
    assert sub.subscriptions.view(sid) == {"pub": [[1], [2]]}


def test_requests_no_route_and_gather() -> None:
    """A request to nobody ends with noroute; a gather collects every answer."""
    net = FakeNet()
    a = net.add("a", ["shared"])
    b = net.add("b", ["shared"])
    a.publish("t", 1)
    b.publish("t", 2)
    client = net.add("client")
    cid = client.request("nobody", "t", None, gather=False)
    net.run()
    (outcome,) = [e for e in net.events(client) if isinstance(e, Outcome)]
    assert (outcome.cid, outcome.error) == (cid, "noroute")
    client.request("shared", "t", None, gather=True)
    net.run()
    (outcome,) = [e for e in net.events(client) if isinstance(e, Outcome)]
    assert {k: r.value for k, r in outcome.replies.items()} == {"a": 1, "b": 2}


def test_first_snapshot_sets_the_filter_and_syncs_with_the_publisher() -> None:
    """The slow-joiner guard: filter first, then ask the publisher if it moved on."""
    subs = Subscriptions(refresh=5)
    sid, _ = subs.subscribe("k", "t", 0)
    ups, actions = subs.on_snapshot("pub", Snapshot(sid, "t", "e", 4, [[1]]), 0)
    assert [u.kind for u in ups] == ["snapshot"]
    assert actions[0] == AddFilter(codec.topic("pub", "t"))
    assert actions[1] == Send("pub", Subscribe(sid, "t", {"pub": ["e", 4]}, subs.ttl))


def test_a_gap_buffers_deltas_until_the_snapshot_then_drops_the_old_ones() -> None:
    """Deltas after a gap wait while the missing ones are asked for (seen marked GAP);
    a snapshot in answer (the history no longer held them) takes them, the old dropped."""
    subs = Subscriptions(refresh=5)
    sid, _ = subs.subscribe("k", "t", 0)
    subs.on_snapshot("pub", Snapshot(sid, "t", "e", 1, [[1]]), 0)
    ups, actions = subs.on_delta("pub", Delta("t", "e", 3, ["rows", [[3]], []]), 0)
    assert ups == []
    assert actions == [Send("pub", Subscribe(sid, "t", {"pub": ["e", 1, codec.GAP]}, subs.ttl))]
    assert subs.subdata()[sid]["publishers"]["pub"]["state"] == FeedState.REPAIR.value
    subs.on_delta("pub", Delta("t", "e", 4, ["rows", [[4]], []]), 0)
    ups, _ = subs.on_snapshot("pub", Snapshot(sid, "t", "e", 3, [[1], [2], [3]]), 0)
    assert [(u.kind, u.seq) for u in ups] == [("snapshot", 3), ("delta", 4)]
    assert same(subs.view(sid)["pub"], [[1], [2], [3], [4]])
    assert subs.subdata()[sid]["publishers"]["pub"]["state"] == FeedState.LIVE.value
    assert (subs.stats["gaps"], subs.stats["resyncs"], subs.stats["repairs"]) == (1, 1, 1)


def test_a_gap_filled_by_resent_deltas_applies_them_and_the_buffered_in_order() -> None:
    """The deltas a repair asked for come (a Replay, or late by the PUB): applied, then the
    buffered ones after them, in order; no snapshot asked, the feed live again."""
    subs = Subscriptions(refresh=5)
    sid, _ = subs.subscribe("k", "t", 0)
    subs.on_snapshot("pub", Snapshot(sid, "t", "e", 1, [[1]]), 0)
    subs.on_delta("pub", Delta("t", "e", 4, ["rows", [[4]], []]), 0)
    subs.on_delta("pub", Delta("t", "e", 3, ["rows", [[3]], []]), 0)
    ups, actions = subs.on_replay("pub", codec.Replay("t", "e", 2, ["rows", [[2]], []]), 0)
    assert actions == []
    assert [(u.kind, u.seq) for u in ups] == [("delta", 2), ("delta", 3), ("delta", 4)]
    assert same(subs.view(sid)["pub"], [[1], [2], [3], [4]])
    assert subs.subdata()[sid]["publishers"]["pub"]["state"] == FeedState.LIVE.value
    assert (subs.stats["gaps"], subs.stats["resyncs"], subs.stats["repaired"]) == (0, 0, 1)


def test_a_second_subscription_s_newer_snapshot_leaves_the_shared_view_to_its_deltas() -> None:
    """A subscription joining a live feed gets a snapshot newer than the shared view: it
    is given the view, the subscriptions that hold it get no snapshot (no jump), and the
    deltas between, on their way by the PUB, bring both on; lost ones are asked for."""
    subs = Subscriptions(refresh=50)
    first, _ = subs.subscribe("k", "t", 0)
    subs.on_snapshot("pub", Snapshot(first, "t", "e", 1, [[1]]), 0)
    second, _ = subs.subscribe("k", "t", 0)
    ups, actions = subs.on_snapshot("pub", Snapshot(second, "t", "e", 3, [[1], [2], [3]]), 0)
    assert actions == []
    assert [(u.sid, u.kind, u.seq) for u in ups] == [(second, "snapshot", 1)]
    ups, _ = subs.on_delta("pub", Delta("t", "e", 2, ["rows", [[2]], []]), 0.1)
    assert sorted((u.sid, u.seq) for u in ups) == sorted([(first, 2), (second, 2)])
    # Delta 3 never comes: CURRENT_GRACE later the feed asks for it.
    assert subs.tick(0.1 + subscriber.CURRENT_GRACE) == [
        Send("pub", Subscribe(min(first, second), "t", {"pub": ["e", 2, codec.GAP]}, subs.ttl))]
    assert subs.stats["resyncs"] == 0


def test_an_older_snapshot_does_not_take_a_repairing_feed_back() -> None:
    """A feed asking for the deltas after its view (REPAIR) keeps its view when an older
    snapshot comes (another subscription's answer): the new subscription gets the view,
    and the resent deltas still apply on top of it."""
    subs = Subscriptions(refresh=5)
    sid, _ = subs.subscribe("k", "t", 0)
    subs.on_snapshot("pub", Snapshot(sid, "t", "e", 1, [[1]]), 0)
    subs.on_delta("pub", Delta("t", "e", 2, ["rows", [[2]], []]), 0)
    subs.on_delta("pub", Delta("t", "e", 4, ["rows", [[4]], []]), 0)
    other, _ = subs.subscribe("k", "t", 0)
    ups, _ = subs.on_snapshot("pub", Snapshot(other, "t", "e", 1, [[1]]), 0)
    assert [(u.sid, u.kind, u.seq) for u in ups] == [(other, "snapshot", 2)]
    assert subs.subdata()[sid]["publishers"]["pub"]["state"] == FeedState.REPAIR.value
    ups, _ = subs.on_replay("pub", codec.Replay("t", "e", 3, ["rows", [[3]], []]), 0)
    assert [u.seq for u in ups if u.sid == sid] == [3, 4]
    assert same(subs.view(sid)["pub"], [[1], [2], [3], [4]])
    assert subs.stats["resyncs"] == 0


def test_deltas_buffered_past_the_limit_are_dropped_and_the_view_still_converges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A feed waiting for its snapshot holds at most MAX_BUFFERED_DELTAS; past that it
    drops them (the snapshot supersedes them) and converges from the snapshot."""
    monkeypatch.setattr(subscriber, "MAX_BUFFERED_DELTAS", 5)
    subs = Subscriptions(refresh=5)
    sid, _ = subs.subscribe("k", "t", 0)
    subs.on_snapshot("pub", Snapshot(sid, "t", "e", 1, 0), 0)

    def buffered() -> int:
        return int(subs.subdata()[sid]["publishers"]["pub"]["buffered"])

    most = 0
    for seq in range(3, 10):  # seq 2 lost: a gap, then 7 deltas while waiting
        subs.on_delta("pub", Delta("t", "e", seq, ["replace", seq - 1]), 0)
        most = max(most, buffered())
    assert most == 5
    assert buffered() == 1  # the 6th emptied the buffer; the 7th (seq 9) is kept
    ups, _ = subs.on_snapshot("pub", Snapshot(sid, "t", "e", 8, 7), 0)
    assert [(u.kind, u.seq) for u in ups] == [("snapshot", 8), ("delta", 9)]
    assert subs.view(sid) == {"pub": 8}
    assert subs.subdata()[sid]["publishers"]["pub"]["state"] == FeedState.LIVE.value
    assert buffered() == 0


def test_a_stale_snapshot_does_not_roll_the_view_back() -> None:
    """A snapshot older than the view (it crossed newer deltas) is ignored."""
    subs = Subscriptions(refresh=5)
    sid, _ = subs.subscribe("k", "t", 0)
    subs.on_snapshot("pub", Snapshot(sid, "t", "e", 1, [[1]]), 0)
    subs.on_delta("pub", Delta("t", "e", 2, ["rows", [[2]], []]), 0)
    ups, _ = subs.on_snapshot("pub", Snapshot(sid, "t", "e", 1, [[1]]), 0)
    assert ups == []
    assert same(subs.view(sid)["pub"], [[1], [2]])


def test_unsubscribe_tells_publishers_and_drops_the_filter() -> None:
    """Ending the last subscription on a feed removes its SUB filter."""
    subs = Subscriptions(refresh=5)
    sid, _ = subs.subscribe("k", "t", 0)
    subs.on_snapshot("pub", Snapshot(sid, "t", "e", 1, [[1]]), 0)
    actions = subs.unsubscribe(sid)
    assert Send("k", codec.Unsubscribe(sid, "t")) in actions
    assert RemoveFilter(codec.topic("pub", "t")) in actions


def test_publisher_skips_snapshots_for_up_to_date_subscribers_and_forgets_silent_ones() -> None:
    """A re-announce showing the current seq gets only a Current; an expired one is forgotten."""
    pubs = Publications("pub", "e")
    pubs.publish("t", [[1]])
    assert pubs.on_subscribe("sub", Subscribe("s1", "t", {}, 10), 0) != []
    assert pubs.on_subscribe("sub", Subscribe("s1", "t", {"pub": ["e", 1]}, 10), 5) == [
        Send("sub", codec.Current("s1", "t", "e", 1))]
    assert pubs.pubdata()["t"]["subscribers"] == ["sub"]
    assert pubs.expire(14) == 0
    assert pubs.expire(16) == 1
    assert pubs.publish("t", [[2]]) is None  # nobody listens any more


def test_a_reannounce_that_crossed_deltas_in_flight_gets_a_current_not_a_snapshot() -> None:
    """Behind only by deltas sent since its filter was known on: a Current says how far."""
    pubs = Publications("pub", "e")
    pubs.publish("t", [[1]])

    def announce(seen: dict[str, list[object]]) -> list[Send]:
        answers = pubs.on_subscribe("sub", Subscribe("s1", "t", seen, 10), 0)
        sends = [a for a in answers if isinstance(a, Send)]
        assert sends == answers  # no history: nothing is resent
        return sends

    assert isinstance(announce({})[0].message, Snapshot)
    # The sync after the first snapshot crossed delta 2: a Current. Whether
    # the filter caught it is for the subscriber to see (a gap, or a Current
    # it does not catch up with).
    pubs.publish("t", [[2]])
    assert announce({"pub": ["e", 1]}) == [Send("sub", codec.Current("s1", "t", "e", 2))]
    assert pubs.publish("t", [[3]]) is not None
    assert announce({"pub": ["e", 2]}) == [Send("sub", codec.Current("s1", "t", "e", 3))]
    # Still behind at the next one: the deltas were lost, not late.
    assert isinstance(announce({"pub": ["e", 2]})[0].message, Snapshot)
    # Registered anew: what was sent may have died with the old cage.
    pubs.publish("t", [[4]])
    pubs.registered_again()
    assert isinstance(announce({"pub": ["e", 3]})[0].message, Snapshot)
    # Garbage in seen is no view of ours: a snapshot, nothing raised.
    for seen in (["e"], ["e", "3"], ["e", True], "e4", ["other", 4]):
        assert isinstance(announce({"pub": seen})[0].message, Snapshot)  # type: ignore[dict-item]


def crossed_sync(drop: Callable[[list[bytes]], bool] | None = None, history: int | None = None
                 ) -> tuple[FakeNet, NodeCore, list[codec.Kind], str]:
    """A subscriber whose sync, after its first snapshot (seq 1), reaches the publisher
    only after it published [[1], [2]] (seq 2); ``drop`` may lose PUB frames; ``history``,
    if given, is how many deltas the publisher keeps.

    Returns the network, the subscriber, the kinds the cage routed and the subscription.
    """
    routed: list[codec.Kind] = []

    def record(frames: list[bytes]) -> bool:
        routed.append(routed_kind_body(frames)[0])
        return False

    net = FakeNet(drop=drop, drop_routed=record)
    pub = net.add("pub")
    if history is not None:
        pub.history.max_deltas = history
    pub.publish("t", [[1]])
    sub = net.add("sub")
    net.pause(pub)
    sid = sub.subscribe("pub", "t", net.clock.now)
    net.run()
    net.resume(pub)  # it reads the subscribe: the snapshot is on its way...
    net.pause(pub)  # ...and it is busy when the sync comes
    net.run()
    pub.publish("t", [[1], [2]])
    net.resume(pub)  # the sync is read after the publish
    net.run()
    return net, sub, routed, sid


def test_a_sync_that_crossed_a_publish_gets_the_delta_not_a_second_snapshot() -> None:
    """The sync after a first snapshot, overtaken by a publish, is answered by a Current,
    not a snapshot: the change comes as the delta, whichever of the two arrives first."""
    net, sub, routed, sid = crossed_sync()
    assert [(u.kind, u.seq) for u in updates(net, sub)] == [("snapshot", 1), ("delta", 2)]
    net.advance(subscriber.CURRENT_GRACE * 2)
    assert updates(net, sub) == []
    assert same(sub.subscriptions.view(sid)["pub"], [[1], [2]])
    assert sub.subscriptions.stats["resyncs"] == 0
    assert routed.count(codec.Kind.SNAPSHOT) == 1


def _drop_first_delta(lost: list[bytes]) -> Callable[[list[bytes]], bool]:
    def drop(frames: list[bytes]) -> bool:
        if lost or frames[0] != codec.topic("pub", "t"):
            return False
        lost.append(frames[0])
        return True
    return drop


def test_a_delta_lost_before_the_filter_was_on_is_resent_from_the_history() -> None:
    """The start race: a delta published between a late subscriber's first snapshot and
    its filter taking effect is lost at the PUB; the sync after the snapshot gets it
    resent from the publisher's history (a Replay), not a Current and a second snapshot."""
    lost: list[bytes] = []
    net, sub, routed, sid = crossed_sync(_drop_first_delta(lost))
    assert lost
    assert [(u.kind, u.seq) for u in updates(net, sub)] == [("snapshot", 1), ("delta", 2)]
    net.advance(subscriber.CURRENT_GRACE * 2)
    assert updates(net, sub) == []
    assert same(sub.subscriptions.view(sid)["pub"], [[1], [2]])
    assert routed.count(codec.Kind.SNAPSHOT) == 1
    assert routed.count(codec.Kind.REPLAY) == 1
    stats = sub.subscriptions.stats
    assert (stats["gaps"], stats["resyncs"], stats["owed"]) == (0, 0, 0), stats


def test_a_delta_lost_before_the_filter_was_on_is_made_up_by_a_snapshot_without_history(
) -> None:
    """The same with a publisher whose history holds nothing: its sync gets a Current
    naming a delta the subscriber never got; CURRENT_GRACE later the feed asks for the
    missing deltas, gets a snapshot, and its view converges."""
    lost: list[bytes] = []
    net, sub, _, sid = crossed_sync(_drop_first_delta(lost), history=0)
    assert lost
    assert [(u.kind, u.seq) for u in updates(net, sub)] == [("snapshot", 1)]
    net.advance(subscriber.CURRENT_GRACE * 2)
    assert [(u.kind, u.seq) for u in updates(net, sub)] == [("snapshot", 2)]
    assert same(sub.subscriptions.view(sid)["pub"], [[1], [2]])
    assert sub.subscriptions.stats["owed"] == 1


def test_a_current_ahead_of_the_view_waits_for_its_deltas_then_resyncs() -> None:
    """Owed deltas that arrive within CURRENT_GRACE are applied; past it, a snapshot is asked."""
    subs = Subscriptions(refresh=50)  # no re-announce falls due here
    sid, _ = subs.subscribe("k", "t", 0)
    subs.on_snapshot("pub", Snapshot(sid, "t", "e", 1, [[1]]), 0)
    # The Current overtook delta 2: the view stays as it is, no snapshot asked.
    subs.on_current("pub", codec.Current(sid, "t", "e", 2), 1)
    assert subs.tick(1 + subscriber.CURRENT_GRACE / 2) == []
    ups, _ = subs.on_delta("pub", Delta("t", "e", 2, ["rows", [[2]], []]), 1.1)
    assert [u.kind for u in ups] == ["delta"]
    assert subs.tick(1 + subscriber.CURRENT_GRACE * 2) == []
    # Delta 3 never comes: after the grace the feed asks for it (or a snapshot).
    subs.on_current("pub", codec.Current(sid, "t", "e", 3), 3)
    assert subs.tick(3 + subscriber.CURRENT_GRACE / 2) == []
    assert subs.tick(3 + subscriber.CURRENT_GRACE) == [
        Send("pub", Subscribe(sid, "t", {"pub": ["e", 2, codec.GAP]}, subs.ttl))]
    assert subs.stats["owed"] == 1
    assert subs.subdata()[sid]["publishers"]["pub"]["state"] == FeedState.REPAIR.value
    ups, _ = subs.on_snapshot("pub", Snapshot(sid, "t", "e", 3, [[1], [2], [3]]), 4)
    assert [(u.kind, u.seq) for u in ups] == [("snapshot", 3)]
    assert subs.tick(4 + subscriber.CURRENT_GRACE * 2) == []


def test_a_publisher_that_dies_while_no_cage_runs_is_lost_after_the_ttl() -> None:
    """No Left event can come from a restarted cage: silence past the ttl ends the feed."""
    net = FakeNet()
    pub = net.add("pub", ["pubs"])
    other = net.add("other", ["pubs"])
    pub.publish("t", [[1]])
    other.publish("t", [[2]])
    sub = net.add("sub")
    sid = sub.subscribe("pubs", "t", net.clock.now)
    net.run()
    net.restart_cage()
    net.kill(pub)  # dies while the cage is away: nobody will announce it left
    net.advance(net.refresh)
    assert set(sub.subscriptions.view(sid)) == {"pub", "other"}  # not yet: within the ttl
    net.advance(net.refresh * 3)
    assert sub.subscriptions.view(sid) == {"other": [[2]]}
    lost = [u for u in updates(net, sub) if u.kind == "lost"]
    assert [u.publisher for u in lost] == ["pub"]


def test_live_publishers_keep_their_feeds_through_long_quiet_spells() -> None:
    """A publisher with nothing new still confirms each re-announce: no false 'lost'."""
    net, _pub, sub, sid = one_feed()
    net.advance(net.refresh * 10)
    assert sub.subscriptions.view(sid) == {"pub": [[1]]}
    assert [u.kind for u in updates(net, sub)] == ["snapshot"]


def _snapshot_bytes(core: NodeCore, data: object) -> int:
    """The worst-case size of a snapshot of ``data`` from ``core``."""
    return len(codec.encode_one(Snapshot("0" * 32, "t", core.publications.epoch, 2**63 - 1,
                                         data)))


def test_publish_refuses_data_whose_snapshot_could_not_be_sent() -> None:
    """Data no snapshot could carry is refused whole, whether its delta is a replace
    (sized from the delta) or a few rows (sized from the data); nothing is stored."""
    net = FakeNet()
    core = net.add("pub")
    # What a snapshot adds around big data (bin32: the same header at any size past 64 KiB).
    room = MAX_MESSAGE_BYTES - (_snapshot_bytes(core, b"x" * 100_000) - 100_000)
    with pytest.raises(MessageTooLarge):
        core.publish("t", b"x" * (room + 1))
    assert "t" not in core.publications.dataindexes()
    core.publish("t", b"x" * room)  # the largest that fits
    assert core.publications.data("t") == b"x" * room

    room = MAX_MESSAGE_BYTES - (_snapshot_bytes(core, [[b"y" * 100_000]]) - 100_000)
    big = [b"y" * (room - 40)]
    core.publish("rows", [big])
    with pytest.raises(MessageTooLarge):
        core.publish("rows", [big, [b"z" * 50]])  # a one-row delta, a too-big table
    assert core.publications.data("rows") == [big]


def test_a_welcomed_node_announces_nothing_until_its_own_probe_comes_back() -> None:
    """Welcomed but its SUB unproven: no Subscribe leaves, no Registered; its probe fixes both."""
    from zdse.node.core import Registered
    from zdse.node.session import PROBE_DATAINDEX, SessionState

    core = NodeCore(codec.Register("sub", [], {}), "ep", 10.0, 0.0)
    assert codec.topic("sub", PROBE_DATAINDEX) in core.start(0.0).subscribe
    core.subscribe("pub", "t", 0.0)
    welcome = codec.encode_one(codec.Welcome("cage1", 1.0))
    step = core.receive([codec.header(codec.Kind.WELCOME), b"cage", b"", welcome], 0.1)
    assert step.events == []
    assert core.session.state is SessionState.JOINING
    (probe,) = step.frames
    assert probe[:2] == (codec.header(codec.Kind.DELTA), PROBE_DATAINDEX.encode())
    step = core.tick(0.16)
    assert step.events == []
    assert [k for k, _, _ in step.frames] == [codec.header(codec.Kind.DELTA)]  # probed again
    step = core.receive_published([codec.topic("sub", PROBE_DATAINDEX), *probe[::2]], 0.2)
    assert step.events == [Registered(False, "cage1")]
    assert core.registered
    kinds = [codec.parse_header(h)[0] for h, _, _ in step.frames]
    assert kinds == [codec.Kind.SUBSCRIBE]
    with pytest.raises(ProtocolError, match="reserved"):
        core.publish(PROBE_DATAINDEX, [[1]])
def test_subscriptions_to_unpublished_dataindexes_are_bounded_and_expire() -> None:
    """50,000 announces to made-up dataindexes: answered, at most MAX_WAITING_SUBSCRIPTIONS
    held, and none left once they stop re-announcing."""
    pubs = Publications("pub", "e")
    pubs.publish("real", [[1]])
    answered = sum(len(pubs.on_subscribe("sub", Subscribe(f"s{i}", f"made.up.{i}", {}, 10), 0))
                   for i in range(50_000))
    assert answered == 50_000
    assert len(pubs.pubdata()) <= MAX_WAITING_SUBSCRIPTIONS + 1
    assert pubs.waiting_refused == 50_000 - MAX_WAITING_SUBSCRIPTIONS
    assert pubs.expire(11) == MAX_WAITING_SUBSCRIPTIONS
    assert list(pubs.pubdata()) == ["real"]
    assert pubs.waiting == 0


def test_a_subscription_alone_does_not_publish_a_dataindex() -> None:
    """A dataindex only subscribed to is not published (a request for it stays an error);
    its subscriber still gets the first delta once it is."""
    pubs = Publications("pub", "e")
    [answer] = pubs.on_subscribe("sub", Subscribe("s1", "later", {}, 10), 0)
    assert isinstance(answer, Send)
    assert answer.message == Snapshot("s1", "later", "e", 0, None)
    assert pubs.dataindexes() == []
    pubs.on_unsubscribe("sub", codec.Unsubscribe("s1", "later"))
    assert pubs.pubdata() == {}
    pubs.on_subscribe("sub", Subscribe("s2", "later", {}, 10), 0)
    d = pubs.publish("later", [[1]])
    assert d is not None
    assert d.seq == 1
    assert pubs.dataindexes() == ["later"]
    assert (pubs.waiting, pubs.expire(11)) == (0, 1)
    assert "later" in pubs.pubdata()  # published data stays when its subscribers go


@pytest.mark.parametrize("first", ["publish", "replace", "change_keys", "change_rows"])
def test_a_first_change_of_any_kind_ends_its_subscribers_wait(first: str) -> None:
    """Subscribers waiting for an unpublished dataindex wait no more once it is stored,
    whichever call stores it first (their count bounds what an announce may hold)."""
    pubs = Publications("pub", "e")
    for i in range(3):
        pubs.on_subscribe("sub", Subscribe(f"s{i}", "later", {}, 10), 0)
    assert pubs.waiting == 3
    store = {"publish": lambda: pubs.publish("later", {"a": 1}),
             "replace": lambda: pubs.replace("later", {"a": 1}),
             "change_keys": lambda: pubs.change_keys("later", {"a": 1}),
             "change_rows": lambda: pubs.change_rows("later", [[1]])}[first]
    d = store()
    assert d is not None
    assert d.seq == 1
    assert pubs.waiting == 0


def test_a_feed_given_an_input_its_state_cannot_take_names_the_feed_and_the_state() -> None:
    """A hole in the feeds' table is a ProtocolError naming the feed and its state."""
    subs = Subscriptions(refresh=50)
    sid, _ = subs.subscribe("k", "t", 0)
    subs.on_snapshot("pub", Snapshot(sid, "t", "e", 1, [[1]]), 0)
    subs.on_delta("pub", Delta("t", "e", 3, ["rows", [[3]], []]), 1)  # a gap: REPAIR
    missing = subscriber.TRANSITIONS.pop((FeedState.REPAIR, subscriber.FeedInput.NEXT))
    try:
        with pytest.raises(ProtocolError, match="can't handle next when feed pub/t is repair"):
            subs.on_delta("pub", Delta("t", "e", 2, ["rows", [[2]], []]), 2)
    finally:
        subscriber.TRANSITIONS[(FeedState.REPAIR, subscriber.FeedInput.NEXT)] = missing


def test_kinds_and_outcomes_are_strenums_equal_to_their_strings_on_the_wire_and_in_json() -> None:
    """Update.kind, Outcome.error and SessionChange.what compare, pack and dump as strings."""
    import json

    from zdse.node.events import Change, SessionChange
    from zdse.node.requests import Failure, PendingRequests
    from zdse.node.subscriptions import UpdateKind

    subs = Subscriptions(refresh=50)
    sid, _ = subs.subscribe("k", "t", 0)
    (u,), _ = subs.on_snapshot("pub", Snapshot(sid, "t", "e", 1, [[1]]), 0)
    assert u.kind == "snapshot"
    assert u.kind is UpdateKind.SNAPSHOT
    requests = PendingRequests()
    outcome = requests.on_noroute(requests.new("k"))
    assert outcome is not None
    assert outcome.error == "noroute"
    change = SessionChange(Change.ERROR, "over_budget: ...")
    assert change.what == "error"
    values = [u.kind, outcome.error, change.what]
    assert json.dumps(values) == '["snapshot", "noroute", "error"]'
    assert codec.decode_fields(codec.Kind.MESSAGE, codec.encode_one(
        codec.Message("t", values))) == [["t", ["snapshot", "noroute", "error"]]]
    assert f"cage.{Change.LOST}" == "cage.lost"
    assert {Failure.TIMEOUT: 1}["timeout"] == 1


def test_the_core_returns_what_to_do_and_keeps_none_of_it() -> None:
    """Each input's Effects holds what it called for; the next input's holds only its own."""
    core = NodeCore(codec.Register("n", [], {}), "ep", 10.0, 0.0)
    first = core.start(0.0)
    assert [codec.parse_header(h)[0] for h, _, _ in first.frames] == [codec.Kind.REGISTER]
    assert core.tick(0.1).frames == []  # the register is not sent twice
    assert first.frames  # and the step handed over is the shell's, left as it was
    welcome = codec.encode_one(codec.Welcome("cage1", 1.0))
    step = core.receive([codec.header(codec.Kind.WELCOME), b"cage", b"", welcome], 0.2)
    assert [k for k, _, _ in step.frames] == [codec.header(codec.Kind.DELTA)]  # the probe
    assert core.receive([b"garbage"], 0.3).events[0].count == 1  # type: ignore[union-attr]
