"""The pure parts of redundant cages (docs/redundancy.md): choice of cage, departures, held
deltas, requests seen twice. No sockets, no clock."""

from __future__ import annotations

import pytest

from zdse.node.cages import Departures, RoundTrips
from zdse.node.core import IncomingRequest, NodeCore, SessionChange
from zdse.node.gaps import Held
from zdse.node.requests import Outcome
from zdse.node.seen_requests import SeenRequests
from zdse.node.subscriptions import Update
from zdse.testing import FakeNet
from zdse.wire import codec
from zdse.wire.codec import Delta
from zdse.wire.limits import MAX_BUFFERED_DELTAS, MAX_DEPARTURES, REQUEST_TIMEOUT


def _timed(trips: RoundTrips, cage: int, sent: float, answered: float) -> None:
    trips.beat_sent(cage, sent)
    trips.beat_answered(cage, answered)


def test_requests_take_the_cage_with_the_smallest_smoothed_round_trip() -> None:
    """Of the eligible cages, the fastest; ties to the first listed; tried ones skipped."""
    trips = RoundTrips(3)
    assert trips.choose([0, 1, 2], 0.0) == 0  # nothing measured: the first listed
    _timed(trips, 0, 0.0, 0.010)
    _timed(trips, 1, 0.0, 0.002)
    _timed(trips, 2, 0.0, 0.005)
    assert trips.choose([0, 1, 2], 1.0) == 1
    assert trips.choose([0, 2], 1.0) == 2  # 1 is not registered
    assert trips.choose([0, 1, 2], 1.0, tried={1}) == 2  # 1 said no route
    assert trips.choose([0, 1, 2], 1.0, tried={0, 1, 2}) is None
    assert trips.choose([], 1.0) is None


def test_the_round_trip_is_smoothed_so_one_slow_beat_does_not_swap_cages() -> None:
    """One beat of 80 ms after many of 1 ms moves the estimate by an eighth of the jump."""
    trips = RoundTrips(2)
    for t in range(10):
        _timed(trips, 0, t, t + 0.001)
        _timed(trips, 1, t, t + 0.004)
    _timed(trips, 0, 10, 10.080)
    assert trips.round_trip(0, 11) == pytest.approx(0.001 + (0.080 - 0.001) / 8)
    assert trips.choose([0, 1], 11) == 1  # 10.9 ms now against 4 ms
    for t in range(11, 40):
        _timed(trips, 0, t, t + 0.001)
    assert trips.choose([0, 1], 41) == 0  # back under cage 1 once the beats are fast again


def test_a_silent_cage_loses_the_preference_within_one_round_trip() -> None:
    """A heartbeat still unanswered counts as long as it has waited: a cage killed (or cut)
    stops being chosen as soon as its silence outlasts another cage's round trip."""
    trips = RoundTrips(2)
    _timed(trips, 0, 0.0, 0.001)
    _timed(trips, 1, 0.0, 0.003)
    trips.beat_sent(0, 1.0)  # never answered
    trips.beat_sent(1, 1.0)
    trips.beat_answered(1, 1.003)
    assert trips.choose([0, 1], 1.002) == 0  # 2 ms of silence: not yet past cage 1's 3 ms
    assert trips.choose([0, 1], 1.010) == 1
    trips.beat_sent(0, 1.2)  # a later beat does not restart the wait
    assert trips.round_trip(0, 1.5) == pytest.approx(0.5)
    trips.restart(0)  # its session starts over: measured afresh
    assert trips.round_trip(0, 2.0) == 0.0


def test_a_beat_of_the_cages_own_is_not_a_round_trip() -> None:
    """A heartbeat the cage sends unasked (a probe of a quiet node) times nothing."""
    trips = RoundTrips(1)
    trips.beat_answered(0, 5.0)
    assert trips.round_trip(0, 6.0) == 0.0


def test_a_service_has_left_only_once_every_registered_cage_said_so() -> None:
    """Left from one of two cages is not a departure; from the second it is. A Joined
    in between voids what was said; a cage that goes away completes what the rest said."""
    departures = Departures()
    assert not departures.on_left("pub", 0, registered=[0, 1])
    assert departures.on_left("pub", 1, registered=[0, 1])
    assert len(departures) == 0
    assert departures.on_left("alone", 0, registered=[0])  # one cage registered: at once
    assert not departures.on_left("pub", 0, registered=[0, 1])
    departures.on_joined("pub")
    assert not departures.on_left("pub", 1, registered=[0, 1])  # cage 0's word was voided
    assert not departures.on_left("other", 1, registered=[0, 1])
    assert departures.on_cage_gone(0, registered=[1]) == ["pub", "other"]
    assert len(departures) == 0


def test_departures_are_bounded() -> None:
    """Names only some cages said left are remembered up to MAX_DEPARTURES, oldest dropped."""
    departures = Departures()
    for i in range(MAX_DEPARTURES + 5):
        departures.on_left(f"s{i}", 0, registered=[0, 1])
    assert len(departures) == MAX_DEPARTURES
    assert not departures.on_left("s0", 1, registered=[0, 1])  # forgotten: starts over


def _delta(seq: int) -> Delta:
    return Delta("t", "e1", seq, ["replace", seq])


def test_held_deltas_follow_on_in_order_once_the_gap_is_filled() -> None:
    """Deltas 5, 7, 6, 9 held past view seq 3; 4 comes: 5, 6, 7 follow in order; 9 waits."""
    held = Held(since=1.0)
    for seq in (5, 7, 6, 9, 5):
        assert held.hold(_delta(seq))
    assert len(held) == 4  # 5 once
    assert [d.seq for d in held.run_after(4)] == [5, 6, 7]
    assert len(held) == 1
    assert held.run_after(7) == []  # 8 is still missing: 9 waits
    assert [d.seq for d in held.take_all()] == [9]


def test_held_deltas_at_or_below_the_view_are_dropped() -> None:
    """What came meanwhile by the other cage is not applied twice."""
    held = Held(since=0.0)
    for seq in (3, 4, 6):
        held.hold(_delta(seq))
    assert held.run_after(4) == []
    assert [d.seq for d in held.take_all()] == [6]


def test_the_window_decides_when_a_gap_is_a_gap() -> None:
    """Held deltas are due for a snapshot once the window has passed, not before."""
    held = Held(since=10.0)
    assert not held.due(20.0, 0.05)  # nothing held
    held.hold(_delta(8))
    assert not held.due(10.04, 0.05)
    assert held.due(10.05, 0.05)
    assert [d.seq for d in held.take_all()] == [8]


def test_held_deltas_are_bounded() -> None:
    """Past MAX_BUFFERED_DELTAS a feed holds no more: the snapshot it then asks for wins."""
    held = Held(since=0.0)
    for seq in range(2, MAX_BUFFERED_DELTAS + 2):
        assert held.hold(_delta(seq))
    assert not held.hold(_delta(MAX_BUFFERED_DELTAS + 5))


def test_a_gathered_request_heard_through_two_cages_is_taken_once() -> None:
    """The second copy of (requester, cid) is dropped while its request can be waited for."""
    seen = SeenRequests()
    assert seen.first("req", 1, timeout=2.0, now=0.0)
    assert not seen.first("req", 1, timeout=2.0, now=0.001)
    assert seen.first("req", 2, timeout=2.0, now=0.002)
    assert seen.first("other", 1, timeout=2.0, now=0.003)
    assert seen.first("req", 1, timeout=2.0, now=2.5)  # past its deadline: a new one


def test_seen_requests_are_bounded_by_count_and_time() -> None:
    """At most ``limit`` pairs; each forgotten after its timeout (the default if unsaid)."""
    seen = SeenRequests(limit=3)
    for cid in range(5):
        seen.first("req", cid, timeout=1.0, now=0.0)
    assert len(seen) == 3
    assert seen.first("req", 0, timeout=1.0, now=0.1)  # pushed out by the bound
    seen.first("req", 99, timeout=0, now=0.2)
    assert seen.first("x", 1, timeout=1.0, now=REQUEST_TIMEOUT + 1)
    assert len(seen) == 1


# --- nodes with two cages, joined by FakeNet -----------------------------------


def _two(**kw: object) -> FakeNet:
    return FakeNet(heartbeat=1.0, refresh=5.0, cages=2, **kw)  # type: ignore[arg-type]


def _subscribed(first: object) -> tuple[FakeNet, NodeCore, NodeCore]:
    """Two cages, a publisher of ``first`` as "t" and a subscriber to it, its snapshot read."""
    net = _two()
    pub, sub = net.add("pub"), net.add("sub")
    pub.publish("t", first)
    sub.subscribe("pub", "t", net.clock.now)
    net.run()
    net.events(sub)
    return net, pub, sub


def _updates(net: FakeNet, core: NodeCore) -> list[Update]:
    return [e for e in net.events(core) if isinstance(e, Update)]


def test_a_node_registers_with_every_cage_and_publishes_through_each() -> None:
    """Both cages know both nodes; each delta comes through both and is applied once."""
    net = _two()
    pub, sub = net.add("pub"), net.add("sub")
    assert pub.registered_cages() == [0, 1]
    assert sub.registered_cages() == [0, 1]
    pub.publish("t", [[1]])
    sid = sub.subscribe("pub", "t", net.clock.now)
    net.run()
    assert [u.kind for u in _updates(net, sub)] == ["snapshot"]
    for i in range(2, 12):
        pub.publish("t", [[k] for k in range(1, i + 1)])
        net.run()
    updates = _updates(net, sub)
    assert [u.seq for u in updates] == list(range(2, 12))
    assert {u.kind for u in updates} == {"delta"}
    assert sub.subscriptions.view(sid) == {"pub": [[k] for k in range(1, 12)]}


def test_a_cage_killed_mid_stream_loses_no_delta_and_brings_no_resync() -> None:
    """Cage 0 dies between deltas: the next ones come through cage 1, in order, no snapshot."""
    net, pub, sub = _subscribed([[0]])
    seqs = []
    for i in range(1, 40):
        if i == 15:
            net.kill_cage(0)
        if i == 30:
            net.restart_cage(0)
        pub.publish("t", [[i]])
        net.advance(0.1)
        seqs += [u.seq for u in _updates(net, sub) if u.kind == "delta"]
    assert seqs == list(range(2, 41))
    stats = sub.subscriptions.stats
    assert (stats["gaps"], stats["resyncs"]) == (0, 0)


def test_a_delta_lost_at_one_cage_is_filled_by_the_other_within_the_window() -> None:
    """A delta dropped on cage 0's PUB arrives by cage 1: held, then applied in order."""
    lose = {3}

    def drop_at(cage: int, frames: list[bytes]) -> bool:
        return cage == 0 and frames[0].endswith(b"t\x00") and _seq_of(frames) in lose

    net = _two(drop_at=drop_at)
    pub, sub = net.add("pub"), net.add("sub")
    pub.publish("t", [[1]])
    sub.subscribe("pub", "t", net.clock.now)
    net.run()
    net.events(sub)
    for i in range(2, 6):
        pub.publish("t", [[k] for k in range(1, i + 1)])
    net.run()
    assert [u.seq for u in _updates(net, sub)] == [2, 3, 4, 5]
    assert sub.subscriptions.stats["resyncs"] == 0


def test_a_gap_no_cage_fills_is_asked_of_the_history_once_the_window_passes() -> None:
    """Seq 3 lost at both cages: deltas 4, 5 are held; once the window passes seq 3 is
    asked of the publisher, which resends it from its history: no snapshot."""
    def drop_at(cage: int, frames: list[bytes]) -> bool:
        return frames[0].endswith(b"t\x00") and _seq_of(frames) == 3

    net = _two(drop_at=drop_at)
    pub, sub = net.add("pub"), net.add("sub")
    pub.publish("t", [[1]])
    sid = sub.subscribe("pub", "t", net.clock.now)
    net.run()
    net.events(sub)
    for i in range(2, 6):
        pub.publish("t", [[k] for k in range(1, i + 1)])
        net.run()
    assert [u.seq for u in _updates(net, sub)] == [2]
    assert sub.subscriptions.stats["held"] == 1
    net.advance(1.0)
    stats = sub.subscriptions.stats
    assert (stats["resyncs"], stats["repairs"], stats["repaired"]) == (0, 1, 1), stats
    assert [u.seq for u in _updates(net, sub)] == [3, 4, 5]
    assert sub.subscriptions.view(sid) == {"pub": [[k] for k in range(1, 6)]}


def _seq_of(frames: list[bytes]) -> int:
    fields = codec.decode_fields(codec.Kind.DELTA, frames[2])
    return int(fields[0][2])


def test_a_publisher_left_at_one_cage_is_not_lost_until_every_cage_says_so() -> None:
    """Cage 0 says the publisher left (its link there is cut): the feed stays; then cage 1
    says so too: lost."""
    net, pub, sub = _subscribed([[1]])
    ident = net.member(pub).identity
    left = codec.Left("pub", "expired")
    frames = [codec.EVENT_TOPIC, codec.header(codec.Kind.LEFT), codec.encode_one(left)]
    assert [e for e in sub.receive_published(frames, net.clock.now, 0).events
            if isinstance(e, Update)] == []
    events = sub.receive_published(frames, net.clock.now, 1).events
    assert [e.kind for e in events if isinstance(e, Update)] == ["lost"]
    assert ident


def test_requests_go_through_one_cage_and_no_route_tries_the_other() -> None:
    """A request leaves through one cage only; a key known at cage 1 only is still answered
    when cage 0 (preferred) says no route; unknown at both: no route."""
    net = _two()
    svc, client = net.add("svc"), net.add("client")
    svc.publish("t", [1])
    net.run()
    client.request("svc", "t", None, gather=False)
    assert len(client.outbox) == 1
    assert list(client.routes.values()) == [[0]]  # one cage, the first of equals
    net.run()
    assert [e.replies["svc"].value for e in net.events(client) if isinstance(e, Outcome)] == [[1]]
    # svc leaves cage 0 only (as if its link there were cut): cage 0 has no route to it.
    bye = [net.member(svc).identity, codec.header(codec.Kind.BYE), b"",
           codec.encode_one(codec.Bye())]
    net.to_cage(bye, 0)
    net.run()
    client.request("svc", "t", None, gather=False)
    net.run()
    outcomes = [e for e in net.events(client) if isinstance(e, Outcome)]
    assert [o.error for o in outcomes] == [None], outcomes
    client.request("nobody", "t", None, gather=False)
    net.run()
    assert [e.error for e in net.events(client) if isinstance(e, Outcome)] == ["noroute"]


def test_request_all_through_two_cages_runs_each_service_once() -> None:
    """A gathered request through both cages: each service answers once, counted once."""
    net = _two()
    a, b, client = net.add("a", ["shared"]), net.add("b", ["shared"]), net.add("client")
    a.publish("t", "A")
    b.publish("t", "B")
    net.run()
    client.request("shared", "t", None, gather=True)
    net.run()
    outcomes = [e for e in net.events(client) if isinstance(e, Outcome)]
    assert len(outcomes) == 1
    assert {k: r.value for k, r in outcomes[0].replies.items()} == {"a": "A", "b": "B"}
    assert outcomes[0].expected == 2
    answered = [e for e in net.events(a) if isinstance(e, IncomingRequest)]
    assert len(answered) == 1
    assert a.stats["requests_seen_twice"] == 1


def test_a_name_refused_at_one_cage_steps_down_at_every_cage() -> None:
    """One cage refuses the name (name_taken): the node says bye to the other and is refused."""
    net = _two()
    node = net.add("n")
    net.events(node)
    error = codec.Error("name_taken", "n is held by a live node")
    frames = [codec.header(codec.Kind.ERROR), b"cage", b"", codec.encode_one(error)]
    effects = node.receive(frames, net.clock.now, 1)
    assert [e.what for e in effects.events if isinstance(e, SessionChange)] == ["refused"]
    assert effects.cages == [0]  # the bye, to the other cage that welcomed it
    assert not node.registered
    net.carry_out(node, effects)
    net.run()
    assert "n" not in net.cage.names


def test_a_cage_whose_connection_closed_is_chosen_last_until_it_answers() -> None:
    """A killed cage's closed connection takes it out of the choice at once; a beat answered
    by it again brings it back."""
    trips = RoundTrips(2)
    _timed(trips, 0, 0.0, 0.001)
    _timed(trips, 1, 0.0, 0.005)
    trips.disconnected(0)
    assert trips.choose([0, 1], 0.1) == 1
    assert trips.choose([0], 0.1) == 0  # the only one left: still tried
    _timed(trips, 0, 1.0, 1.001)
    assert trips.choose([0, 1], 1.1) == 0


def test_what_a_node_keeps_per_gathered_request_is_bounded() -> None:
    """Gathered requests through two cages, answered and forgotten by the thousand: what the
    node keeps to count their NoRoutes stays a bounded multiple of those still pending."""
    net = _two()
    a, client = net.add("a", ["shared"]), net.add("client")
    a.publish("t", "A")
    net.run()
    for _ in range(2_000):
        cid = client.request("shared", "t", None, gather=True)
        net.run()
        client.cancel(cid)
    assert len(client._gathers) <= 4 * (len(client.requests) + 1) + 65  # 2,000 before


def test_a_plain_request_under_an_id_seen_before_is_still_taken() -> None:
    """A restarted requester reuses ids: its plain request (one cage, never twice) is not
    dropped, and its answer goes back by the cage it came by this time."""
    seen = SeenRequests()
    seen.note("req", 1, timeout=5.0, now=0.0, cage=0)
    seen.note("req", 1, timeout=5.0, now=1.0, cage=1)
    assert seen.cage_of("req", 1) == 1
    assert len(seen) == 1
    net = _two()
    svc = net.add("svc")
    frames = [codec.header(codec.Kind.REQUEST), b"req", b"svc",
              codec.encode_one(codec.Request(1, "t", None, 5.0))]
    taken = [e for cage in (0, 1) for e in svc.receive(frames, net.clock.now, cage).events
             if isinstance(e, IncomingRequest)]
    assert len(taken) == 2
