"""The cage's tables and run-time addresses, decided by the pure cores on a FakeNet."""

from __future__ import annotations

from zdse.node.core import Membership
from zdse.node.subscriptions import Update
from zdse.testing import FakeNet
from zdse.wire import codec
from zdse.wire.limits import MAX_CAGE_SUBSCRIPTIONS, MAX_SID_BYTES, REFRESHES_TO_EXPIRE


def _updates(net: FakeNet, core: object) -> list[Update]:
    return [e for e in net.events(core) if isinstance(e, Update)]  # type: ignore[arg-type]


def test_services_rows_follow_joins_readdresses_and_leaves() -> None:
    """A snapshot of the services, then one delta per join, address change and leave."""
    net = FakeNet()
    watcher = net.add("watcher")
    sid = watcher.subscribe("cage", "services", net.clock.now)
    net.run()
    (first,) = _updates(net, watcher)
    assert (first.publisher, first.kind) == ("cage", "snapshot")
    assert [r["name"] for r in first.view] == ["watcher"]
    other = net.add("other", ["a.b"])
    (joined,) = _updates(net, watcher)
    assert joined.kind == "delta"
    assert joined.seq == first.seq + 1
    assert {r["name"]: r["addresses"] for r in joined.view} == {"other": ["a.b"],
                                                                "watcher": []}
    other.set_addresses(["a.c"])
    net.run()
    (moved,) = _updates(net, watcher)
    assert {r["name"]: r["addresses"] for r in moved.view}["other"] == ["a.c"]
    net.kill(other)
    net.advance(4)
    assert [r["name"] for r in watcher.subscriptions.view(sid)["cage"]] == ["watcher"]


def test_a_readdress_changes_routes_in_place_and_announces_a_join() -> None:
    """The routes of a node that registers again with other addresses change at once, and
    other nodes learn it as a Joined (their Membership event), not as a leave."""
    net = FakeNet()
    node = net.add("node", ["old.#"])
    watcher = net.add("watcher")
    net.events(watcher)
    node.set_addresses(["new.*"])
    net.run()
    assert set(net.cage.routes.lookup("new.x")) == {net.member(node).identity}
    assert not net.cage.routes.lookup("old.x")
    assert node.registered
    events = [e for e in net.events(watcher) if isinstance(e, Membership)]
    assert events == [Membership("joined", "node", ["new.*"], "")]
    assert net.cage.stats["readdressed"] == 1


def test_a_table_subscriber_is_forgotten_when_it_leaves_and_bounded_while_it_stays() -> None:
    """The cage forgets the table subscriptions of a node that leaves, and refuses a node's
    subscriptions past MAX_CAGE_SUBSCRIPTIONS with an error."""
    net = FakeNet()
    greedy = net.add("greedy")
    for _ in range(MAX_CAGE_SUBSCRIPTIONS + 3):
        greedy.subscribe("cage", "routes", net.clock.now)
    net.run()
    assert len(net.cage.tables.publications.readers_of("greedy")) == MAX_CAGE_SUBSCRIPTIONS
    assert greedy.stats["error_too_many_subscriptions"] == 3
    net.kill(greedy)
    net.advance(4)
    assert net.cage.tables.publications.readers_of("greedy") == set()


def test_each_subscription_announces_its_own_ttl_even_on_a_shared_feed() -> None:
    """Two subscriptions to one feed with different refresh intervals each tell the publisher
    their own ttl, in the first announce and in the sync after the snapshot."""
    net = FakeNet()
    pub = net.add("pub")
    pub.publish("t", [[1]])
    sub = net.add("sub")
    slow = sub.subscribe("pub", "t", net.clock.now, refresh=60)
    fast = sub.subscribe("pub", "t", net.clock.now)
    ttls: dict[str, float] = {}
    original = pub.publications.on_subscribe

    def spy(sender: str, msg: codec.Subscribe, now: float):  # type: ignore[no-untyped-def]
        ttls.setdefault(msg.sid, msg.ttl)
        assert ttls[msg.sid] == msg.ttl, "a subscription's ttl changed"
        return original(sender, msg, now)

    pub.publications.on_subscribe = spy  # type: ignore[method-assign]
    net.run()
    net.advance(net.refresh * 2)
    assert ttls == {slow: 60 * REFRESHES_TO_EXPIRE, fast: net.refresh * REFRESHES_TO_EXPIRE}


def test_a_long_subscription_id_to_the_cage_is_refused() -> None:
    """The cage keeps no subscription whose id is over MAX_SID_BYTES: it answers an error."""
    net = FakeNet()
    node = net.add("node")
    member = net.member(node)
    body = codec.encode_one(codec.Subscribe("x" * (MAX_SID_BYTES + 1), "services", {}, 30.0))
    net.to_cage([member.identity, codec.header(codec.Kind.SUBSCRIBE), b"cage", body])
    net.run()
    assert net.cage.tables.publications.readers_of("node") == set()
    assert node.stats["error_bad_subscription"] == 1


def test_changes_while_nobody_subscribes_are_in_the_next_snapshot() -> None:
    """Nothing is computed without subscribers, yet a later subscriber's snapshot holds
    every registration made meanwhile."""
    net = FakeNet()
    watcher = net.add("watcher")
    sid = watcher.subscribe("cage", "services", net.clock.now)
    net.run()
    watcher.unsubscribe(sid)
    net.run()
    assert not net.cage.tables.subscribed()
    net.add("late")
    net.advance(1)
    sid = watcher.subscribe("cage", "services", net.clock.now)
    net.run()
    assert [r["name"] for r in watcher.subscriptions.view(sid)["cage"]] == ["late", "watcher"]
